"""A small ConvNeXt backbone (Liu et al., 2022, "A ConvNet for the 2020s") under d2mask's FPN.

Registered in BACKBONE_REGISTRY as "build_convnext_fpn_backbone"; a config selects it with
`MODEL.BACKBONE.NAME` and sizes it with the MODEL.CONVNEXT keys that `add_config` adds.

The stages are named "res2".."res5" (strides 4 to 32), like ResNet's, so that FPN configs written
for ResNet (MODEL.FPN.IN_FEATURES) apply unchanged. Parameter names follow the official
implementation (`downsample_layers.*`, `stages.*.*.dwconv`, `pwconv1`, `pwconv2`, `gamma`).
Every normalisation is a LayerNorm, which does not depend on the batch size: the backbone trains
from scratch at the small batches of a CPU run, where batch norm would not.

Shape shorthand: `N` images, `C` channels, `H x W` the size of a feature map.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from d2mask.config import CfgNode, ConfigError, config_keys, configurable
from d2mask.layers import LayerNorm, ShapeSpec
from d2mask.modeling import BACKBONE_REGISTRY, FPN, Backbone, LastLevelMaxPool

__all__ = ["ConvNeXt", "ConvNeXtBlock", "add_config", "build_convnext_fpn_backbone"]

_STAGE_NAMES = ("res2", "res3", "res4", "res5")


def add_config(cfg) -> None:
    """Adds the MODEL.CONVNEXT keys (called for configs that list this module in IMPORTS).

    Keys already present keep their values, so listing the module twice changes nothing.
    """
    defaults = {
        "DEPTHS": [2, 2, 2, 2],  # blocks per stage, res2..res5 (ConvNeXt-T: [3, 3, 9, 3])
        "DIMS": [32, 64, 128, 256],  # channels per stage (ConvNeXt-T: [96, 192, 384, 768])
        "LAYER_SCALE_INIT": 1e-6,  # initial per-channel scale of each block's residual branch
        "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    }
    if "CONVNEXT" not in cfg.MODEL:
        cfg.MODEL.CONVNEXT = CfgNode()
    for key, value in defaults.items():
        if key not in cfg.MODEL.CONVNEXT:
            cfg.MODEL.CONVNEXT[key] = value


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise convolution, LayerNorm, and a 4x wide pointwise MLP with GELU, scaled per
    channel and added to the input."""

    def __init__(self, dim: int, layer_scale_init: float):
        """
        Args:
            dim: channels of the input and output.
            layer_scale_init: the residual branch's initial scale; small values start each block
                close to the identity, which keeps deep stacks stable early in training.
        """
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init)))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C) for the pointwise layers
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(Backbone):
    """A 4x4 stride-4 "patchify" stem and four stages of ConvNeXt blocks, each stage after the
    first starting with a LayerNorm and a 2x2 stride-2 convolution."""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 3,
        depths: List[int],
        dims: List[int],
        layer_scale_init: float = 1e-6,
        out_features: List[str],
    ):
        """
        Args:
            in_channels: channels of the input images.
            depths: blocks in each of the four stages.
            dims: channels of each of the four stages.
            layer_scale_init: see `ConvNeXtBlock`.
            out_features: stages to return, among "res2".."res5".
        """
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt needs 4 depths and 4 dims (MODEL.CONVNEXT.DEPTHS/DIMS), got {depths}, {dims}")
        if any(d < 1 for d in list(depths) + list(dims)):
            raise ValueError(f"ConvNeXt depths and dims must be positive, got {depths}, {dims}")
        unknown = [f for f in out_features if f not in _STAGE_NAMES]
        if unknown or not out_features:
            raise ValueError(f"ConvNeXt out_features (MODEL.CONVNEXT.OUT_FEATURES) must be among {list(_STAGE_NAMES)}, got {list(out_features)}")
        # Stages after the last one asked for are not built: their parameters would never get a
        # gradient, which DistributedDataParallel (without find_unused_parameters) stops on.
        num_stages = max(_STAGE_NAMES.index(f) for f in out_features) + 1
        stem = nn.Sequential(nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4), LayerNorm(dims[0], eps=1e-6))
        downsamples = [
            nn.Sequential(LayerNorm(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2))
            for i in range(1, num_stages)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downsamples])
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dims[i], layer_scale_init) for _ in range(depths[i]))) for i in range(num_stages)
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self._out_features = [f for f in _STAGE_NAMES if f in out_features]
        self._out_feature_channels = {name: dims[_STAGE_NAMES.index(name)] for name in self._out_features}
        self._out_feature_strides = {name: 4 * 2 ** _STAGE_NAMES.index(name) for name in self._out_features}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        if "CONVNEXT" not in cfg.MODEL:
            raise ConfigError(
                "the ConvNeXt backbone reads MODEL.CONVNEXT, which this config lacks: list "
                "'projects.ConvNeXt.convnext' in IMPORTS (its add_config adds the keys)"
            )
        c = cfg.MODEL.CONVNEXT
        return {
            "in_channels": input_shape.channels,
            "depths": list(c.DEPTHS),
            "dims": list(c.DIMS),
            "layer_scale_init": c.LAYER_SCALE_INIT,
            "out_features": list(c.OUT_FEATURES),
        }

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """`Tensor[N, C, H, W]` -> {"res2": `Tensor[N, dims[0], H / 4, W / 4]`, ..., up to "res5" at H / 32}."""
        outputs = {}
        for name, downsample, stage in zip(_STAGE_NAMES, self.downsample_layers, self.stages):
            x = stage(downsample(x))
            if name in self._out_features:
                outputs[name] = x
        return outputs


@BACKBONE_REGISTRY.register()
def build_convnext_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """A ConvNeXt (MODEL.CONVNEXT.*) under an FPN (MODEL.FPN.*) with a max-pooled extra level p6."""
    bottom_up = ConvNeXt(cfg, input_shape)
    with config_keys(norm="MODEL.FPN.NORM"):  # FPN's norm goes to get_norm, which names only its argument
        return FPN(cfg, bottom_up=bottom_up, top_block=LastLevelMaxPool())
