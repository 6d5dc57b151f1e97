"""ResNet and ResNeXt backbones (He et al., 2016; Xie et al., 2017) with Detectron2's module names.

Module names follow Detectron2 (`stem.conv1`, `res2.0.shortcut`, `res2.0.conv1.norm`, ...) so that its
checkpoints, and torchvision's after `d2mask.checkpoint.convert_torchvision_checkpoint`, load key for key.
"""
from typing import Dict, List, Optional, Sequence, Type

import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import Tensor, nn

from d2mask.config import ArgumentError, ConfigError, config_keys
from d2mask.layers import CNNBlockBase, Conv2d, DeformConv, ModulatedDeformConv, ShapeSpec, get_norm
from d2mask.layers.wrappers import channels_last_on_cpu, channels_last_weights_on_cpu

from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = [
    "CNNBlockBase",
    "ResNetBlockBase",
    "BasicStem",
    "BasicBlock",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "ResNet",
    "make_stage",
    "default_stage_specs",
    "build_resnet_backbone",
    "RESNET_CONFIG_KEYS",
]

# Blocks per stage res2..res5 for each supported depth.
_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
_FEATURE_NAMES = ("stem", "res2", "res3", "res4", "res5")

# Detectron2's older name for the base of ResNet blocks, which projects still subclass.
ResNetBlockBase = CNNBlockBase


class BasicStem(CNNBlockBase):
    """ResNet's stem: a 7x7 stride-2 convolution and a 3x3 stride-2 max pool (stride 4 in all)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN"):
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(
            in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False,
            norm=get_norm(norm, out_channels),
        )
        weight_init.c2_msra_fill(self.conv1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: str) -> Optional[Conv2d]:
    """The projection on the residual path, needed only where the channel count changes."""
    if in_channels == out_channels:
        return None
    conv = Conv2d(
        in_channels, out_channels, kernel_size=1, stride=stride, bias=False, norm=get_norm(norm, out_channels)
    )
    weight_init.c2_msra_fill(conv)
    return conv


class BasicBlock(CNNBlockBase):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "BN"):
        super().__init__(in_channels, out_channels, stride)
        # Registered first so the state dict lists it first, as Detectron2's does.
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False,
            norm=get_norm(norm, out_channels),
        )
        for conv in (self.conv1, self.conv2):
            weight_init.c2_msra_fill(conv)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.relu_(self.conv1(x)))
        out += x if self.shortcut is None else self.shortcut(x)  # in place: no backward reads `out`
        return F.relu_(out)


class BottleneckBlock(CNNBlockBase):
    """1x1 reduce, 3x3 (grouped, dilated) and 1x1 expand convolutions with a residual connection."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ):
        """
        Args:
            in_channels, out_channels: channels of the block's input and output.
            bottleneck_channels: channels of the 3x3 convolution.
            stride: the block's downsampling factor.
            num_groups: groups of the 3x3 convolution (ResNeXt's cardinality).
            norm: normalisation of every convolution (see `get_norm`).
            stride_in_1x1: apply the stride in the first 1x1 convolution, as the original MSRA
                models do, instead of in the 3x3 one, as torchvision's do.
            dilation: dilation (and padding) of the 3x3 convolution.
        """
        super().__init__(in_channels, out_channels, stride)
        if not num_groups >= 1:
            raise ArgumentError(f"BottleneckBlock `num_groups` must be an int > 0, got {num_groups}", "num_groups")
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1, bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride_3x3, padding=dilation,
            dilation=dilation, groups=num_groups, bias=False, norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels, out_channels, kernel_size=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for conv in (self.conv1, self.conv2, self.conv3):
            weight_init.c2_msra_fill(conv)

    def _conv2(self, x: Tensor) -> Tensor:
        """The 3x3 convolution (with its norm); `DeformBottleneckBlock` makes it deformable."""
        return self.conv2(x)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self._conv2(out))
        out = self.conv3(out)
        # In place (no backward reads conv3's output): one activation-sized buffer less per block.
        out += x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out)


