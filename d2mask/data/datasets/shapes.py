"""The built-in "shapes" dataset: generated images of circles, squares and triangles, no download.

Each image has a random background colour and a few shapes of random size, rotation, colour and
position, drawn one over another so that they partly overlap. An annotation's mask is the visible
part of its shape; its polygons trace that mask's pixel outline, so that rasterising them (as
pycocotools does) gives back the mask.

With `keypoints=True` ("shapes_keypoints_train/val"), the same images' annotations also have 4
keypoints, named by the direction they lie in from the shape's centre (`SHAPES_KEYPOINT_NAMES`, each
direction a 90-degree sector): a square's 4 corners, a triangle's 3 corners (the fourth keypoint
unlabelled), a circle's 4 extreme points. A keypoint covered by a later shape is labelled occluded
(visibility 1). A horizontal flip swaps "left" and "right".

The files (PNGs and a COCO json) are generated on first use into
`<root>/shapes/<name>-<fingerprint>/`, where root is `datasets_root()` (read at call time) and the fingerprint hashes the generator's parameters, so a changed
parameter never reuses stale files. Generation writes into a temporary sibling directory and renames
it into place with a completion marker inside: a crashed or interrupted run leaves nothing that
looks complete and is simply redone.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ...structures import polygons_to_bitmask
from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json

__all__ = [
    "register_shapes",
    "SHAPES_CLASSES",
    "SHAPES_KEYPOINT_NAMES",
    "datasets_root",
    "set_datasets_root",
    "mask_to_polygons",
]

logger = logging.getLogger(__name__)

SHAPES_CLASSES = ("circle", "square", "triangle")
SHAPES_KEYPOINT_NAMES = ("top", "right", "bottom", "left")
_KEYPOINT_METADATA = dict(
    keypoint_names=list(SHAPES_KEYPOINT_NAMES),
    keypoint_flip_map=[["left", "right"]],
    keypoint_connection_rules=[
        ["top", "right", [255, 140, 40]], ["right", "bottom", [40, 160, 255]],
        ["bottom", "left", [40, 220, 120]], ["left", "top", [200, 80, 220]],
    ],
)
# Bump when the generator's output changes, so existing caches are regenerated.
_GENERATOR_VERSION = 1
_MARKER = "COMPLETE"
_JSON_NAME = "annotations.json"
_IMAGE_DIR = "images"
_PLACEMENT_TRIES = 30
# A temporary directory this old is from a generation that died; younger ones may still be running.
_STALE_TMP_SECONDS = 3600
# Least IoU between a mask and the rasterised polygons of its outline; thin slivers left by
# occlusion fall below it, and the placement that made them is retried.
_MIN_POLYGON_IOU = 0.95
_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]


# Set by `set_datasets_root` (a run's DATASETS.ROOT); None falls back to the environment.
_root: Optional[str] = None


def set_datasets_root(root: Optional[str]) -> None:
    """Makes `root` the directory built-in datasets are cached in, for this process; None or ""
    returns to the environment (see `datasets_root`). `default_setup` passes DATASETS.ROOT here.
    Detectron2's datasets (COCO, LVIS, VOC) are registered again below the new root."""
    global _root
    _root = root or None
    from .builtin import register_file_datasets  # builtin imports this module

    register_file_datasets()


def datasets_root() -> str:
    """The directory built-in datasets are cached in: the one given to `set_datasets_root`, else
    `$D2MASK_DATASETS`, else Detectron2's `$DETECTRON2_DATASETS`, else ~/.cache/d2mask."""
    env = os.environ.get("D2MASK_DATASETS") or os.environ.get("DETECTRON2_DATASETS")
    return os.path.expanduser(_root or env or "~/.cache/d2mask")


