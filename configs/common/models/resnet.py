"""ResNet stages as lists of block configs, one `LazyCall` per block.

Each block is a config node of its own, so a saved config lists every block's arguments and any one
of them can be overridden (`model.backbone.bottom_up.stages.2.0.stride=1`). The strides and
channels are `ResNet.make_default_stages`'s.
"""
from typing import List

from d2mask.config import LazyCall as L
from d2mask.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet


def resnet_stages(depth: int, **kwargs) -> List[list]:
    """Stages res2..res5 of a ResNet-`depth` with 64 stem channels: BasicBlocks below depth 50,
    BottleneckBlocks from 50. `kwargs` go to every block (norm, stride_in_1x1, ...)."""
    block = BasicBlock if depth < 50 else BottleneckBlock
    return ResNet.make_default_stages(depth, L(block), **kwargs)
