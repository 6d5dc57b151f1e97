"""The augmentations driven by the INPUT.* config keys: resizing, flipping and cropping (also
Detectron2's `RandomCrop_CategoryAreaConstraint`, which DeepLab's train_net.py builds); and the
large-scale jitter of ViTDet's Python configs (`ResizeScale`, `FixedSizeCrop`); `RandomApply`, which
applies another with a probability (MViTv2's configs, around a resize-and-crop)."""
import sys
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .augmentation import AugInput, Augmentation
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
    "ResizeShortestEdge",
    "RandomFlip",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "ResizeScale",
    "FixedSizeCrop",
    "RandomApply",
]


class ResizeShortestEdge(Augmentation):
    """Scales an image so its shorter side has a sampled length, unless that makes the longer side
    exceed `max_size`, in which case the longer side becomes `max_size`. Aspect ratio is kept."""

    def __init__(
        self,
        short_edge_length: Union[int, Sequence[int]],
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        interp: int = cv2.INTER_LINEAR,
    ):
        """
        Args:
            short_edge_length: the target shorter side; with "choice", one of several lengths;
                with "range", the (min, max) bounds of a uniform integer draw. 0 means no resizing.
            max_size: the longest side allowed after resizing.
            sample_style: "choice" or "range".
            interp: cv2 interpolation used for images.
        """
        if sample_style not in ("range", "choice"):
            raise ValueError(f"ResizeShortestEdge sample_style must be 'range' or 'choice', got {sample_style!r}")
        lengths = (short_edge_length,) if isinstance(short_edge_length, int) else tuple(short_edge_length)
        if sample_style == "range" and len(lengths) == 1:
            lengths = lengths * 2
        if sample_style == "range" and (len(lengths) != 2 or lengths[0] > lengths[1]):
            raise ValueError(
                f"ResizeShortestEdge with sample_style='range' needs (min, max) lengths, got {short_edge_length}"
            )
        if not lengths:
            raise ValueError("ResizeShortestEdge needs at least one short edge length")
        self.short_edge_length = lengths
        self.max_size = max_size
        self.sample_style = sample_style
        self.interp = interp

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.sample_style == "range":
            size = int(np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1))
        else:
            size = int(np.random.choice(self.short_edge_length))
        if size == 0:
            return NoOpTransform()
        new_h, new_w = self.get_output_shape(h, w, size, self.max_size)
        return ResizeTransform(h, w, new_h, new_w, self.interp)

    @staticmethod
    def get_output_shape(old_h: int, old_w: int, short_edge_length: int, max_size: int) -> Tuple[int, int]:
        """(new_h, new_w) for an image of size (old_h, old_w), rounded to the nearest integers."""
        scale = short_edge_length / min(old_h, old_w)
        if max(old_h, old_w) * scale > max_size:
            scale = max_size / max(old_h, old_w)
        return int(old_h * scale + 0.5), int(old_w * scale + 0.5)