class DeformBottleneckBlock(BottleneckBlock):
    """`BottleneckBlock` whose 3x3 convolution is deformable (Dai et al., 2017), optionally modulated
    (Zhu et al., 2019); its offsets (and mask) come from a plain 3x3 convolution `conv2_offset`,
    initialised to zero so that the block starts as the plain bottleneck."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
    ):
        """
        Args:
            in_channels, out_channels, bottleneck_channels, stride, num_groups, norm, stride_in_1x1,
                dilation: as `BottleneckBlock`.
            deform_modulated: DCNv2: each sample also scaled by a learned mask.
            deform_num_groups: groups of channels with their own offsets.
        """
        super().__init__(
            in_channels, out_channels, bottleneck_channels=bottleneck_channels, stride=stride,
            num_groups=num_groups, norm=norm, stride_in_1x1=stride_in_1x1, dilation=dilation,
        )
        if not deform_num_groups >= 1:
            raise ArgumentError(
                f"DeformBottleneckBlock `deform_num_groups` must be an int > 0, got {deform_num_groups}",
                "deform_num_groups",
            )
        self.deform_modulated = deform_modulated
        stride_3x3 = 1 if stride_in_1x1 else stride
        # per deformable group and tap of the 3x3 kernel: (dy, dx), and for DCNv2 a mask value
        offset_channels = (27 if deform_modulated else 18) * deform_num_groups
        self.conv2_offset = Conv2d(
            bottleneck_channels, offset_channels, kernel_size=3, stride=stride_3x3, padding=dilation, dilation=dilation
        )
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)
        conv_class = ModulatedDeformConv if deform_modulated else DeformConv
        self.conv2 = conv_class(
            bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride_3x3, padding=dilation,
            bias=False, groups=num_groups, dilation=dilation, deformable_groups=deform_num_groups,
            norm=get_norm(norm, bottleneck_channels),
        )
        weight_init.c2_msra_fill(self.conv2)

    def _conv2(self, x: Tensor) -> Tensor:
        offset = self.conv2_offset(x)
        if not self.deform_modulated:
            return self.conv2(x, offset)
        # (N, 27G, H, W): the first two thirds are the offsets, the last third the mask logits
        offset, mask = offset.split([offset.shape[1] * 2 // 3, offset.shape[1] // 3], dim=1)
        return self.conv2(x, offset, mask.sigmoid())


class ResNet(Backbone):
    """A stem followed by stages `res2`, `res3`, ... of residual blocks."""

    def __init__(
        self,
        stem: CNNBlockBase,
        stages: Sequence[Sequence[CNNBlockBase]],
        *,
        out_features: Optional[List[str]] = None,
        freeze_at: int = 0,
    ):
        """
        Args:
            stem: the stem, e.g. `BasicStem`.
            stages: the blocks of each stage; stage i is named `res{i + 2}`.
            out_features: names among "stem", "res2", ... that `forward` returns; by default the last
                stage.
            freeze_at: freeze the stem (>= 1) and the stages res2..res{freeze_at} (see `freeze`).
        """
        super().__init__()
        if not 0 <= freeze_at <= 5:
            raise ArgumentError(f"ResNet `freeze_at` must be 0 (nothing frozen) to 5, got {freeze_at}", "freeze_at")
        self.stem = stem
        stride = stem.stride
        self._out_feature_strides = {"stem": stride}
        self._out_feature_channels = {"stem": stem.out_channels}
        self.stage_names = []
        self.stages = []
        for i, blocks in enumerate(stages):
            if len(blocks) == 0:
                raise ValueError(f"ResNet stage res{i + 2} has no blocks")
            name = f"res{i + 2}"
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.stages.append(stage)
            for block in blocks:
                stride *= block.stride
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = blocks[-1].out_channels
        self.stage_names = tuple(self.stage_names)

        available = ("stem",) + self.stage_names
        if out_features is None:
            out_features = [available[-1]]
        unknown = [f for f in out_features if f not in available]
        if unknown or not out_features:
            raise ValueError(f"ResNet out_features {list(out_features)}: each must be one of {list(available)}")
        self._out_features = list(out_features)
        self.freeze(freeze_at)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """`Tensor[N, C, H, W]` -> {name: `Tensor[N, C_name, H / stride_name, W / stride_name]`}."""
        if x.dim() != 4:
            raise ValueError(f"ResNet takes a batch of images [N, C, H, W], got shape {tuple(x.shape)}")
        outputs = {}
        # its features (and the FPN's) come out channels-last on the CPU
        channels_last_weights_on_cpu(self)
        x = self.stem(channels_last_on_cpu(x))
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int = 0) -> "ResNet":
        """Freezes the stem when `freeze_at` >= 1 and stage res{k} when `freeze_at` >= k.

        Freezing the first layers of an ImageNet-pretrained network keeps its generic low-level
        filters and saves memory and time (Detectron2 freezes up to res2 by default).

        Returns:
            the network itself.
        """
        if freeze_at >= 1:
            self.stem.freeze()
        for index, stage in enumerate(self.stages, start=2):
            if freeze_at >= index:
                for block in stage:
                    block.freeze()
        return self

    @staticmethod
    def make_stage(
        block_class: Type[CNNBlockBase], num_blocks: int, *, in_channels: int, out_channels: int, **kwargs
    ) -> List[CNNBlockBase]:
        """Builds the blocks of one stage.

        Args:
            block_class: e.g. `BottleneckBlock`.
            num_blocks: the number of blocks.
            in_channels: input channels of the first block; the others take `out_channels`.
            out_channels: output channels of every block.
            kwargs: further arguments of every block. An argument named `<name>_per_block` is a list
                of `num_blocks` values; block i gets its i-th value as `<name>` (e.g.
                `stride_per_block=[2, 1, 1]` downsamples in the first block only).

        Returns:
            the blocks, to be wrapped in an `nn.Sequential` (named like `res5`).
        """
        blocks = []
        for i in range(num_blocks):
            block_kwargs = {}
            for key, value in kwargs.items():
                if key.endswith("_per_block"):
                    if len(value) != num_blocks:
                        raise ValueError(f"make_stage: {key} has {len(value)} values for {num_blocks} blocks")
                    block_kwargs[key[: -len("_per_block")]] = value[i]
                else:
                    block_kwargs[key] = value
            blocks.append(block_class(in_channels=in_channels, out_channels=out_channels, **block_kwargs))
            in_channels = out_channels
        return blocks

    @staticmethod
    def make_default_stages(depth: int, block_class: Optional[Type[CNNBlockBase]] = None, **kwargs) -> List[List]:
        """The four stages res2..res5 of a standard ResNet-`depth` (18, 34, 50, 101 or 152), with
        the strides and channels of `default_stage_specs`; `make_stage` for anything else.

        Args:
            depth: the ResNet's depth.
            block_class: the block; default `BasicBlock` below depth 50, else `BottleneckBlock`
                (which must take `bottleneck_channels`, set to a quarter of each stage's output).
                Any callable taking the blocks' keyword arguments will do: `LazyCall(BottleneckBlock)`
                gives a config node per block.
            kwargs: further arguments of every block (norm, stride_in_1x1, ...), not strides or channels.

        Returns:
            per stage, its blocks (the `stages` argument of `ResNet`).
        """
        if block_class is None:
            block_class = BasicBlock if depth < 50 else BottleneckBlock
        return [ResNet.make_stage(block_class, **spec, **kwargs) for spec in default_stage_specs(depth)]


make_stage = ResNet.make_stage


def default_stage_specs(
    depth: int,
    *,
    stem_out_channels: int = 64,
    res2_out_channels: Optional[int] = None,
    bottleneck_channels: int = 64,
    res5_dilation: int = 1,
) -> List[Dict]:
    """The stage arithmetic of a ResNet: the `make_stage` arguments of res2..res5.

    Each stage doubles the channels (and, for bottleneck blocks, the bottleneck width) of the one
    before and halves the resolution in its first block, except res2, which follows the stem's
    pooling, and a dilated res5, which trades its stride for dilation.

    Args:
        depth: 18, 34 (BasicBlocks) or 50, 101, 152 (BottleneckBlocks).
        stem_out_channels: the input channels of res2.
        res2_out_channels: res2's output channels; default 64 below depth 50, else 256.
        bottleneck_channels: res2's bottleneck width (num_groups * width_per_group); depth >= 50 only.
        res5_dilation: 1 or 2; depth >= 50 only.

    Returns:
        per stage, {num_blocks, stride_per_block, in_channels, out_channels} and, for depth >= 50,
        bottleneck_channels (and dilation, when res5 is dilated).
    """
    checks = [
        ("depth", depth in _BLOCKS_PER_STAGE, "18, 34, 50, 101 or 152", depth),
        ("stem_out_channels", stem_out_channels > 0, "an int > 0", stem_out_channels),
        ("res2_out_channels", res2_out_channels is None or res2_out_channels > 0, "an int > 0", res2_out_channels),
        ("bottleneck_channels", bottleneck_channels > 0, "an int > 0", bottleneck_channels),
        ("res5_dilation", res5_dilation in (1, 2), "1 or 2", res5_dilation),
    ]
    for argument, ok, expected, value in checks:
        if not ok:
            raise ArgumentError(f"ResNet `{argument}` must be {expected}, got {value!r}", argument)
    bottleneck = depth >= 50
    in_channels = stem_out_channels
    out_channels = res2_out_channels or (256 if bottleneck else 64)
    specs = []
    for index, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth], start=2):
        dilation = res5_dilation if index == 5 else 1
        first_stride = 1 if index == 2 or dilation == 2 else 2
        spec = dict(
            num_blocks=num_blocks,
            stride_per_block=[first_stride] + [1] * (num_blocks - 1),
            in_channels=in_channels,
            out_channels=out_channels,
        )
        if bottleneck:
            spec["bottleneck_channels"] = bottleneck_channels
            bottleneck_channels *= 2
            if dilation != 1:
                spec["dilation"] = dilation
        specs.append(spec)
        in_channels, out_channels = out_channels, out_channels * 2
    return specs


def _check(ok: bool, key: str, value, expected: str) -> None:
    if not ok:
        raise ConfigError(f"MODEL.{key}: expected {expected}, got {value!r}")


# The config keys of the arguments that a ResNet built from MODEL.RESNETS.* gives the stage arithmetic,
# the blocks and ResNet, for `config_keys` (build_resnet_backbone, Res5ROIHeads' res5).
RESNET_CONFIG_KEYS = {
    "depth": "MODEL.RESNETS.DEPTH",
    "stem_out_channels": "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "res2_out_channels": "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "bottleneck_channels": "MODEL.RESNETS.NUM_GROUPS * MODEL.RESNETS.WIDTH_PER_GROUP",
    "res5_dilation": "MODEL.RESNETS.RES5_DILATION",
    "num_groups": "MODEL.RESNETS.NUM_GROUPS",
    "norm": "MODEL.RESNETS.NORM",
    "deform_num_groups": "MODEL.RESNETS.DEFORM_NUM_GROUPS",
    "freeze_at": "MODEL.BACKBONE.FREEZE_AT",
}


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """A ResNet/ResNeXt from MODEL.RESNETS.* and MODEL.BACKBONE.FREEZE_AT.

    Only the stages up to the deepest of MODEL.RESNETS.OUT_FEATURES are built. The values are
    checked by the parts they reach; what is checked here is what only this translation reads.
    """
    r = cfg.MODEL.RESNETS
    _check(
        len(r.OUT_FEATURES) > 0 and all(f in _FEATURE_NAMES for f in r.OUT_FEATURES),
        "RESNETS.OUT_FEATURES", r.OUT_FEATURES, f"a non-empty list of names among {list(_FEATURE_NAMES)}",
    )
    _check(len(r.DEFORM_ON_PER_STAGE) == 4, "RESNETS.DEFORM_ON_PER_STAGE", r.DEFORM_ON_PER_STAGE, "4 booleans, res2..res5")
    basic = r.DEPTH in (18, 34)
    if basic:
        # BasicBlocks have no bottleneck: res2 keeps the stem's 64 channels and nothing is grouped or dilated.
        _check(r.RES2_OUT_CHANNELS == 64, "RESNETS.RES2_OUT_CHANNELS", r.RES2_OUT_CHANNELS, "64 for ResNet-18/34")
        _check(r.RES5_DILATION == 1, "RESNETS.RES5_DILATION", r.RES5_DILATION, "1 for ResNet-18/34")
        _check(r.NUM_GROUPS == 1, "RESNETS.NUM_GROUPS", r.NUM_GROUPS, "1 for ResNet-18/34")
        _check(not any(r.DEFORM_ON_PER_STAGE), "RESNETS.DEFORM_ON_PER_STAGE", r.DEFORM_ON_PER_STAGE, "all False for ResNet-18/34")

    with config_keys(**RESNET_CONFIG_KEYS):
        specs = default_stage_specs(
            r.DEPTH,
            stem_out_channels=r.STEM_OUT_CHANNELS,
            res2_out_channels=r.RES2_OUT_CHANNELS,
            bottleneck_channels=r.NUM_GROUPS * r.WIDTH_PER_GROUP,
            res5_dilation=r.RES5_DILATION,
        )
        stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
        if basic:
            block_class, block_kwargs = BasicBlock, dict(norm=r.NORM)
        else:
            block_class = BottleneckBlock
            block_kwargs = dict(norm=r.NORM, stride_in_1x1=r.STRIDE_IN_1X1, num_groups=r.NUM_GROUPS)
        last_stage = max(_FEATURE_NAMES.index(f) + 1 for f in r.OUT_FEATURES)  # "res4" -> 4
        stages = []
        for index, spec in enumerate(specs[: last_stage - 1], start=2):
            if not basic and r.DEFORM_ON_PER_STAGE[index - 2]:
                deform = dict(deform_modulated=r.DEFORM_MODULATED, deform_num_groups=r.DEFORM_NUM_GROUPS)
                stages.append(ResNet.make_stage(DeformBottleneckBlock, **spec, **block_kwargs, **deform))
            else:
                stages.append(ResNet.make_stage(block_class, **spec, **block_kwargs))
        return ResNet(stem, stages, out_features=list(r.OUT_FEATURES), freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
