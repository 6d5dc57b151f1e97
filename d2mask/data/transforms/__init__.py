"""Geometric transforms (deterministic) and the augmentations (random policies) that create them."""
from . import augmentation, augmentation_impl, transform
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

__all__ = [*transform.__all__, *augmentation.__all__, *augmentation_impl.__all__]
