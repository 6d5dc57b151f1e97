"""COCO panoptic segmentation, in Detectron2's two forms.

- "Standard" (`register_coco_panoptic`, Panoptic-DeepLab's): COCO's panoptic PNGs, one segment id
  per pixel encoded in its colour (`read_panoptic_png`), and a json that gives each segment's
  category; one dict per image with "pan_seg_file_name" and "segments_info".
- "Separated" (`register_coco_panoptic_separated`, Panoptic FPN's): instance annotations from COCO's
  instances json, and a semantic label map per image in which every thing pixel is class 0 and the
  stuff classes are 1..K-1 (made from COCO's panoptic PNGs by Detectron2's
  datasets/prepare_panoptic_fpn.py).

Both are evaluated by their metadata's evaluator_type "coco_panoptic_seg" (COCOPanopticEvaluator
computes PQ against panoptic_json and panoptic_root).
"""
import json
import os
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from ..catalog import DatasetCatalog, DatasetError, MetadataCatalog
from ..detection_utils import read_image
from .coco import _bad_record, _read_json, load_coco_json, load_sem_seg

__all__ = [
    "load_coco_panoptic_json",
    "register_coco_panoptic",
    "register_coco_panoptic_separated",
    "merge_to_panoptic",
    "read_panoptic_png",
    "encode_panoptic_png",
]

# A pixel of a COCO panoptic PNG holds the id R + 256 G + 256^2 B of its segment; 0 is VOID (no segment).
_ID_WEIGHTS = np.array([1, 256, 256 * 256], dtype=np.int64)


def read_panoptic_png(file_name: str) -> np.ndarray:
    """`ndarray[H, W]` int64 segment ids of a COCO panoptic PNG (0: VOID)."""
    return read_image(file_name, format="RGB").astype(np.int64) @ _ID_WEIGHTS


def encode_panoptic_png(segment_ids: np.ndarray) -> bytes:
    """`segment_ids` (`ndarray[H, W]`, integers in [0, 256^3)) as a COCO panoptic PNG file's bytes."""
    ids = segment_ids.astype(np.int64)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // (256 * 256)], axis=-1).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", rgb[:, :, ::-1])  # OpenCV writes BGR
    if not ok:
        raise OSError("OpenCV could not encode a panoptic PNG")
    return encoded.tobytes()


def load_coco_panoptic_json(json_file: str, image_dir: str, gt_dir: str, meta: Dict[str, Any]) -> List[Dict]:
    """Detectron2's standard-form dataset dicts of a COCO panoptic json.

    Args:
        json_file: the panoptic json, e.g. "coco/annotations/panoptic_train2017.json".
        image_dir: directory of the images (named by the json's "images").
        gt_dir: directory of the panoptic PNGs (named by the json's "annotations").
        meta: thing_dataset_id_to_contiguous_id and stuff_dataset_id_to_contiguous_id.

    Returns:
        One dict per annotated image: "file_name", "image_id", "height" and "width" (where the json's
        image has them), "pan_seg_file_name", and "segments_info", the json's segments with "category_id" made
        contiguous and "isthing" added.

    Raises:
        FileNotFoundError: there is no `json_file`.
        DatasetError: naming the file and record: a record without its fields, an image or category
            id the json or `meta` does not know, or no annotation at all.
    """
    data = _read_json(json_file)
    things, stuff = meta["thing_dataset_id_to_contiguous_id"], meta.get("stuff_dataset_id_to_contiguous_id", {})
    images = {img.get("id"): img for img in data["images"]}
    dicts = []
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not {"image_id", "file_name", "segments_info"} <= set(ann):
            raise _bad_record(json_file, "annotations", index, ann, "lacks 'image_id', 'file_name' or 'segments_info'")
        image = images.get(ann["image_id"])
        if image is None:
            raise _bad_record(json_file, "annotations", index, ann, f"refers to image id {ann['image_id']!r}, not in 'images'")
        segments = []
        for segment in ann["segments_info"]:
            category = segment.get("category_id")
            if category not in things and category not in stuff:
                raise _bad_record(json_file, "annotations", index, ann, f"has a segment of category id {category!r}, "
                                  f"in neither thing_ nor stuff_dataset_id_to_contiguous_id of the metadata")
            isthing = category in things
            segments.append(dict(segment, category_id=(things if isthing else stuff)[category], isthing=isthing))
        dicts.append({
            "file_name": os.path.join(image_dir, image["file_name"]),
            "image_id": ann["image_id"],
            **{key: image[key] for key in ("height", "width") if key in image},
            "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
            "segments_info": segments,
        })
    if not dicts:
        raise DatasetError(f"{json_file} has no panoptic annotations")
    return dicts


