"""Deterministic geometric transforms, applied identically to an image and its annotations.

A `Transform` is fully decided (a flip of a known width, a crop at known offsets); the randomness
lives in the `Augmentation` that creates it. Every transform maps coordinates in the continuous pixel
convention, where pixel (x, y) covers [x, x + 1] x [y, y + 1], so the box, the polygons and the bitmap
of one object stay consistent with each other.
"""
from typing import List, Optional

import cv2
import numpy as np

__all__ = [
    "Transform",
    "TransformList",
    "NoOpTransform",
    "HFlipTransform",
    "VFlipTransform",
    "ResizeTransform",
    "CropTransform",
    "PadTransform",
]


class Transform:
    """A geometric transform of an image and of coordinates in it. Subclasses define `apply_image`
    and `apply_coords`; boxes, polygons and segmentation maps follow from those."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """Transforms an image `ndarray[H, W]` or `ndarray[H, W, C]`."""
        raise NotImplementedError

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """Transforms points `ndarray[N, 2]` of (x, y) in absolute pixels."""
        raise NotImplementedError

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """Transforms a label or mask map `ndarray[H, W]` (no interpolation between labels)."""
        return self.apply_image(segmentation)

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        """Transforms boxes `ndarray[N, 4]` (x0, y0, x1, y1): the tightest box around the
        transformed corners, which is exact for flips, resizes and crops."""
        box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
        corners = box[:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 2)  # (N, 4) -> (4N, 2)
        corners = self.apply_coords(corners).reshape(-1, 4, 2)
        return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)

    def apply_polygons(self, polygons: List[np.ndarray]) -> List[np.ndarray]:
        """Transforms polygons, each `ndarray[K, 2]`; polygons may be dropped (e.g. outside a crop)."""
        return [self.apply_coords(np.asarray(p, dtype=np.float64)) for p in polygons]

    def inverse(self) -> "Transform":
        """The transform that undoes this one, e.g. to map predictions on an augmented image back to
        the original (test-time augmentation)."""
        raise NotImplementedError(f"{type(self).__name__} has no inverse")


class TransformList(Transform):
    """Several transforms applied in order."""

    def __init__(self, transforms: List[Transform]):
        flat: List[Transform] = []
        for t in transforms:
            flat.extend(t.transforms if isinstance(t, TransformList) else [t])
        self.transforms = [t for t in flat if not isinstance(t, NoOpTransform)]

    def _apply(self, method: str, x):
        for t in self.transforms:
            x = getattr(t, method)(x)
        return x

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._apply("apply_image", img)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return self._apply("apply_coords", coords)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._apply("apply_segmentation", segmentation)

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        return self._apply("apply_box", box)

    def apply_polygons(self, polygons: List[np.ndarray]) -> List[np.ndarray]:
        return self._apply("apply_polygons", polygons)

    def inverse(self) -> "TransformList":
        return TransformList([t.inverse() for t in reversed(self.transforms)])

    def __add__(self, other: Transform) -> "TransformList":
        return TransformList(self.transforms + [other])

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"TransformList({self.transforms})"


class NoOpTransform(Transform):
    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def inverse(self) -> "NoOpTransform":
        return self

    def __repr__(self) -> str:
        return "NoOpTransform()"


class HFlipTransform(Transform):
    """Mirrors left-right an image of the given width."""

    def __init__(self, width: int):
        self.width = width

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[:, ::-1])

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64)
        coords[:, 0] = self.width - coords[:, 0]
        return coords

    def inverse(self) -> "HFlipTransform":
        return self

    def __repr__(self) -> str:
        return f"HFlipTransform(width={self.width})"


class VFlipTransform(Transform):
    """Mirrors top-bottom an image of the given height."""

    def __init__(self, height: int):
        self.height = height

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[::-1])

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64)
        coords[:, 1] = self.height - coords[:, 1]
        return coords

    def inverse(self) -> "VFlipTransform":
        return self

    def __repr__(self) -> str:
        return f"VFlipTransform(height={self.height})"


class ResizeTransform(Transform):
    """Resizes an image of size (h, w) to (new_h, new_w)."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: int = cv2.INTER_LINEAR):
        self.h, self.w, self.new_h, self.new_w, self.interp = h, w, new_h, new_w, interp

    def _resize(self, img: np.ndarray, interp: int) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"ResizeTransform expects an image of size {(self.h, self.w)}, got {img.shape[:2]}")
        out = cv2.resize(img, (self.new_w, self.new_h), interpolation=interp)
        # cv2 drops a trailing channel axis of size 1.
        return out.reshape(self.new_h, self.new_w, *img.shape[2:])

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._resize(img, self.interp)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        if segmentation.dtype == bool:  # cv2 cannot resize bool arrays
            return self._resize(segmentation.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
        return self._resize(segmentation, cv2.INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64)
        coords[:, 0] *= self.new_w / self.w
        coords[:, 1] *= self.new_h / self.h
        return coords

    def inverse(self) -> "ResizeTransform":
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)

    def __repr__(self) -> str:
        return f"ResizeTransform(h={self.h}, w={self.w}, new_h={self.new_h}, new_w={self.new_w})"