def mask_to_polygons(mask: np.ndarray) -> List[np.ndarray]:
    """The outline of a bool mask as polygons whose rasterisation reproduces the mask.

    `cv2.findContours` gives the centres of the boundary pixels; pixel (x, y) covers
    [x, x + 1] x [y, y + 1], so each vertex is moved to the pixel centre and then half a pixel outward
    along its edges (a mitred offset), which puts the outline on the mask's outer pixel edges.

    Args:
        mask: `ndarray[H, W]` bool.

    Returns:
        Flat float64 arrays [x0, y0, x1, y1, ...], one per connected component with >= 3 vertices.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.float64)  # (P, 1, 2) -> (P, 2)
        if len(points) < 3:
            continue
        x, y = points[:, 0], points[:, 1]
        orientation = 1.0 if np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) > 0 else -1.0
        normals = []
        for edges in (points - np.roll(points, 1, axis=0), np.roll(points, -1, axis=0) - points):
            normal = orientation * np.stack([edges[:, 1], -edges[:, 0]], axis=1)
            normals.append(normal / np.linalg.norm(normal, axis=1, keepdims=True))
        # Mitre offset of length 0.5 / cos(half the turn); the clamp bounds it at one-pixel spikes.
        cos_turn = np.maximum(1.0 + np.sum(normals[0] * normals[1], axis=1, keepdims=True), 0.5)
        outline = points + 0.5 + 0.5 * (normals[0] + normals[1]) / cos_turn
        polygons.append(outline.reshape(-1))
    return polygons


def _polygons_fit(mask: np.ndarray, polygons: List[np.ndarray]) -> bool:
    if not polygons:
        return False
    raster = polygons_to_bitmask(polygons, *mask.shape)
    return (raster & mask).sum() >= _MIN_POLYGON_IOU * (raster | mask).sum()


def _sector_keypoints(cx: float, cy: float, points: np.ndarray) -> np.ndarray:
    """`ndarray[4, 3]`: (x, y, 1) of each of `points` (`[P, 2]`, at least 90 degrees apart around
    (cx, cy)) in the row of its direction's sector, top/right/bottom/left; (0, 0, 0) in empty rows."""
    dx, dy = points[:, 0] - cx, points[:, 1] - cy
    bearing = np.degrees(np.arctan2(dx, -dy))  # clockwise from up; y points down
    sectors = (np.floor((bearing + 45) / 90).astype(int)) % 4
    keypoints = np.zeros((len(SHAPES_KEYPOINT_NAMES), 3))
    keypoints[sectors, :2] = points
    keypoints[sectors, 2] = 1
    return keypoints


def _random_shape(
    rng: np.random.Generator, image_size: int, object_size: Tuple[int, int]
) -> Tuple[int, np.ndarray, np.ndarray]:
    """One shape placed fully inside the image: (class index, `ndarray[S, S]` bool mask, its keypoints
    `ndarray[4, 3]` (x, y, labelled) in OpenCV's pixel coordinates, where pixel i is centred on i)."""
    kind = int(rng.integers(len(SHAPES_CLASSES)))
    radius = rng.uniform(*object_size) / 2  # of the shape's circumscribed circle
    cx, cy = rng.uniform(radius, image_size - radius, size=2)
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    scale = 16  # cv2 draws with 4 fractional bits, so sub-pixel positions are kept
    if SHAPES_CLASSES[kind] == "circle":
        cv2.circle(mask, (round(cx * scale), round(cy * scale)), round(radius * scale), 1, -1, cv2.LINE_8, 4)
        vertices = np.array([[cx, cy - radius], [cx + radius, cy], [cx, cy + radius], [cx - radius, cy]])
    else:
        corners = 4 if SHAPES_CLASSES[kind] == "square" else 3
        angles = rng.uniform(0, 2 * np.pi) + np.arange(corners) * 2 * np.pi / corners
        vertices = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(vertices * scale).astype(np.int32)], 1, cv2.LINE_8, 4)
    # computed from the draws above, drawing nothing more: the images are the same with or without keypoints
    return kind, mask.astype(bool), _sector_keypoints(cx, cy, vertices)


def _random_colour(rng: np.random.Generator, avoid: List[np.ndarray], min_distance: float) -> np.ndarray:
    colour = rng.integers(0, 256, size=3)
    for _ in range(20):
        if all(np.linalg.norm(colour - other) >= min_distance for other in avoid):
            break
        colour = rng.integers(0, 256, size=3)
    return colour