class RandomFlip(Augmentation):
    """Flips an image horizontally or vertically with probability `prob`."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False):
        if horizontal == vertical:
            raise ValueError(
                f"RandomFlip flips in exactly one direction; got horizontal={horizontal}, vertical={vertical}"
            )
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomFlip prob must be in [0, 1], got {prob}")
        self.prob = prob
        self.horizontal = horizontal
        self.vertical = vertical

    def get_transform(self, image: np.ndarray) -> Transform:
        if np.random.rand() >= self.prob:
            return NoOpTransform()
        h, w = image.shape[:2]
        return HFlipTransform(w) if self.horizontal else VFlipTransform(h)


class RandomCrop(Augmentation):
    """Crops a random window of a size given by `crop_type`:

    - "relative": (h * crop_size[0], w * crop_size[1]);
    - "relative_range": each side's fraction drawn uniformly in [crop_size[i], 1];
    - "absolute": crop_size in pixels, at most the image size;
    - "absolute_range": each side drawn uniformly in pixels in [crop_size[0], crop_size[1]], at most the image size.
    """

    _TYPES = ("relative", "relative_range", "absolute", "absolute_range")

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        if crop_type not in self._TYPES:
            raise ValueError(f"RandomCrop crop_type must be one of {self._TYPES}, got {crop_type!r}")
        if len(crop_size) != 2:
            raise ValueError(f"RandomCrop crop_size must have 2 numbers, got {crop_size}")
        if crop_type.startswith("relative") and not all(0 < s <= 1 for s in crop_size):
            raise ValueError(f"RandomCrop '{crop_type}' needs crop_size fractions in (0, 1], got {crop_size}")
        if crop_type == "absolute_range" and not 0 < crop_size[0] <= crop_size[1]:
            raise ValueError(f"RandomCrop 'absolute_range' needs 0 < min <= max, got {crop_size}")
        self.crop_type = crop_type
        self.crop_size = tuple(crop_size)

    def get_crop_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """(crop_h, crop_w) for an image of size (h, w)."""
        h, w = image_size
        if self.crop_type == "relative":
            ch, cw = self.crop_size
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            low = np.asarray(self.crop_size, dtype=np.float64)
            ch, cw = low + np.random.rand(2) * (1 - low)
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(int(self.crop_size[0]), h), min(int(self.crop_size[1]), w)
        low, high = int(self.crop_size[0]), int(self.crop_size[1])
        ch = np.random.randint(min(h, low), min(h, high) + 1)
        cw = np.random.randint(min(w, low), min(w, high) + 1)
        return int(ch), int(cw)

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        ch, cw = self.get_crop_size((h, w))
        y0 = int(np.random.randint(h - ch + 1))
        x0 = int(np.random.randint(w - cw + 1))
        return CropTransform(x0, y0, cw, ch)


class RandomCrop_CategoryAreaConstraint(Augmentation):  # noqa: N801 (Detectron2's public name)
    """`RandomCrop` avoiding windows that one class of the label map dominates, which destabilises
    training (Detectron2's DeepLab crops Cityscapes so). It draws up to 10 windows and keeps the first
    holding more than one class in which no class covers `single_category_max_area` or more of the
    counted pixels (those not of `ignored_category`); if none does, the 10th. With
    `single_category_max_area` 1.0 or more, it is `RandomCrop`.
    """

    input_args = ("image", "sem_seg")

    def __init__(
        self,
        crop_type: str,
        crop_size: Sequence[float],
        single_category_max_area: float = 1.0,
        ignored_category: Optional[int] = None,
    ):
        """
        Args:
            crop_type, crop_size: as `RandomCrop`'s.
            single_category_max_area: the largest fraction of the window one class may cover.
            ignored_category: a label (usually the ignored one, 255) neither counted nor limited.
        """
        if not single_category_max_area > 0:
            raise ValueError(f"RandomCrop_CategoryAreaConstraint single_category_max_area must be > 0, "
                             f"got {single_category_max_area}")
        self.crop_aug = RandomCrop(crop_type, crop_size)
        self.single_category_max_area = single_category_max_area
        self.ignored_category = ignored_category

    def get_transform(self, image: np.ndarray, sem_seg: Optional[np.ndarray]) -> Transform:
        if self.single_category_max_area >= 1.0:
            return self.crop_aug.get_transform(image)
        if sem_seg is None:
            raise ValueError("RandomCrop_CategoryAreaConstraint needs the label map: AugInput(image, sem_seg=...)")
        h, w = sem_seg.shape
        for _ in range(10):
            ch, cw = self.crop_aug.get_crop_size((h, w))
            y0 = int(np.random.randint(h - ch + 1))
            x0 = int(np.random.randint(w - cw + 1))
            labels, counts = np.unique(sem_seg[y0 : y0 + ch, x0 : x0 + cw], return_counts=True)
            if self.ignored_category is not None:
                counts = counts[labels != self.ignored_category]
            if len(counts) > 1 and counts.max() < counts.sum() * self.single_category_max_area:
                break
        return CropTransform(x0, y0, cw, ch)


class ResizeScale(Augmentation):
    """Large-scale jitter, resizing half (Ghiasi et al., 2021): draws a scale s uniformly in
    [min_scale, max_scale] and resizes the image, keeping its aspect ratio, to the largest size that
    fits in s * (target_height, target_width)."""

    def __init__(
        self, min_scale: float, max_scale: float, target_height: int, target_width: int, interp: int = cv2.INTER_LINEAR
    ):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"ResizeScale needs 0 < min_scale <= max_scale, got {min_scale} and {max_scale}")
        self.min_scale, self.max_scale = min_scale, max_scale
        self.target_height, self.target_width = target_height, target_width
        self.interp = interp

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        scale = np.random.uniform(self.min_scale, self.max_scale)
        ratio = min(scale * self.target_height / h, scale * self.target_width / w)
        return ResizeTransform(h, w, int(np.round(h * ratio)), int(np.round(w * ratio)), self.interp)


class FixedSizeCrop(Augmentation):
    """Large-scale jitter, cropping half: a random `crop_size` (height, width) window of a larger
    image; a smaller side is kept whole and, with `pad`, padded at the bottom or right to the crop
    size (`pad_value` in the image, `seg_pad_value` in segmentation maps)."""

    def __init__(
        self, crop_size: Tuple[int, int], pad: bool = True, pad_value: float = 128.0, seg_pad_value: int = 255
    ):
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"FixedSizeCrop crop_size must be a positive (height, width), got {crop_size}")
        self.crop_size = tuple(crop_size)
        self.pad = pad
        self.pad_value = pad_value
        self.seg_pad_value = seg_pad_value

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        crop_h, crop_w = self.crop_size
        # One uniform draw places the window along both axes, as in Detectron2.
        fraction = np.random.uniform(0.0, 1.0)
        y0, x0 = (int(np.round(max(size - crop, 0) * fraction)) for size, crop in ((h, crop_h), (w, crop_w)))
        kept_h, kept_w = min(h, crop_h), min(w, crop_w)
        transforms = [CropTransform(x0, y0, kept_w, kept_h)]
        if self.pad:
            transforms.append(
                PadTransform(0, 0, crop_w - kept_w, crop_h - kept_h, kept_w, kept_h, self.pad_value, self.seg_pad_value)
            )
        return TransformList(transforms)


class RandomApply(Augmentation):
    """Applies `tfm_or_aug` with probability `prob`, else nothing (a `NoOpTransform`). It may be an
    augmentation, e.g. an `AugmentationList` that resizes then crops, or a fixed `Transform`."""

    def __init__(self, tfm_or_aug: Union[Transform, Augmentation], prob: float = 0.5):
        if not isinstance(tfm_or_aug, (Transform, Augmentation)):
            raise TypeError(f"RandomApply takes a Transform or an Augmentation, got {type(tfm_or_aug).__name__}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomApply prob must be in [0, 1], got {prob}")
        self.aug = tfm_or_aug
        self.prob = prob

    def get_transform(self, image: np.ndarray) -> Transform:
        if np.random.rand() >= self.prob:
            return NoOpTransform()
        return self.aug if isinstance(self.aug, Transform) else self.aug.get_transform(image)

    def __call__(self, aug_input: AugInput) -> Transform:
        # An AugmentationList decides each step on the previous step's output, so it is called, not
        # asked for one transform up front.
        if np.random.rand() >= self.prob:
            return NoOpTransform()
        if isinstance(self.aug, Transform):
            aug_input.transform(self.aug)
            return self.aug
        return self.aug(aug_input)
