"""Cityscapes' panoptic ground truth (Panoptic-DeepLab's data), at Detectron2's names and signatures.

The files are those cityscapesScripts' preparation/createPanopticImgs.py makes (with label ids as
category ids, its default) from the `*_gtFine_instanceIds.png` maps, beside Cityscapes' own:
    <cityscapes>/gtFine/cityscapes_panoptic_<split>.json
    <cityscapes>/gtFine/cityscapes_panoptic_<split>/<city>_<seq>_<frame>_gtFine_panoptic.png
in COCO's panoptic format: one segment per value of the instance map whose label is evaluated, its
id that value (label id, or label id * 1000 + k), encoded as a COCO panoptic PNG; the json's image
ids are "<city>_<seq>_<frame>". `instance_ids_to_panoptic` makes the same from one instance map
(tools/prepare_cityscapes.py writes the files with it).
"""
import os
from typing import Any, Dict, List, Tuple

import numpy as np

from ..catalog import DatasetCatalog, DatasetError, MetadataCatalog
from .builtin_meta import get_builtin_metadata
from .cityscapes import _ID_TO_LABEL, _cityscapes_images, cityscapes_gt_file
from .coco_panoptic import load_coco_panoptic_json

__all__ = ["load_cityscapes_panoptic", "register_all_cityscapes_panoptic", "instance_ids_to_panoptic"]

# name -> (image directory, panoptic PNG directory, panoptic json), relative to the datasets root.
# No test split: Cityscapes' test ground truth is not public (Detectron2 registers none either).
_RAW_CITYSCAPES_PANOPTIC_SPLITS = {
    f"cityscapes_fine_panoptic_{split}": (
        f"cityscapes/leftImg8bit/{split}",
        f"cityscapes/gtFine/cityscapes_panoptic_{split}",
        f"cityscapes/gtFine/cityscapes_panoptic_{split}.json",
    )
    for split in ("train", "val")
}


def _label_dir(image_dir: str) -> str:
    """Cityscapes' gtFine/<split> beside the images' leftImg8bit/<split>."""
    image_dir = os.path.normpath(image_dir)
    return os.path.join(os.path.dirname(os.path.dirname(image_dir)), "gtFine", os.path.basename(image_dir))


def load_cityscapes_panoptic(image_dir: str, gt_dir: str, gt_json: str, meta: Dict[str, Any]) -> List[Dict]:
    """The images of one split with their panoptic ground truth, in Detectron2's standard panoptic form.

    Args:
        image_dir: e.g. ".../cityscapes/leftImg8bit/train".
        gt_dir: the panoptic PNGs, e.g. ".../cityscapes/gtFine/cityscapes_panoptic_train".
        gt_json: e.g. ".../cityscapes/gtFine/cityscapes_panoptic_train.json".
        meta: thing_dataset_id_to_contiguous_id and stuff_dataset_id_to_contiguous_id, from the
            json's category ids (Cityscapes' label ids) to the model's classes.

    Returns:
        One dict per image of the json: "file_name", "image_id" ("<city>_<seq>_<frame>"), "height",
        "width", "sem_seg_file_name" (the image's `*_gtFine_labelTrainIds.png` in gtFine/<split>,
        beside image_dir's leftImg8bit/<split>), "pan_seg_file_name" and "segments_info" (the json's
        segments with "category_id" made contiguous and "isthing" added).
    """
    if not os.path.isfile(gt_json):
        raise DatasetError(f"Cityscapes panoptic json {gt_json} does not exist: make it with tools/prepare_cityscapes.py "
                           f"(or cityscapesScripts' preparation/createPanopticImgs.py)")
    label_dir = _label_dir(image_dir)
    images = {os.path.basename(f): f for f in _cityscapes_images(image_dir, label_dir, ("labelTrainIds.png",))}
    dicts = load_coco_panoptic_json(gt_json, image_dir, gt_dir, meta)
    for record in dicts:
        # the json names the images without their city folder
        name = os.path.basename(record["file_name"])
        if name not in images:
            raise DatasetError(f"{gt_json}: image {name} (image id {record['image_id']!r}) is not in {image_dir}/<city>/")
        record["file_name"] = images[name]
        record["sem_seg_file_name"] = cityscapes_gt_file(images[name], label_dir, "labelTrainIds.png")
    return dicts


def register_all_cityscapes_panoptic(root: str) -> None:
    """Registers `cityscapes_fine_panoptic_{train,val}` below `root` (Detectron2's layout, module
    docstring) with Panoptic-DeepLab's metadata: the 19 classes (train ids as contiguous ids),
    label_divisor 1000, ignore_label 255, panoptic_root, panoptic_json, gt_dir (gtFine/<split>, for
    the Cityscapes evaluators) and evaluator_type "cityscapes_panoptic_seg". A name already
    registered (the user's own dataset) is left as it is."""
    meta = get_builtin_metadata("cityscapes_panoptic")
    for name, (image_dir, gt_dir, gt_json) in _RAW_CITYSCAPES_PANOPTIC_SPLITS.items():
        if name in DatasetCatalog:
            continue
        image_dir, gt_dir, gt_json = (os.path.join(root, p) for p in (image_dir, gt_dir, gt_json))
        DatasetCatalog.register(name, lambda x=image_dir, y=gt_dir, z=gt_json: load_cityscapes_panoptic(x, y, z, meta))
        MetadataCatalog.get(name).set(
            panoptic_root=gt_dir, image_root=image_dir, panoptic_json=gt_json, gt_dir=_label_dir(image_dir),
            evaluator_type="cityscapes_panoptic_seg", ignore_label=255, label_divisor=1000, **meta,
        )


def instance_ids_to_panoptic(instance_ids: np.ndarray) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """The panoptic ground truth of one `*_gtFine_instanceIds.png` map `ndarray[H, W]`, as
    cityscapesScripts' createPanopticImgs.py makes it: each value whose label is evaluated is a
    segment with that value as its id; a value below 1000 of a label with instances (a "cargroup")
    is a crowd; the pixels of the other labels are VOID (0).

    Returns:
        The segment ids `ndarray[H, W]` int64 (0: VOID), and per segment in id order {"id",
        "category_id" (the label id), "area", "bbox" (XYWH, integer pixels), "iscrowd"}.

    Raises:
        ValueError: naming the first value that is neither a label id nor label id * 1000 + k.
    """
    segments = []
    for value in np.unique(instance_ids).tolist():
        label = _ID_TO_LABEL.get(value // 1000 if value >= 1000 else value)
        if label is None:
            raise ValueError(f"value {value} is neither a Cityscapes label id nor label id * 1000 + k")
        if label.ignore_in_eval:
            continue
        ys, xs = np.nonzero(instance_ids == value)
        segments.append({
            "id": value, "category_id": label.id, "area": len(xs),
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
            "iscrowd": int(value < 1000 and label.has_instances),
        })
    kept = np.isin(instance_ids, [s["id"] for s in segments])
    return np.where(kept, instance_ids, 0).astype(np.int64), segments