class CropTransform(Transform):
    """Keeps the window [x0, x0 + w) x [y0, y0 + h) of an image."""

    def __init__(self, x0: int, y0: int, w: int, h: int):
        self.x0, self.y0, self.w, self.h = x0, y0, w, h

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return img[self.y0:self.y0 + self.h, self.x0:self.x0 + self.w]

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return np.asarray(coords, dtype=np.float64) - [self.x0, self.y0]

    def apply_polygons(self, polygons: List[np.ndarray]) -> List[np.ndarray]:
        """Shifts polygons into the window and clips them to it; polygons left with < 3 points vanish."""
        clipped = []
        for p in polygons:
            q = self.apply_coords(p)
            for axis, bound, keep_above in ((0, 0.0, True), (0, self.w, False), (1, 0.0, True), (1, self.h, False)):
                q = _clip_to_half_plane(q, axis, bound, keep_above)
            if len(q) >= 3:
                clipped.append(q)
        return clipped

    def __repr__(self) -> str:
        return f"CropTransform(x0={self.x0}, y0={self.y0}, w={self.w}, h={self.h})"


class PadTransform(Transform):
    """Pads an image with x0 columns on the left, y0 rows on the top, x1 on the right and y1 at the
    bottom: `pad_value` in images, `seg_pad_value` in segmentation maps."""

    def __init__(
        self,
        x0: int,
        y0: int,
        x1: int,
        y1: int,
        orig_w: Optional[int] = None,
        orig_h: Optional[int] = None,
        pad_value: float = 0,
        seg_pad_value: int = 0,
    ):
        """`orig_w` and `orig_h`, the size before padding, are kept for Detectron2's signature."""
        self.x0, self.y0, self.x1, self.y1 = x0, y0, x1, y1
        self.orig_w, self.orig_h = orig_w, orig_h
        self.pad_value, self.seg_pad_value = pad_value, seg_pad_value

    def _pad(self, img: np.ndarray, value: float) -> np.ndarray:
        widths = [(self.y0, self.y1), (self.x0, self.x1)] + [(0, 0)] * (img.ndim - 2)
        return np.pad(img, widths, mode="constant", constant_values=value)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._pad(img, self.pad_value)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._pad(segmentation, self.seg_pad_value)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return np.asarray(coords, dtype=np.float64) + [self.x0, self.y0]

    def __repr__(self) -> str:
        return f"PadTransform(x0={self.x0}, y0={self.y0}, x1={self.x1}, y1={self.y1})"


def _clip_to_half_plane(points: np.ndarray, axis: int, bound: float, keep_above: bool) -> np.ndarray:
    """One Sutherland-Hodgman step: the polygon `ndarray[K, 2]` clipped to coordinate `axis` >= bound
    (keep_above) or <= bound. Correct for concave polygons too, since the half-plane is convex."""
    if len(points) == 0:
        return points
    offset = points[:, axis] - bound
    inside = offset >= 0 if keep_above else offset <= 0
    nxt = np.roll(points, -1, axis=0)
    nxt_inside = np.roll(inside, -1)
    crosses = inside != nxt_inside
    # Edge i runs from points[i] to nxt[i]; where it crosses the bound, t places the crossing on it.
    delta = nxt[:, axis] - points[:, axis]
    t = np.where(crosses, -offset / np.where(crosses, delta, 1.0), 0.0)
    crossing = points + t[:, None] * (nxt - points)
    # Each edge emits up to two points, in order: the crossing (if any), then its end point if inside.
    emitted = np.stack([crossing, nxt], axis=1)  # (K, 2 slots, 2 coords)
    keep = np.stack([crosses, nxt_inside], axis=1)  # (K, 2 slots)
    return emitted[keep]
