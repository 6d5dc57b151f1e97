"""Backbones: the registry, the `Backbone` base class, ResNet/ResNeXt and FPN; the transformers of
ViTDet (ViT with its simple feature pyramid, MViTv2, Swin)."""
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
from .mvit import MViT
from .swin import SwinTransformer
from .vit import SimpleFeaturePyramid, ViT, get_vit_lr_decay_rate

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
    "MViT",
    "ResNet",
    "ResNetBlockBase",
    "SimpleFeaturePyramid",
    "SwinTransformer",
    "ViT",
    "build_backbone",
    "build_resnet_backbone",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
    "get_vit_lr_decay_rate",
    "make_stage",
]