def register_coco_panoptic(
    name: str,
    metadata: Dict[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    instances_json: Optional[str] = None,
) -> None:
    """Registers `name`, COCO panoptic in the standard form (`load_coco_panoptic_json`), with
    evaluator_type "coco_panoptic_seg", ignore_label 255 and label_divisor 1000 (a model's
    category * label_divisor + instance ids, as Panoptic-DeepLab predicts them).

    Args:
        name: e.g. "coco_2017_train_panoptic".
        metadata: thing_ and stuff_classes with their dataset_id_to_contiguous_id maps.
        image_root: directory of the images.
        panoptic_root, panoptic_json: COCO's panoptic PNGs and json.
        instances_json: COCO's instances json of the same images (the metadata's json_file), or None.
    """
    DatasetCatalog.register(name, lambda: load_coco_panoptic_json(panoptic_json, image_root, panoptic_root, metadata))
    MetadataCatalog.get(name).set(
        panoptic_root=panoptic_root, image_root=image_root, panoptic_json=panoptic_json, json_file=instances_json,
        evaluator_type="coco_panoptic_seg", ignore_label=255, label_divisor=1000, **metadata,
    )


def register_coco_panoptic_separated(
    name: str,
    metadata: Dict[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: str,
) -> None:
    """Registers `name + "_separated"`, dicts with both "annotations" (from `instances_json`) and
    "sem_seg_file_name" (from `sem_seg_root`), evaluated by its metadata's evaluator_type
    "coco_panoptic_seg"; and `name + "_stuffonly"`, the label maps alone (evaluator_type "sem_seg").

    Args:
        name: the prefix, e.g. "coco_2017_train_panoptic".
        metadata: extra metadata: thing_classes and stuff_classes with their id maps.
        image_root: directory of the images.
        panoptic_root, panoptic_json: COCO's panoptic PNGs and json, the ground truth of PQ.
        sem_seg_root: directory of the semantic label maps (PNG, named as the images).
        instances_json: COCO's instances json of the same images.
    """
    panoptic_name = name + "_separated"
    DatasetCatalog.register(
        panoptic_name,
        lambda: merge_to_panoptic(load_coco_json(instances_json, image_root, panoptic_name), load_sem_seg(sem_seg_root, image_root)),
    )
    MetadataCatalog.get(panoptic_name).set(
        panoptic_root=panoptic_root, image_root=image_root, panoptic_json=panoptic_json, sem_seg_root=sem_seg_root,
        json_file=instances_json, evaluator_type="coco_panoptic_seg", ignore_label=255, **metadata,
    )
    semantic_name = name + "_stuffonly"
    DatasetCatalog.register(semantic_name, lambda: load_sem_seg(sem_seg_root, image_root))
    MetadataCatalog.get(semantic_name).set(
        sem_seg_root=sem_seg_root, image_root=image_root, evaluator_type="sem_seg", ignore_label=255, **metadata
    )


def merge_to_panoptic(detection_dicts: List[Dict], sem_seg_dicts: List[Dict]) -> List[Dict]:
    """The detection dicts, each completed with the fields of the semantic-segmentation dict of the
    same "file_name"; a DatasetError names the first image that has none."""
    by_file = {d["file_name"]: d for d in sem_seg_dicts}
    merged = []
    for det in detection_dicts:
        if det["file_name"] not in by_file:
            raise DatasetError(f"merge_to_panoptic: image {det['file_name']} has no semantic label map "
                               f"({len(by_file)} label maps found)")
        merged.append({**det, **by_file[det["file_name"]]})
    return merged
