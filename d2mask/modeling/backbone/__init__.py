"""Backbones: the registry, the `Backbone` base class, ResNet/ResNeXt and FPN."""
from .backbone import Backbone
from .build import BACKBONE_REGISTRY, build_backbone
from .fpn import FPN, LastLevelMaxPool, LastLevelP6P7, build_resnet_fpn_backbone, build_retinanet_resnet_fpn_backbone
from .resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    CNNBlockBase,
    DeformBottleneckBlock,
    ResNet,
    ResNetBlockBase,
    build_resnet_backbone,
    make_stage,
)

__all__ = [
    "BACKBONE_REGISTRY",
    "Backbone",
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "CNNBlockBase",
    "DeformBottleneckBlock",
    "FPN",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "ResNet",
    "ResNetBlockBase",
    "build_backbone",
    "build_resnet_backbone",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
    "make_stage",
]
