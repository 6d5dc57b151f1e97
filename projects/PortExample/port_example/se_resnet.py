"""ResNet-18/34 whose basic blocks gate their residual branch by squeeze-and-excitation (Hu et al.,
2018, "Squeeze-and-Excitation Networks"), under an FPN.

Shape shorthand: `N` images, `C` channels, `H x W` a feature map.
"""
import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import nn

from d2mask.config import ConfigError
from d2mask.layers import Conv2d, ShapeSpec, get_norm
from d2mask.modeling import BACKBONE_REGISTRY, FPN, ResNet, ResNetBlockBase
from d2mask.modeling.backbone.fpn import LastLevelMaxPool
from d2mask.modeling.backbone.resnet import BasicStem

_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


class SEBasicBlock(ResNetBlockBase):
    """Two 3x3 convolutions whose output is scaled per channel by a gate computed from its global
    average (squeeze, a bottleneck MLP, sigmoid), then added to the shortcut."""

    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN", se_reduction=4):
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels, out_channels, kernel_size=1, stride=stride, bias=False, norm=get_norm(norm, out_channels)
            )
        else:
            self.shortcut = None
        self.conv1 = Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels, out_channels, kernel_size=3, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in (self.shortcut, self.conv1, self.conv2):
            if layer is not None:
                weight_init.c2_msra_fill(layer)
        hidden = max(1, out_channels // se_reduction)
        self.se_reduce = nn.Conv2d(out_channels, hidden, kernel_size=1)
        self.se_expand = nn.Conv2d(hidden, out_channels, kernel_size=1)

    def forward(self, x):
        out = self.conv2(F.relu_(self.conv1(x)))
        # (N, C, H, W) -> (N, C, 1, 1): one gate in (0, 1) per channel
        gate = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(out.mean(dim=(2, 3), keepdim=True)))))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out * gate + shortcut)


@BACKBONE_REGISTRY.register()
def build_se_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """MODEL.RESNETS (DEPTH 18 or 34) built of `SEBasicBlock`s, under MODEL.FPN with a p6 level."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in _BLOCKS_PER_STAGE:
        raise ConfigError(f"MODEL.RESNETS.DEPTH: build_se_resnet_fpn_backbone builds 18 or 34, got {r.DEPTH}")
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    stages = []
    for index, num_blocks in enumerate(_BLOCKS_PER_STAGE[r.DEPTH]):
        first_stride = 1 if index == 0 else 2  # res2 follows the stem's pooling
        stages.append(ResNet.make_stage(
            SEBasicBlock, num_blocks, in_channels=in_channels, out_channels=out_channels,
            stride_per_block=[first_stride] + [1] * (num_blocks - 1), norm=r.NORM,
            se_reduction=cfg.MODEL.SE.REDUCTION,
        ))
        in_channels, out_channels = out_channels, out_channels * 2
    bottom_up = ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
