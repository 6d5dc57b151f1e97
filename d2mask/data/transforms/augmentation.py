"""Augmentations: policies that look at an input and decide a `Transform` to apply to it.

    augs = [ResizeShortestEdge((640, 800), 1333, "choice"), RandomFlip()]
    aug_input = AugInput(image, boxes=boxes)
    transforms = AugmentationList(augs)(aug_input)   # aug_input.image/boxes are now transformed
    polygons = transforms.apply_polygons(polygons)   # the same transforms, for anything else
"""
from typing import List, Optional, Tuple, Union

import numpy as np

from .transform import Transform, TransformList

__all__ = ["Augmentation", "AugInput", "AugmentationList", "apply_augmentations"]


class AugInput:
    """The inputs an augmentation may look at and that it transforms in place.

    Attributes:
        image: `ndarray[H, W, C]` or `ndarray[H, W]`.
        boxes: `ndarray[N, 4]` (x0, y0, x1, y1) in absolute pixels, or None.
        sem_seg: `ndarray[H, W]` label map, or None.
    """

    def __init__(self, image: np.ndarray, *, boxes: Optional[np.ndarray] = None, sem_seg: Optional[np.ndarray] = None):
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            raise ValueError(f"AugInput expects an image ndarray of shape [H, W] or [H, W, C], got "
                             f"{getattr(image, 'shape', type(image))}")
        self.image = image
        self.boxes = boxes
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        """Applies `tfm` to every input held."""
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)


class Augmentation:
    """Decides a transform from the current image (its size, usually) and random draws.

    Subclasses implement `get_transform(image) -> Transform`; one that looks at more of the input
    names the `AugInput` attributes it receives in `input_args` (Detectron2's contract), e.g.
    ("image", "sem_seg"). Randomness comes from numpy's global generator, which the data loader
    seeds per worker.
    """

    input_args: Tuple[str, ...] = ("image",)

    def get_transform(self, image: np.ndarray) -> Transform:
        raise NotImplementedError

    def __call__(self, aug_input: AugInput) -> Transform:
        """Decides a transform, applies it to `aug_input` in place and returns it."""
        tfm = self.get_transform(*(getattr(aug_input, name) for name in self.input_args))
        if not isinstance(tfm, Transform):
            raise TypeError(f"{type(self).__name__}.get_transform must return a Transform, got {type(tfm).__name__}")
        aug_input.transform(tfm)
        return tfm

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class AugmentationList(Augmentation):
    """Augmentations applied in sequence, each seeing the output of the previous ones."""

    def __init__(self, augs: List[Augmentation]):
        """
        Args:
            augs: the augmentations, in order (Detectron2's argument name, which its Python
                configs give by keyword).
        """
        self.augmentations = list(augs)

    def __call__(self, aug_input: AugInput) -> TransformList:
        return TransformList([aug(aug_input) for aug in self.augmentations])


def apply_augmentations(
    augmentations: List[Augmentation], inputs: Union[np.ndarray, AugInput]
) -> Tuple[Union[np.ndarray, AugInput], TransformList]:
    """Applies augmentations to an image or an `AugInput`.

    Returns:
        The transformed image (or the same AugInput, transformed in place) and the transforms used.
    """
    aug_input = inputs if isinstance(inputs, AugInput) else AugInput(inputs)
    transforms = AugmentationList(augmentations)(aug_input)
    return (aug_input if isinstance(inputs, AugInput) else aug_input.image), transforms
