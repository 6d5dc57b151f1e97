"""The COCO-like shapes dataset ("shapes_coco_train/val"): the circles, squares and triangles of the
shapes dataset in scenes that look like the data users bring, no download.

Each image has a textured background with unlabelled clutter (lines, arcs, thin ellipses) and a varying
number of shapes whose sizes spread over two orders of magnitude (log-uniform diameters), so that about
a third of the instances are small by COCO's measure (area < 32², at the generated size), most of the
rest medium and some large. A shape's fill is one colour, a gradient, stripes or a mottled colour;
circles and squares are drawn a little stretched and triangles irregular; the whole image is blurred
slightly, gets sensor noise and is saved as a JPEG. Shapes are painted one after another, each over
the ones before it, and may run off the image's edge. An instance's mask is the *visible part* of its
shape: a polygon where one outline reproduces it, otherwise (occlusion split it into pieces, or left
a hole or a sliver that no outline traces) a compressed COCO RLE, as COCO stores such masks. Instances
with less than `min_area` visible pixels are left out.

The files are cached like the shapes dataset's (`shapes.py`): generated on first use into
`<root>/shapes_coco/<name>-<fingerprint>/`, the fingerprint hashing the generator's version and
parameters.
"""
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

from .shapes import (
    _IMAGE_DIR, _JSON_NAME, SHAPES_CLASSES, _polygons_fit, _random_colour, _register_generated, mask_to_polygons,
)

__all__ = ["register_shapes_coco"]

# Bump when the generator's output changes, so existing caches are regenerated.
_GENERATOR_VERSION = 1
_JPEG_QUALITY = [cv2.IMWRITE_JPEG_QUALITY, 90]
_SUBPIXEL = 16  # cv2 draws with 4 fractional bits, so sub-pixel positions are kept
_MAX_CLUTTER = 15


def _draw_shape(rng: np.random.Generator, image_size: int, diameter: float) -> Tuple[int, np.ndarray]:
    """One shape of outer diameter about `diameter`, centred anywhere in the image (so possibly cut by
    its edge): (class index, `ndarray[S, S]` bool mask of the whole shape)."""
    kind = int(rng.integers(len(SHAPES_CLASSES)))
    radius = diameter / 2
    cx, cy = rng.uniform(0, image_size, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    stretch = rng.uniform(1.0, 1.35)  # intra-class variety: a circle is an ellipse, a square a rectangle
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    if SHAPES_CLASSES[kind] == "circle":
        centre = (round(cx * _SUBPIXEL), round(cy * _SUBPIXEL))
        axes = (round(radius * _SUBPIXEL), round(radius / stretch * _SUBPIXEL))
        cv2.ellipse(mask, centre, axes, np.degrees(angle), 0, 360, 1, -1, cv2.LINE_8, 4)
        return kind, mask.astype(bool)
    if SHAPES_CLASSES[kind] == "square":
        half_diagonal = np.arctan(1 / stretch)  # the corners' angle from the long axis
        angles = angle + np.array([half_diagonal, np.pi - half_diagonal, np.pi + half_diagonal, -half_diagonal])
        radii = np.full(4, radius)
    else:
        angles = angle + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.3, 0.3, size=3)
        radii = radius * rng.uniform(0.8, 1.0, size=3)
    vertices = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    cv2.fillPoly(mask, [np.round(vertices * _SUBPIXEL).astype(np.int32)], 1, cv2.LINE_8, 4)
    return kind, mask.astype(bool)


def _texture(rng: np.random.Generator, height: int, width: int, colour: np.ndarray) -> np.ndarray:
    """`ndarray[height, width, 3]` float32 RGB: `colour` plain, as a gradient or stripes towards a
    second colour near it, or mottled."""
    colour = colour.astype(np.float32)
    kind = int(rng.integers(4))
    if kind == 0:
        return np.broadcast_to(colour, (height, width, 3))
    if kind == 3:
        cells = rng.normal(0, 30, size=(int(rng.integers(2, 7)),) * 2 + (3,)).astype(np.float32)
        return colour + cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)
    second = np.clip(colour + rng.normal(0, 70, size=3), 0, 255).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    xs, ys = np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)[:, None]
    along = xs * float(np.cos(theta)) + ys * float(np.sin(theta))  # (height, width)
    if kind == 1:
        t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    else:
        t = (along / rng.uniform(4, 14) % 1.0 < 0.5).astype(np.float32)
    return colour + t[:, :, None] * (second - colour)


