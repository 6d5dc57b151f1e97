"""Feature Pyramid Network (Lin et al., 2017) over a bottom-up backbone."""
import math
from typing import Callable, Dict, List, Optional, Sequence

import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import Tensor, nn

from d2mask.config import ConfigError, config_keys, configurable
from d2mask.layers import Conv2d, ShapeSpec, get_norm

from .backbone import Backbone
from .build import BACKBONE_REGISTRY
from .resnet import build_resnet_backbone

__all__ = [
    "FPN",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
    "log2_stages",
    "pyramid_strides",
    "top_block_levels",
]


def log2_stages(strides: Sequence[int], what: str) -> List[int]:
    """The stages s of pyramid levels with strides 2**s, finest first; a ValueError naming `what`
    unless every stride is a power of two, each twice the previous one."""
    stages = [int(math.log2(s)) for s in strides]
    if any(2**st != s for st, s in zip(stages, strides)) or any(b != a + 1 for a, b in zip(stages, stages[1:])):
        raise ValueError(f"{what} must have strides doubling level to level, got {list(strides)}")
    return stages


def pyramid_strides(
    stages: Sequence[int], top_block: Optional[nn.Module], inputs: Sequence[str], what: str, source: str
) -> Dict[str, int]:
    """{"p{s}": 2**s} of a pyramid's levels at `stages`, then of the `top_block.num_levels` coarser
    ones its top block adds; a ValueError naming `what` unless the top block reads one of `inputs`
    (the outputs of the backbone `source`) or a level."""
    strides = {f"p{st}": 2**st for st in stages}
    if top_block is None:
        return strides
    if top_block.in_feature not in [*inputs, *strides]:
        raise ValueError(
            f"{what} top_block reads {top_block.in_feature!r}, which is neither an output of {source} "
            f"{list(inputs)} nor a level {list(strides)}"
        )
    last = stages[-1]
    strides.update({f"p{last + k}": 2 ** (last + k) for k in range(1, top_block.num_levels + 1)})
    return strides


def top_block_levels(
    top_block: nn.Module, bottom_up_features: Dict[str, Tensor], levels: Dict[str, Tensor]
) -> List[Tensor]:
    """The levels `top_block` adds, from its `in_feature`: a bottom-up feature or one of the pyramid's
    `levels`."""
    name = top_block.in_feature
    return top_block(bottom_up_features[name] if name in bottom_up_features else levels[name])


class LastLevelMaxPool(nn.Module):
    """Adds one coarser level ("p6") by subsampling the coarsest FPN output ("p5") with stride 2,
    giving the RPN a level for the largest anchors (as in the FPN paper)."""

    def __init__(self):
        super().__init__()
        self.num_levels = 1
        self.in_feature = "p5"

    def forward(self, x: Tensor) -> List[Tensor]:
        """`Tensor[N, C, H, W]` -> [`Tensor[N, C, ceil(H / 2), ceil(W / 2)]`]."""
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """Adds two coarser levels for RetinaNet (Lin et al., 2017): "p6" is a stride-2 3x3 conv of the
    bottom-up feature `in_feature` (res5), "p7" a stride-2 3x3 conv of ReLU(p6)."""

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5"):
        super().__init__()
        if not out_channels > 0:
            raise ValueError(f"LastLevelP6P7 out_channels (MODEL.FPN.OUT_CHANNELS) must be an int > 0, got {out_channels}")
        self.num_levels = 2
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=2, padding=1)
        for conv in (self.p6, self.p7):
            weight_init.c2_xavier_fill(conv)

    def forward(self, x: Tensor) -> List[Tensor]:
        """`Tensor[N, C_in, H, W]` -> [p6 `Tensor[N, C, ceil(H / 2), ceil(W / 2)]`, p7 at half of p6]."""
        p6 = self.p6(x)
        return [p6, self.p7(F.relu(p6))]


