"""Cityscapes' fine annotations as dataset dicts, at Detectron2's names and signatures.

The layout is the one the dataset unpacks to:
    <image_dir>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <gt_dir>/<city>/<city>_<seq>_<frame>_gtFine_{polygons.json, instanceIds.png, labelIds.png, labelTrainIds.png}
with e.g. image_dir ".../cityscapes/leftImg8bit/val" and gt_dir ".../cityscapes/gtFine/val". The
labelTrainIds maps are made by cityscapesScripts' preparation/createTrainIdLabelImgs.py, or from the
labelIds maps by `label_ids_to_train_ids` (tools/prepare_cityscapes.py).

Labels, ids and the instance classes are those of `CITYSCAPES_LABELS`.
"""
import json
import logging
import multiprocessing as mp
import os
from functools import partial
from typing import Any, Dict, List, Tuple

import numpy as np
import pycocotools.mask as mask_util

from ...structures import BoxMode
from ...utils import comm
from ..catalog import DatasetError
from ..detection_utils import read_sem_seg
from .builtin_meta import CITYSCAPES_LABELS, CityscapesLabel
from .shapes import mask_to_polygons

__all__ = ["load_cityscapes_instances", "load_cityscapes_semantic", "cityscapes_gt_file", "label_ids_to_train_ids"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIX = "leftImg8bit.png"

_NAME_TO_LABEL = {label.name: label for label in CITYSCAPES_LABELS}
_ID_TO_LABEL = {label.id: label for label in CITYSCAPES_LABELS}
# label id -> contiguous id of the 8 instance classes (the metadata's thing_classes)
_THING_ID_TO_CONTIGUOUS = {
    label.id: i for i, label in enumerate(l for l in CITYSCAPES_LABELS if l.has_instances and not l.ignore_in_eval)
}
# the values below it are labels without instances (and filtering them first halves the time)
_FIRST_INSTANCE_ID = min(label.id for label in CITYSCAPES_LABELS if label.has_instances)
# label id -> train id (255: not trained on); the license plate (id -1) is never in a label map
_TRAIN_ID_OF_LABEL_ID = np.array([_ID_TO_LABEL[i].train_id for i in range(max(_ID_TO_LABEL) + 1)], dtype=np.uint8)


def cityscapes_gt_file(image_file: str, gt_dir: str, kind: str) -> str:
    """The annotation file of `kind` ("instanceIds.png", "labelIds.png", "labelTrainIds.png",
    "polygons.json") of a `*_leftImg8bit.png` image, in the same city folder below `gt_dir`."""
    city = os.path.basename(os.path.dirname(image_file))
    stem = os.path.basename(image_file)[: -len(IMAGE_SUFFIX)]
    return os.path.join(gt_dir, city, f"{stem}gtFine_{kind}")


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """The `*_gtFine_labelTrainIds.png` map of a `*_gtFine_labelIds.png` map `ndarray[H, W]`: each
    label's train id (0..18; 255 for the labels not trained on), `ndarray[H, W]` uint8. The same map
    as cityscapesScripts' createTrainIdLabelImgs.py paints from the polygons: both maps paint the same
    objects, in the same order.

    Raises:
        ValueError: naming the first value that is not a Cityscapes label id.
    """
    unknown = (label_ids < 0) | (label_ids >= len(_TRAIN_ID_OF_LABEL_ID))
    if unknown.any():
        raise ValueError(f"value {label_ids[unknown][0]} is not a Cityscapes label id (0..{len(_TRAIN_ID_OF_LABEL_ID) - 1})")
    return _TRAIN_ID_OF_LABEL_ID[label_ids]


def _cityscapes_images(image_dir: str, gt_dir: str, kinds: Tuple[str, ...]) -> List[str]:
    """The images below `image_dir`, sorted, after checking that each has its annotation files of `kinds`."""
    if not os.path.isdir(image_dir):
        raise DatasetError(f"Cityscapes image directory {image_dir} does not exist")
    images = []
    for city in sorted(os.listdir(image_dir)):
        for name in sorted(os.listdir(os.path.join(image_dir, city))):
            if not name.endswith(IMAGE_SUFFIX):
                raise DatasetError(f"{os.path.join(image_dir, city, name)}: expected only *_{IMAGE_SUFFIX} images in "
                                   f"Cityscapes' <image_dir>/<city>/ folders")
            images.append(os.path.join(image_dir, city, name))
    if not images:
        raise DatasetError(f"No Cityscapes images in {image_dir}: expected <city>/*_{IMAGE_SUFFIX}")
    for image in images:
        for kind in kinds:
            gt_file = cityscapes_gt_file(image, gt_dir, kind)
            if not os.path.isfile(gt_file):
                hint = (" (made by tools/prepare_cityscapes.py or cityscapesScripts' preparation/createTrainIdLabelImgs.py)"
                        if kind == "labelTrainIds.png" else "")
                raise DatasetError(f"Cityscapes annotation {gt_file} of image {image} does not exist{hint}")
    logger.info(f"{len(images)} Cityscapes images in {image_dir}")
    return images


def load_cityscapes_instances(image_dir: str, gt_dir: str, from_json: bool = True, to_polygons: bool = True) -> List[Dict]:
    """The images of one split with their instances of the 8 instance classes.

    Args:
        image_dir: e.g. ".../cityscapes/leftImg8bit/train".
        gt_dir: e.g. ".../cityscapes/gtFine/train".
        from_json: read the annotators' polygons (`*_gtFine_polygons.json`; needs shapely) rather than
            the instance maps (`*_gtFine_instanceIds.png`).
        to_polygons: give each instance's "segmentation" as polygons rather than as an RLE; only
            polygons can be read from the json files.

    Returns:
        Dataset dicts with "file_name", "image_id" (the image's file name), "height", "width" and
        "annotations" with "category_id" (the index in the metadata's thing_classes), "iscrowd",
        "bbox" (`BoxMode.XYXY_ABS`) and "segmentation". From the json files the instances are the
        polygons minus those drawn after them (Cityscapes paints later polygons over earlier ones),
        each grown by half a pixel to cover the pixels Cityscapes' rasterisation gives it; groups
        ("cargroup", ...) are crowds. From the instance maps an instance is each value
        label id * 1000 + k, a crowd each value that is a bare label id, and instances one pixel
        wide or tall are left out, as in Detectron2.
    """
    if from_json and not to_polygons:
        raise ValueError("load_cityscapes_instances: the json annotations are polygons; from_json=True needs to_polygons=True")
    if from_json:
        _import_shapely()  # fail here with one line, not in each worker
    kind = "polygons.json" if from_json else "instanceIds.png"
    images = _cityscapes_images(image_dir, gt_dir, (kind,))
    if from_json:
        load_one = partial(_instances_from_json, gt_dir=gt_dir)
    else:
        load_one = partial(_instances_from_png, gt_dir=gt_dir, to_polygons=to_polygons)
    processes = min(len(images), (os.cpu_count() or 1) // comm.get_world_size() // 2)
    if processes > 1:  # the polygon operations take a few minutes for the train split in one process
        with mp.Pool(processes) as pool:
            return pool.map(load_one, images, chunksize=8)
    return [load_one(image) for image in images]


def load_cityscapes_semantic(image_dir: str, gt_dir: str) -> List[Dict]:
    """The images of one split with their `*_gtFine_labelTrainIds.png` label maps (train ids 0..18,
    255 for pixels not evaluated).

    Returns:
        Dataset dicts with "file_name", "sem_seg_file_name", "height" and "width".
    """
    records = []
    for image in _cityscapes_images(image_dir, gt_dir, ("labelTrainIds.png", "polygons.json")):
        polygons = _read_json(cityscapes_gt_file(image, gt_dir, "polygons.json"))
        records.append({"file_name": image, "sem_seg_file_name": cityscapes_gt_file(image, gt_dir, "labelTrainIds.png"),
                        "height": polygons["imgHeight"], "width": polygons["imgWidth"]})
    return records


def _read_json(json_file: str) -> Dict[str, Any]:
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{json_file}: not a readable Cityscapes polygons file ({e})") from None
    missing = [key for key in ("imgHeight", "imgWidth", "objects") if key not in data]
    if missing:
        raise DatasetError(f"{json_file}: no {', '.join(missing)} in this Cityscapes polygons file")
    return data


def _import_shapely():
    try:
        import shapely.geometry
    except ImportError:
        raise ImportError("Reading Cityscapes' polygon files needs shapely: pip install shapely "
                          "(or load_cityscapes_instances(..., from_json=False) to read the instance maps)") from None
    return shapely.geometry


def _label_named(name: str, json_file: str) -> CityscapesLabel:
    """The label of an object's "label"; "<label>group" names a crowd of that label."""
    label = _NAME_TO_LABEL.get(name)
    if label is None and name.endswith("group"):
        label = _NAME_TO_LABEL.get(name[: -len("group")])
    if label is None:
        raise DatasetError(f"{json_file}: object label '{name}' is not a Cityscapes label")
    return label


def _instances_from_json(image: str, gt_dir: str) -> Dict:
    geometry = _import_shapely()
    json_file = cityscapes_gt_file(image, gt_dir, "polygons.json")
    data = _read_json(json_file)
    annotations = []
    covered = geometry.Polygon()  # what the objects after the current one paint over
    for obj in reversed(data["objects"]):
        if "deleted" in obj:
            continue
        label = _label_named(obj["label"], json_file)
        if label.id < 0:  # license plates: never drawn
            continue
        try:
            # Cityscapes' vertices are integer pixel indices and its rasteriser takes the pixels whose
            # centres are inside: +0.5 puts the vertices at pixel centres, the 0.5 buffer then adds the
            # half pixel around them that those pixels cover.
            polygon = geometry.Polygon(np.asarray(obj["polygon"], dtype=np.float64) + 0.5).buffer(0.5, resolution=4)
        except (ValueError, TypeError, KeyError) as e:
            raise DatasetError(f"{json_file}: an object '{obj['label']}' has no valid 'polygon' ({e})") from None
        visible = polygon.difference(covered)
        covered = covered.union(polygon)
        if not label.has_instances or label.ignore_in_eval:
            continue
        # The difference may hold lines and points where polygons touch; only areas are kept.
        parts = [g for g in getattr(visible, "geoms", [visible]) if isinstance(g, geometry.Polygon) and not g.is_empty]
        if not parts:
            continue
        x0, y0, x1, y1 = geometry.MultiPolygon(parts).bounds
        annotations.append({
            "iscrowd": int(obj["label"].endswith("group")),
            "category_id": _THING_ID_TO_CONTIGUOUS[label.id],
            # exterior rings only: holes cannot be expressed in COCO's polygon format
            "segmentation": [np.asarray(p.exterior.coords).reshape(-1).tolist() for p in parts],
            "bbox": [x0, y0, x1, y1],
            "bbox_mode": BoxMode.XYXY_ABS,
        })
    return {"file_name": image, "image_id": os.path.basename(image), "height": data["imgHeight"],
            "width": data["imgWidth"], "annotations": annotations}


def _instances_from_png(image: str, gt_dir: str, to_polygons: bool) -> Dict:
    instance_file = cityscapes_gt_file(image, gt_dir, "instanceIds.png")
    ids = read_sem_seg(instance_file).astype(np.int64)
    annotations = []
    for instance_id in np.unique(ids[ids >= _FIRST_INSTANCE_ID]).tolist():
        label = _ID_TO_LABEL.get(instance_id // 1000 if instance_id >= 1000 else instance_id)
        if label is None:
            raise DatasetError(f"{instance_file}: value {instance_id} is neither a Cityscapes label id nor id * 1000 + k")
        if not label.has_instances or label.ignore_in_eval:
            continue
        mask = ids == instance_id
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        if x1 == x0 or y1 == y0:
            continue
        if to_polygons:
            segmentation = [p.tolist() for p in mask_to_polygons(mask)]
            if not segmentation:
                continue
        else:
            segmentation = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
        annotations.append({
            "iscrowd": int(instance_id < 1000),
            "category_id": _THING_ID_TO_CONTIGUOUS[label.id],
            "segmentation": segmentation,
            "bbox": [float(x0), float(y0), float(x1 + 1), float(y1 + 1)],  # pixel (x, y) covers [x, x + 1]
            "bbox_mode": BoxMode.XYXY_ABS,
        })
    return {"file_name": image, "image_id": os.path.basename(image), "height": ids.shape[0], "width": ids.shape[1],
            "annotations": annotations}
