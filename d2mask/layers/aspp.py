"""Atrous Spatial Pyramid Pooling (Chen et al., 2017, DeepLabv3), with Detectron2's arguments and
parameter names.

Shape shorthand: `N` images, `C` channels, `H x W` the feature map.
"""
import copy
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import Tensor, nn

from .batch_norm import get_norm
from .blocks import DepthwiseSeparableConv2d
from .wrappers import Conv2d

__all__ = ["ASPP"]


class ASPP(nn.Module):
    """Five parallel branches on the same feature map, concatenated and projected by a 1x1
    convolution (`project`): a 1x1 convolution, three 3x3 convolutions dilated by `dilations`, and an
    average pooling followed by a 1x1 convolution, upsampled back (`convs.0` .. `convs.4`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilations: Sequence[int],
        *,
        norm,
        activation: Callable[[Tensor], Tensor],
        pool_kernel_size: Optional[Sequence[int]] = None,
        dropout: float = 0.0,
        use_depthwise_separable_conv: bool = False,
    ):
        """
        Args:
            in_channels, out_channels: channels of the input and of every branch and the output.
            dilations: the three dilations of the 3x3 branches.
            norm: normalisation of every convolution but the pooling branch's (whose input is 1x1),
                a `get_norm` name or callable; "" for none (the convolutions then have a bias).
            activation: applied after every convolution (each gets its own copy).
            pool_kernel_size: (kh, kw) of the pooling branch, which the input size must be divisible
                by; None pools globally. A fixed window keeps inference on larger images consistent
                with training crops of that size.
            dropout: dropout rate on the output (0.1 in DeepLab).
            use_depthwise_separable_conv: 3x3 branches as `DepthwiseSeparableConv2d` (DeepLabv3+).
        """
        super().__init__()
        if len(dilations) != 3:
            raise ValueError(f"ASPP needs 3 dilations, got {list(dilations)}")
        self.pool_kernel_size = pool_kernel_size
        self.dropout = dropout
        bias = norm == ""

        def conv(kernel_size: int, dilation: int = 1) -> Conv2d:
            layer = Conv2d(
                in_channels, out_channels, kernel_size=kernel_size, padding=dilation if kernel_size == 3 else 0,
                dilation=dilation, bias=bias, norm=get_norm(norm, out_channels), activation=copy.deepcopy(activation),
            )
            weight_init.c2_xavier_fill(layer)
            return layer

        branches: List[nn.Module] = [conv(1)]
        for dilation in dilations:
            if use_depthwise_separable_conv:
                branches.append(DepthwiseSeparableConv2d(
                    in_channels, out_channels, kernel_size=3, padding=dilation, dilation=dilation,
                    norm1=norm, activation1=copy.deepcopy(activation), norm2=norm, activation2=copy.deepcopy(activation),
                ))
            else:
                branches.append(conv(3, dilation))
        pool = nn.AdaptiveAvgPool2d(1) if pool_kernel_size is None else nn.AvgPool2d(pool_kernel_size, stride=1)
        pooled_conv = Conv2d(in_channels, out_channels, kernel_size=1, bias=True, activation=copy.deepcopy(activation))
        weight_init.c2_xavier_fill(pooled_conv)
        branches.append(nn.Sequential(pool, pooled_conv))
        self.convs = nn.ModuleList(branches)
        self.project = Conv2d(
            5 * out_channels, out_channels, kernel_size=1, bias=bias, norm=get_norm(norm, out_channels),
            activation=copy.deepcopy(activation),
        )
        weight_init.c2_xavier_fill(self.project)

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, in_channels, H, W]` -> `Tensor[N, out_channels, H, W]`."""
        size = x.shape[-2:]
        if self.pool_kernel_size is not None and (size[0] % self.pool_kernel_size[0] or size[1] % self.pool_kernel_size[1]):
            raise ValueError(f"ASPP input of size {tuple(size)} is not divisible by pool_kernel_size {tuple(self.pool_kernel_size)}")
        outputs = [branch(x) for branch in self.convs]
        outputs[-1] = F.interpolate(outputs[-1], size=size, mode="bilinear", align_corners=False)
        x = self.project(torch.cat(outputs, dim=1))  # (N, 5C, H, W) -> (N, C, H, W)
        return F.dropout(x, self.dropout, training=self.training) if self.dropout > 0 else x
