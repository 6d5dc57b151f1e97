"""LVIS instance annotations as dataset dicts. LVIS is COCO's images with other annotations: its
json has COCO's structure, but an image has a "coco_url" instead of a "file_name", and two lists
evaluation needs ("not_exhaustive_category_ids", "neg_category_ids").
"""
import json
import os
from typing import Any, Dict, List, Optional

from ...structures import BoxMode
from ..catalog import DatasetCatalog, DatasetError, MetadataCatalog

__all__ = ["load_lvis_json", "register_lvis_instances"]


def _file_name(image: Dict[str, Any], image_root: str) -> str:
    # ".../train2017/000000391895.jpg" lies at <image_root>/train2017/000000391895.jpg
    if "file_name" in image:
        return os.path.join(image_root, image["file_name"])
    split_dir, name = image["coco_url"].split("/")[-2:]
    return os.path.join(image_root, split_dir, name)


def load_lvis_json(json_file: str, image_root: str, dataset_name: Optional[str] = None,
                   extra_annotation_keys: Optional[List[str]] = None) -> List[Dict]:
    """Reads an LVIS json into dataset dicts; category ids map to contiguous ids in sorted order.

    Args:
        json_file: path of the LVIS json.
        image_root: the directory holding COCO's train2017/ and val2017/.
        dataset_name: if given, sets `thing_classes`, `thing_dataset_id_to_contiguous_id` and (when the
            categories have their "image_count") `class_image_count` in its metadata.
        extra_annotation_keys: further keys of each annotation to copy into its dict.
    """
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            data = json.load(f)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        images, annotations = data["images"], data.get("annotations", [])
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{json_file}: not an LVIS json ({type(e).__name__}: {e})") from None
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        meta.set(thing_classes=[c["name"] for c in categories], thing_dataset_id_to_contiguous_id=id_map)
        if all("image_count" in c for c in categories):  # the federated loss's class frequencies
            meta.set(class_image_count=[{"id": c["id"], "image_count": c["image_count"]} for c in categories])
    per_image: Dict[Any, List[Dict]] = {}
    for ann in annotations:
        obj = {"bbox": [float(v) for v in ann["bbox"]], "bbox_mode": BoxMode.XYWH_ABS,
               "category_id": id_map[ann["category_id"]]}
        if "segmentation" in ann:
            obj["segmentation"] = [poly for poly in ann["segmentation"] if len(poly) >= 6]
        obj.update({key: ann[key] for key in extra_annotation_keys or () if key in ann})
        per_image.setdefault(ann["image_id"], []).append(obj)
    return [
        {"file_name": _file_name(img, image_root), "height": img["height"], "width": img["width"],
         "image_id": img["id"], "not_exhaustive_category_ids": img.get("not_exhaustive_category_ids", []),
         "neg_category_ids": img.get("neg_category_ids", []), "annotations": per_image.get(img["id"], [])}
        for img in images
    ]


def register_lvis_instances(name: str, metadata: Dict[str, Any], json_file: str, image_root: str) -> None:
    """Registers an LVIS json as dataset `name` (read at each `DatasetCatalog.get`)."""
    DatasetCatalog.register(name, lambda: load_lvis_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="lvis", **metadata)
