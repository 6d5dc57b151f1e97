"""`CNNBlockBase`: the base of convolutional blocks (ResNet's stem and residual blocks, projects'
own), and `DepthwiseSeparableConv2d`."""
from typing import Callable, Optional, Union

from fvcore.nn import weight_init
from torch import Tensor, nn

from .batch_norm import FrozenBatchNorm2d, get_norm
from .wrappers import Conv2d

__all__ = ["CNNBlockBase", "DepthwiseSeparableConv2d"]

_Norm = Union[str, Callable[[int], nn.Module], None]
_Activation = Optional[Callable[[Tensor], Tensor]]


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


class DepthwiseSeparableConv2d(nn.Module):
    """A k x k depthwise convolution (`depthwise`, one filter per channel) followed by a 1x1
    convolution (`pointwise`), each with its own optional norm and activation: Xception (Chollet,
    2017) normalises only after the second, MobileNet (Howard et al., 2017) after both."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        dilation: int = 1,
        *,
        norm1: _Norm = None,
        activation1: _Activation = None,
        norm2: _Norm = None,
        activation2: _Activation = None,
    ):
        """
        Args:
            in_channels, out_channels, kernel_size, padding, dilation: of the pair, as `Conv2d`'s.
            norm1, activation1: after the depthwise convolution (a `get_norm` name or callable).
            norm2, activation2: after the pointwise convolution.
        """
        super().__init__()
        self.depthwise = Conv2d(
            in_channels, in_channels, kernel_size=kernel_size, padding=padding, dilation=dilation,
            groups=in_channels, bias=not norm1, norm=get_norm(norm1, in_channels), activation=activation1,
        )
        self.pointwise = Conv2d(
            in_channels, out_channels, kernel_size=1, bias=not norm2, norm=get_norm(norm2, out_channels),
            activation=activation2,
        )
        weight_init.c2_msra_fill(self.depthwise)
        weight_init.c2_msra_fill(self.pointwise)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))