class FPN(Backbone):
    """Top-down pathway with lateral connections: every output level has the same channels.

    Output `p{s}` corresponds to the bottom-up feature of stride 2**s; a top block may append
    coarser levels after the last one.
    """

    @configurable
    def __init__(
        self,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int,
        norm: str = "",
        top_block: Optional[nn.Module] = None,
        fuse_type: str = "sum",
        square_pad: int = 0,
    ):
        """
        Args:
            bottom_up: the backbone whose features the pyramid reads.
            in_features: names of its features, finest first, with strides doubling level to level.
            out_channels: channels of every output level.
            norm: normalisation of the lateral and output convolutions ("" for none, which gives the
                convolutions a bias).
            top_block: a module with attributes `num_levels` and `in_feature` (a bottom-up feature or
                an FPN output name) mapping that feature to `num_levels` further, coarser levels.
            fuse_type: "sum" or "avg" of a lateral connection and the upsampled coarser level.
            square_pad: when > 0, input batches are padded to this square size (`padding_constraints`).
        """
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"FPN fuse_type (MODEL.FPN.FUSE_TYPE) must be 'sum' or 'avg', got {fuse_type!r}")
        if not out_channels > 0:
            raise ValueError(f"FPN out_channels (MODEL.FPN.OUT_CHANNELS) must be an int > 0, got {out_channels}")
        input_shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in input_shapes]
        if missing or not in_features:
            raise ValueError(
                f"FPN in_features (MODEL.FPN.IN_FEATURES) {list(in_features)}: each must be a feature of the "
                f"bottom-up backbone, which produces {list(input_shapes)}"
            )
        strides = [input_shapes[f].stride for f in in_features]
        stages = log2_stages(strides, f"FPN in_features {list(in_features)}")

        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for feature, stage in zip(in_features, stages):
            in_channels = input_shapes[feature].channels
            lateral = Conv2d(in_channels, out_channels, kernel_size=1, bias=use_bias, norm=get_norm(norm, out_channels))
            output = Conv2d(
                out_channels, out_channels, kernel_size=3, padding=1, bias=use_bias, norm=get_norm(norm, out_channels)
            )
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            self.add_module(f"fpn_lateral{stage}", lateral)
            self.add_module(f"fpn_output{stage}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # Kept coarsest first, the order the top-down pass visits them; registered above by name.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self.top_block = top_block
        self.in_features = tuple(in_features)
        self.bottom_up = bottom_up
        self._fuse_type = fuse_type
        self._square_pad = square_pad

        self._out_feature_strides = pyramid_strides(stages, top_block, list(input_shapes), "FPN", "bottom_up")
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {name: out_channels for name in self._out_features}
        self._size_divisibility = strides[-1]

    @classmethod
    def from_config(cls, cfg, bottom_up: Backbone, top_block: Optional[nn.Module] = None):
        """The FPN of MODEL.FPN.* over any bottom-up backbone: `FPN(cfg, bottom_up=..., top_block=...)`
        is how a backbone builder (ResNet's here, a project's own) puts its pyramid on top."""
        fpn = cfg.MODEL.FPN
        return {
            "bottom_up": bottom_up,
            "in_features": list(fpn.IN_FEATURES),
            "out_channels": fpn.OUT_CHANNELS,
            "norm": fpn.NORM,
            "top_block": top_block,
            "fuse_type": fpn.FUSE_TYPE,
        }

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """`Tensor[N, C, H, W]` -> {"p2": `Tensor[N, out_channels, H / 4, W / 4]`, ...}."""
        bottom_up_features = self.bottom_up(x)
        coarsest = bottom_up_features[self.in_features[-1]]
        prev = self.lateral_convs[0](coarsest)
        results = [self.output_convs[0](prev)]
        for feature, lateral_conv, output_conv in zip(
            self.in_features[-2::-1], self.lateral_convs[1:], self.output_convs[1:]
        ):
            lateral = lateral_conv(bottom_up_features[feature])
            # Upsampling to the lateral's size (2x when the input is a multiple of size_divisibility).
            prev = lateral + F.interpolate(prev, size=lateral.shape[-2:], mode="nearest")
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, output_conv(prev))
        if self.top_block is not None:
            results.extend(top_block_levels(self.top_block, bottom_up_features, dict(zip(self._out_features, results))))
        return dict(zip(self._out_features, results))


def _resnet_fpn(cfg, input_shape: ShapeSpec, top_block: Callable[[Backbone], nn.Module]) -> FPN:
    """A ResNet (MODEL.RESNETS.*) under an FPN (MODEL.FPN.*) whose top block `top_block(bottom_up)` builds."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    with config_keys(norm="MODEL.FPN.NORM"):  # FPN's norm goes to get_norm, which names only its argument
        return FPN(cfg, bottom_up=bottom_up, top_block=top_block(bottom_up))


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """A ResNet (MODEL.RESNETS.*) under an FPN (MODEL.FPN.*) with a max-pooled extra level p6."""
    return _resnet_fpn(cfg, input_shape, lambda bottom_up: LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """RetinaNet's backbone: a ResNet under an FPN (usually on res3-res5) with p6 and p7 computed from res5."""

    def p6p7(bottom_up: Backbone) -> LastLevelP6P7:
        if "res5" not in bottom_up.output_shape():
            raise ConfigError(
                f"build_retinanet_resnet_fpn_backbone computes p6 from res5; add res5 to MODEL.RESNETS.OUT_FEATURES "
                f"{list(cfg.MODEL.RESNETS.OUT_FEATURES)}"
            )
        return LastLevelP6P7(bottom_up.output_shape()["res5"].channels, cfg.MODEL.FPN.OUT_CHANNELS)

    return _resnet_fpn(cfg, input_shape, p6p7)
