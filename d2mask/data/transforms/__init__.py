"""Geometric transforms (deterministic) and the augmentations (random policies) that create them."""
from .augmentation import AugInput, Augmentation, AugmentationList, apply_augmentations
from .augmentation_impl import (
    FixedSizeCrop,
    RandomApply,
    RandomCrop,
    RandomCrop_CategoryAreaConstraint,
    RandomFlip,
    ResizeScale,
    ResizeShortestEdge,
)
from .transform import (
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    ResizeTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [
    "Transform",
    "TransformList",
    "NoOpTransform",
    "HFlipTransform",
    "VFlipTransform",
    "ResizeTransform",
    "CropTransform",
    "PadTransform",
    "Augmentation",
    "AugInput",
    "AugmentationList",
    "apply_augmentations",
    "ResizeShortestEdge",
    "RandomFlip",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "ResizeScale",
    "FixedSizeCrop",
    "RandomApply",
]
