"""Deformable convolutions (Dai et al., 2017; Zhu et al., 2019, "v2": modulated) on torchvision's
`deform_conv2d`, with Detectron2's classes, arguments and parameter names, so its checkpoints load.

The offsets are computed by the caller (a separate convolution, as in `DeformBottleneckBlock`) and
laid out as torchvision and Detectron2's kernels both read them: for each deformable group and each
kernel position (row-major), the (dy, dx) pair.

Shape shorthand: `N` images, `C` channels, `H x W` the output, `g` deformable groups, `k` the kernel side.
"""
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv", "ModulatedDeformConv"]


class _DeformConvBase(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Tuple[int, int]],
        stride: Union[int, Tuple[int, int]] = 1,
        padding: Union[int, Tuple[int, int]] = 0,
        dilation: Union[int, Tuple[int, int]] = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
        norm: Optional[nn.Module] = None,
        activation: Optional[Callable[[Tensor], Tensor]] = None,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{type(self).__name__}: in_channels {in_channels} and out_channels {out_channels} must be "
                f"divisible by groups {groups}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def _convolve(self, x: Tensor, offset: Tensor, mask: Optional[Tensor]) -> Tensor:
        x = deform_conv2d(
            x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
            dilation=self.dilation, mask=mask,
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


class DeformConv(_DeformConvBase):
    """Deformable convolution: each kernel tap samples the input at its grid position plus a learned
    offset. Arguments are `Conv2d`'s (without a bias, as in Detectron2) plus `deformable_groups`."""

    def __init__(self, *args, bias: bool = False, **kwargs):
        if bias:
            raise ValueError("DeformConv has no bias (as in Detectron2); use ModulatedDeformConv for one")
        super().__init__(*args, bias=False, **kwargs)

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        """`Tensor[N, C, H_in, W_in]` and offsets `Tensor[N, 2 * g * k * k, H, W]` -> `Tensor[N, C_out, H, W]`."""
        return self._convolve(x, offset, None)


class ModulatedDeformConv(_DeformConvBase):
    """Modulated deformable convolution (DCNv2): deformable, and each tap's sample is scaled by a
    learned mask value. Arguments are `Conv2d`'s (with a bias by default) plus `deformable_groups`."""

    def __init__(self, *args, bias: bool = True, **kwargs):
        super().__init__(*args, bias=bias, **kwargs)

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        """As `DeformConv`, with `mask`: `Tensor[N, g * k * k, H, W]`, usually in [0, 1]."""
        return self._convolve(x, offset, mask)