def _generate_image(
    rng: np.random.Generator, image_size: int, num_objects: int, object_size: Tuple[int, int], max_occlusion: float
) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """One image (`ndarray[S, S, 3]` uint8 RGB) and its objects: class, visible mask, polygons."""
    background = _random_colour(rng, [], 0)
    objects: List[Dict[str, Any]] = []
    for _ in range(num_objects):
        for _ in range(_PLACEMENT_TRIES):
            kind, full, keypoints = _random_shape(rng, image_size, object_size)
            # The new shape goes on top: every shape it overlaps keeps only its still-visible part.
            changed = {}
            for i, obj in enumerate(objects):
                if (obj["visible"] & full).any():
                    visible = obj["visible"] & ~full
                    polygons = mask_to_polygons(visible)
                    if visible.sum() < (1 - max_occlusion) * obj["full_area"] or not _polygons_fit(visible, polygons):
                        break
                    changed[i] = (visible, polygons)
            else:
                polygons = mask_to_polygons(full)
                if not _polygons_fit(full, polygons):
                    continue
                for i, (visible, polys) in changed.items():
                    objects[i].update(visible=visible, polygons=polys)
                colour = _random_colour(rng, [background] + [o["colour"] for o in objects], 90)
                objects.append(dict(kind=kind, visible=full, polygons=polygons, full_area=full.sum(), colour=colour,
                                    full=full, keypoints=keypoints))
                break
    image = np.empty((image_size, image_size, 3), dtype=np.uint8)
    image[:] = background
    for obj in objects:
        image[obj["visible"]] = obj["colour"]
    return image, objects


def _keypoints_with_visibility(obj: Dict[str, Any]) -> List[float]:
    """COCO's flat keypoints of one object: visibility 2, or 1 where a later shape covers the shape
    around the keypoint (within a pixel), 0 for an unlabelled one."""
    keypoints = obj["keypoints"].copy()
    occluded = obj["full"] & ~obj["visible"]
    height, width = occluded.shape
    for k in np.flatnonzero(keypoints[:, 2] > 0):
        x = min(max(round(keypoints[k, 0]), 0), width - 1)
        y = min(max(round(keypoints[k, 1]), 0), height - 1)
        keypoints[k, 2] = 1 if occluded[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].any() else 2
    return np.round(keypoints, 2).flatten().tolist()


def _generate(directory: str, *, num_images: int, seed: int, image_size: int, min_objects: int, max_objects: int,
              object_size: Tuple[int, int], max_occlusion: float, keypoints: bool = False) -> None:
    """Writes `num_images` PNGs and their COCO json into `directory`."""
    os.makedirs(os.path.join(directory, _IMAGE_DIR))
    images, annotations = [], []
    for index in range(num_images):
        # One generator per image, so image i depends only on (seed, i).
        rng = np.random.default_rng([seed, index])
        num_objects = int(rng.integers(min_objects, max_objects + 1))
        image, objects = _generate_image(rng, image_size, num_objects, object_size, max_occlusion)
        file_name = f"{index:06d}.png"
        cv2.imwrite(os.path.join(directory, _IMAGE_DIR, file_name), image[:, :, ::-1], _PNG_FAST)  # RGB -> BGR
        images.append({"id": index + 1, "file_name": file_name, "height": image_size, "width": image_size})
        for obj in objects:
            xs = np.flatnonzero(obj["visible"].any(axis=0))
            ys = np.flatnonzero(obj["visible"].any(axis=1))
            x0, y0 = int(xs[0]), int(ys[0])
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": index + 1,
                "category_id": obj["kind"] + 1,
                "bbox": [x0, y0, int(xs[-1]) + 1 - x0, int(ys[-1]) + 1 - y0],
                "area": int(obj["visible"].sum()),
                "segmentation": [np.round(p, 2).tolist() for p in obj["polygons"]],
                "iscrowd": 0,
            })
            if keypoints:
                annotations[-1]["keypoints"] = _keypoints_with_visibility(obj)
                annotations[-1]["num_keypoints"] = int(obj["keypoints"][:, 2].sum())
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPES_CLASSES)]
    with open(os.path.join(directory, _JSON_NAME), "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def _fingerprint(version: int, params: Dict[str, Any]) -> str:
    """A short hash of a generator's version and parameters, which names its cache directory."""
    return hashlib.sha1(json.dumps([version, params], sort_keys=True).encode()).hexdigest()[:10]


def _register_generated(
    name: str, root: Optional[str], kind: str, version: int, params: Dict[str, Any],
    generate: Callable[..., None], **metadata: Any,
) -> None:
    """Registers `name` as the COCO-format dataset that `generate(directory, **params)` writes
    (annotations.json and images/), generated on the first load and cached under
    `<root>/<kind>/<name>-<fingerprint>`; the metadata is the shapes' classes plus `metadata`."""
    fingerprint = _fingerprint(version, params)

    def load() -> List[Dict]:
        directory = os.path.join(root or datasets_root(), kind, f"{name}-{fingerprint}")
        _ensure_generated(directory, params, generate)
        return load_coco_json(os.path.join(directory, _JSON_NAME), os.path.join(directory, _IMAGE_DIR), name)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        thing_classes=list(SHAPES_CLASSES),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPES_CLASSES))},
        evaluator_type="coco",
        **metadata,
    )


