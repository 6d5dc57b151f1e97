"""The registry of semantic-segmentation heads, at Detectron2's path.

d2mask has no semantic-segmentation meta-architecture yet; the registry is here because Detectron2
projects (PointRend, DeepLab) register their heads in it when imported, and a project that brings its
own meta-architecture builds them with `build_sem_seg_head`.
"""
from typing import Dict

from torch import nn

from d2mask.layers import ShapeSpec
from d2mask.utils.registry import Registry

__all__ = ["SEM_SEG_HEADS_REGISTRY", "build_sem_seg_head"]

SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
SEM_SEG_HEADS_REGISTRY.__doc__ = """
Semantic-segmentation heads, named by MODEL.SEM_SEG_HEAD.NAME. An entry is called as
`obj(cfg, input_shape)` with the backbone's {feature name: ShapeSpec} and returns an nn.Module.
"""


def build_sem_seg_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """The head named by `cfg.MODEL.SEM_SEG_HEAD.NAME` (a key the project's config function adds)."""
    return SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.SEM_SEG_HEAD.NAME)(cfg, input_shape)