def _draw_clutter(rng: np.random.Generator, image: np.ndarray) -> None:
    """Unlabelled lines, arcs and thin ellipses on the background, in place."""
    size = image.shape[0]
    for _ in range(int(rng.integers(0, _MAX_CLUTTER + 1))):
        colour = rng.integers(0, 256, size=3).tolist()
        x, y = (int(v) for v in rng.integers(0, size, size=2))
        kind = int(rng.integers(3))
        if kind == 0:
            end = tuple(int(v) for v in rng.integers(0, size, size=2))
            cv2.line(image, (x, y), end, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            long_axis = int(rng.integers(6, size // 3))
            angle, start = rng.uniform(0, 360, size=2)
            if kind == 1:  # an arc
                sweep = rng.uniform(60, 270)
                cv2.ellipse(image, (x, y), (long_axis, long_axis), angle, start, start + sweep, colour,
                            int(rng.integers(1, 4)), cv2.LINE_AA)
            else:  # an ellipse at least 3 times as long as wide, unlike any circle
                short_axis = max(1, round(long_axis / rng.uniform(3, 8)))
                cv2.ellipse(image, (x, y), (long_axis, short_axis), angle, 0, 360, colour, -1, cv2.LINE_AA)


def _generate_scene(
    seed: int, index: int, image_size: int, min_objects: int, max_objects: int, object_size: Tuple[float, float]
) -> Tuple[np.ndarray, List[int], List[np.ndarray]]:
    """Image `index` of the dataset of `seed` (`ndarray[S, S, 3]` uint8 RGB) and its shapes in paint
    order: class indices and `ndarray[S, S]` bool masks of the whole shapes (before occlusion)."""
    rng = np.random.default_rng([seed, index])  # so image i depends only on (seed, i)
    num_objects = int(rng.integers(min_objects, max_objects + 1))
    background = rng.integers(0, 256, size=3)
    image = _texture(rng, image_size, image_size, background).copy()
    _draw_clutter(rng, image)
    kinds, masks, colours = [], [], [background]
    log_low, log_high = np.log(object_size)
    for _ in range(num_objects):
        kind, mask = _draw_shape(rng, image_size, float(np.exp(rng.uniform(log_low, log_high))))
        colour = _random_colour(rng, colours, 60)
        x0, y0, width, height = cv2.boundingRect(mask.view(np.uint8))
        if width == 0:  # too small to cover a pixel
            continue
        box = np.s_[y0 : y0 + height, x0 : x0 + width]
        np.copyto(image[box], _texture(rng, height, width, colour), where=mask[box][:, :, None])
        kinds.append(kind)
        masks.append(mask)
        colours.append(colour)
    sigma = rng.uniform(0.3, 1.0)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(2, 8)
    image = cv2.GaussianBlur(image, (0, 0), sigma) + noise
    return np.clip(np.round(image), 0, 255).astype(np.uint8), kinds, masks


def _segmentation(visible: np.ndarray) -> Any:
    """COCO's segmentation of a bool mask: one polygon where one outline reproduces the mask (no hole,
    one piece, `shapes._polygons_fit`), else a compressed RLE with its counts as a string."""
    contours, _ = cv2.findContours(visible.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) == 1:  # one outer outline and no hole
        polygons = mask_to_polygons(visible)
        if len(polygons) == 1 and _polygons_fit(visible, polygons):
            return [np.round(polygons[0], 2).tolist()]
    rle = mask_util.encode(np.asfortranarray(visible.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _annotations(kinds: List[int], masks: List[np.ndarray], min_area: int) -> List[Dict[str, Any]]:
    """COCO annotations (without ids) of shapes painted in the order given, each over the ones before:
    each instance's visible part, left out when it has fewer than `min_area` pixels.

    Args:
        kinds: class index of each shape.
        masks: `ndarray[H, W]` bool of each whole shape.
        min_area: the least number of visible pixels an instance keeps.
    """
    if not masks:
        return []
    label_map = np.zeros(masks[0].shape, dtype=np.int32)
    for index, mask in enumerate(masks, start=1):
        label_map[mask] = index
    annotations = []
    for index, kind in enumerate(kinds, start=1):
        visible = label_map == index
        area = int(visible.sum())
        if area < min_area:
            continue
        xs, ys = np.flatnonzero(visible.any(axis=0)), np.flatnonzero(visible.any(axis=1))
        x0, y0 = int(xs[0]), int(ys[0])
        annotations.append({
            "category_id": kind + 1,
            "bbox": [x0, y0, int(xs[-1]) + 1 - x0, int(ys[-1]) + 1 - y0],
            "area": area,
            "segmentation": _segmentation(visible),
            "iscrowd": 0,
        })
    return annotations


def _generate(directory: str, *, num_images: int, seed: int, image_size: int, min_objects: int, max_objects: int,
              object_size: Tuple[float, float], min_area: int) -> None:
    """Writes `num_images` JPEGs and their COCO json into `directory`."""
    os.makedirs(os.path.join(directory, _IMAGE_DIR))
    images, annotations = [], []
    for index in range(num_images):
        image, kinds, masks = _generate_scene(seed, index, image_size, min_objects, max_objects, object_size)
        file_name = f"{index:06d}.jpg"
        cv2.imwrite(os.path.join(directory, _IMAGE_DIR, file_name), image[:, :, ::-1], _JPEG_QUALITY)  # RGB -> BGR
        images.append({"id": index + 1, "file_name": file_name, "height": image_size, "width": image_size})
        for annotation in _annotations(kinds, masks, min_area):
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, **annotation})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPES_CLASSES)]
    with open(os.path.join(directory, _JSON_NAME), "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def register_shapes_coco(
    name: str,
    root: Optional[str] = None,
    *,
    num_images: int,
    seed: int,
    image_size: int = 256,
    min_objects: int = 1,
    max_objects: int = 14,
    object_size: Tuple[float, float] = (20, 360),
    min_area: int = 16,
) -> None:
    """Registers a generated COCO-like shapes dataset (module docstring) as `name`; its files are made
    on the first `DatasetCatalog.get`.

    Args:
        name: the dataset's name.
        root: cache directory; None uses `datasets_root()` when the dataset is loaded. Files go to
            `<root>/shapes_coco/<name>-<fingerprint>/`.
        num_images: how many images.
        seed: images are a deterministic function of (seed, image index).
        image_size: side of the square images in pixels.
        min_objects, max_objects: shapes drawn per image, uniformly; those hidden below `min_area`
            visible pixels are not annotated.
        object_size: range of the shapes' outer diameters in pixels, drawn log-uniformly; a shape
            larger than the image covers much of it and is cut by its edges. The defaults give
            about 35 % small, 45 % medium and 20 % large instances at 256 pixels.
        min_area: the least number of visible pixels an annotated instance has.
    """
    if not 0 < min_objects <= max_objects:
        raise ValueError(
            f"register_shapes_coco('{name}'): need 0 < min_objects <= max_objects, got {min_objects}, {max_objects}"
        )
    if not 0 < object_size[0] <= object_size[1]:
        raise ValueError(f"register_shapes_coco('{name}'): object_size {object_size} must be positive and increasing")
    if min_area < 1:
        raise ValueError(f"register_shapes_coco('{name}'): min_area must be at least 1, got {min_area}")
    params = dict(num_images=num_images, seed=seed, image_size=image_size, min_objects=min_objects,
                  max_objects=max_objects, object_size=tuple(object_size), min_area=min_area)
    _register_generated(name, root, "shapes_coco", _GENERATOR_VERSION, params, _generate)
