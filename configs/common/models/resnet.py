"""ResNet stages as lists of block configs, one `LazyCall` per block.

Each block is a config node of its own, so a saved config lists every block's arguments and any one
of them can be overridden (`model.backbone.bottom_up.stages.2.0.stride=1`).
"""
from typing import List

from d2mask.config import LazyCall as L
from d2mask.modeling.backbone.resnet import BasicBlock, BottleneckBlock


def _first_strides(blocks_per_stage: List[int]) -> List[int]:
    # res2 follows the stem's max pool and keeps its resolution; res3..res5 halve it in their first block.
    return [1] + [2] * (len(blocks_per_stage) - 1)


def bottleneck_stages(
    blocks_per_stage: List[int], *, norm: str = "FrozenBN", stride_in_1x1: bool = True
) -> List[list]:
    """Stages res2.. of a ResNet-50/101/152 (e.g. [3, 4, 6, 3]) with 64 stem channels."""
    stages, in_channels, out_channels, bottleneck = [], 64, 256, 64
    for num_blocks, first_stride in zip(blocks_per_stage, _first_strides(blocks_per_stage)):
        stages.append([
            L(BottleneckBlock)(
                in_channels=in_channels if i == 0 else out_channels,
                out_channels=out_channels,
                bottleneck_channels=bottleneck,
                stride=first_stride if i == 0 else 1,
                norm=norm,
                stride_in_1x1=stride_in_1x1,
            )
            for i in range(num_blocks)
        ])
        in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2
    return stages


def basic_stages(blocks_per_stage: List[int], *, norm: str = "FrozenBN") -> List[list]:
    """Stages res2.. of a ResNet-18/34 (e.g. [2, 2, 2, 2]) with 64 stem channels."""
    stages, in_channels, out_channels = [], 64, 64
    for num_blocks, first_stride in zip(blocks_per_stage, _first_strides(blocks_per_stage)):
        stages.append([
            L(BasicBlock)(
                in_channels=in_channels if i == 0 else out_channels,
                out_channels=out_channels,
                stride=first_stride if i == 0 else 1,
                norm=norm,
            )
            for i in range(num_blocks)
        ])
        in_channels, out_channels = out_channels, out_channels * 2
    return stages