def _ensure_generated(directory: str, params: Dict[str, Any], generate: Callable[..., None]) -> None:
    """Runs `generate(directory, **params)` unless a complete dataset is there already."""
    marker = os.path.join(directory, _MARKER)
    if os.path.isfile(marker):
        return
    parent, base = os.path.split(directory)
    os.makedirs(parent, exist_ok=True)
    start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    try:
        generate(os.path.join(tmp, "data"), **params)
        with open(os.path.join(tmp, "data", _MARKER), "w", encoding="utf-8") as f:
            json.dump(params, f)
        if os.path.isdir(directory) and not os.path.isfile(marker):
            shutil.rmtree(directory)  # left by a generation that did not finish
        try:
            os.rename(os.path.join(tmp, "data"), directory)
        except OSError:
            if not os.path.isfile(marker):
                raise
            # Another process finished the same dataset first; its copy is identical.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"Generated {params['num_images']} shapes images into {directory} "
                f"in {time.perf_counter() - start:.1f}s")
    for entry in os.listdir(parent):
        path = os.path.join(parent, entry)
        if entry.startswith(f".{base}.tmp-") and time.time() - os.path.getmtime(path) > _STALE_TMP_SECONDS:
            shutil.rmtree(path, ignore_errors=True)


def register_shapes(
    name: str,
    root: Optional[str] = None,
    *,
    num_images: int,
    seed: int,
    image_size: int = 256,
    min_objects: int = 2,
    max_objects: int = 6,
    object_size: Tuple[int, int] = (32, 96),
    max_occlusion: float = 0.3,
    keypoints: bool = False,
) -> None:
    """Registers a generated shapes dataset as `name`; its files are made on the first `DatasetCatalog.get`.

    Args:
        name: the dataset's name.
        root: cache directory; None uses `datasets_root()` when the dataset is loaded. Files go to `<root>/shapes/<name>-<fingerprint>/`.
        num_images: how many images.
        seed: images are a deterministic function of (seed, image index).
        image_size: side of the square images in pixels.
        min_objects, max_objects: objects per image, drawn uniformly (fewer when no placement
            satisfying `max_occlusion` is found, e.g. in very crowded settings).
        object_size: range of the shapes' outer diameters in pixels.
        max_occlusion: largest fraction of a shape that later shapes may cover.
        keypoints: annotate each shape's keypoints too (module docstring), and set the metadata
            keypoint models need (keypoint_names, keypoint_flip_map, keypoint_connection_rules).
    """
    if not 0 < min_objects <= max_objects:
        raise ValueError(
            f"register_shapes('{name}'): need 0 < min_objects <= max_objects, got {min_objects}, {max_objects}"
        )
    if not 0 < object_size[0] <= object_size[1] < image_size:
        raise ValueError(f"register_shapes('{name}'): object_size {object_size} must be increasing and "
                         f"smaller than image_size {image_size}")
    params = dict(num_images=num_images, seed=seed, image_size=image_size, min_objects=min_objects,
                  max_objects=max_objects, object_size=tuple(object_size), max_occlusion=max_occlusion)
    if keypoints:  # only then a parameter: the datasets without keypoints keep their fingerprints
        params["keypoints"] = True
    _register_generated(name, root, "shapes", _GENERATOR_VERSION, params, _generate,
                        **(_KEYPOINT_METADATA if keypoints else {}))
