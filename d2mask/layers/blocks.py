"""`CNNBlockBase`: the base of convolutional blocks (ResNet's stem and residual blocks, projects' own)."""
from torch import nn

from .batch_norm import FrozenBatchNorm2d

__all__ = ["CNNBlockBase"]


class CNNBlockBase(nn.Module):
    """A convolutional block that knows its channels and stride and can be frozen.

    A subclass's `__init__` takes `in_channels`, `out_channels` and `stride` too, and its `forward`
    maps `Tensor[N, in_channels, H, W]` to `Tensor[N, out_channels, H / stride, W / stride]`.

    Attributes:
        in_channels, out_channels: channels of the block's input and output.
        stride: the factor by which the block downsamples its input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> "CNNBlockBase":
        """Stops training this block: no parameter gets a gradient and batch norms become frozen.

        Returns:
            the block itself.
        """
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self
