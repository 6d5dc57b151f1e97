"""COCO instance annotations: reading a json into dataset dicts, and writing dataset dicts back as COCO.

Nothing in a json is trusted. A file that is not COCO (not JSON, a missing top-level key, a record
without a required field) is an error naming the file and the first bad record. Annotations that are
well-formed but unusable are dropped, and the log says how many for each reason and the id of the
first. A file is an error, raised as `DatasetError`, or not at all: nothing else escapes.
"""
import contextlib
import io
import json
import logging
import math
import os
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

from ...structures import BoxMode
from ..catalog import DatasetCatalog, DatasetError, MetadataCatalog

__all__ = ["load_coco_json", "register_coco_instances", "convert_to_coco_dict", "load_sem_seg"]

logger = logging.getLogger(__name__)

_TOP_LEVEL_KEYS = ("images", "annotations", "categories")
# Field -> accepted types, per kind of record. bool is excluded separately (it is an int in Python).
_REQUIRED_FIELDS = {
    "images": {"id": (int, str), "file_name": (str,), "height": (int,), "width": (int,)},
    "annotations": {"id": (int, str), "image_id": (int, str), "category_id": (int,), "bbox": (list,)},
    "categories": {"id": (int,), "name": (str,)},
}

# Reasons an annotation is dropped, as they appear in the log.
_UNKNOWN_IMAGE = "refer to an image id not in 'images'"
_UNKNOWN_CATEGORY = "refer to a category id not in 'categories'"
_BAD_BOX = "have a box of non-positive width or height"
_BAD_POLYGON = "have no valid polygon (every polygon has < 3 points)"
# Far above any annotator's polygon; each one is transformed and rasterised every time it is sampled.
MAX_POLYGON_POINTS = 50_000
_BIG_POLYGON = f"have a polygon of more than {MAX_POLYGON_POINTS} points"
_RLE_SIZE = "have an RLE whose size differs from its image's"
_RLE_COUNTS = "have an uncompressed RLE whose counts do not add up to height x width"


def _read_json(json_file: str) -> Dict[str, Any]:
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO json file not found: {json_file}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{json_file} is not a valid JSON file: {e}") from None
    except RecursionError:
        raise DatasetError(f"{json_file} is not a COCO json: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: a COCO json must hold an object with keys {list(_TOP_LEVEL_KEYS)}, "
                           f"got a {type(data).__name__}")
    # COCO's image-info files of its test sets (image_info_test2017.json) have no "annotations"
    missing = [k for k in _TOP_LEVEL_KEYS if k not in data and k != "annotations"]
    data.setdefault("annotations", [])
    if missing:
        raise DatasetError(f"{json_file}: missing top-level key(s) {missing}; a COCO json has "
                           f"{list(_TOP_LEVEL_KEYS)} (found {sorted(data)})")
    return data


def _bad_record(json_file: str, kind: str, index: int, record: Any, problem: str) -> DatasetError:
    return DatasetError(f"{json_file}: {kind}[{index}] {problem}. The record: {json.dumps(record)[:300]}")


def _validate_records(json_file: str, data: Dict[str, Any]) -> None:
    """Raises on the first record lacking a required field or holding one of the wrong type."""
    for kind, fields in _REQUIRED_FIELDS.items():
        records = data[kind]
        if not isinstance(records, list):
            raise DatasetError(f"{json_file}: '{kind}' must be a list, got a {type(records).__name__}")
        seen_ids = set()
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise _bad_record(json_file, kind, i, record, "is not an object")
            for field, types in fields.items():
                if field not in record:
                    raise _bad_record(json_file, kind, i, record, f"has no '{field}'")
                value = record[field]
                if isinstance(value, bool) or not isinstance(value, types):
                    expected = " or ".join(t.__name__ for t in types)
                    raise _bad_record(json_file, kind, i, record, f"has '{field}' = {value!r}, expected {expected}")
            if record["id"] in seen_ids:
                raise _bad_record(json_file, kind, i, record, f"repeats the id {record['id']!r}")
            seen_ids.add(record["id"])
            if kind == "images" and (record["height"] <= 0 or record["width"] <= 0):
                raise _bad_record(json_file, kind, i, record, "has a non-positive height or width")
            if kind == "annotations":
                _validate_annotation(json_file, i, record)


def _validate_annotation(json_file: str, index: int, ann: Dict[str, Any]) -> None:
    bbox = ann["bbox"]
    if len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise _bad_record(json_file, "annotations", index, ann, "has a 'bbox' that is not 4 numbers [x, y, w, h]")
    if ann.get("iscrowd", 0) not in (0, 1):
        raise _bad_record(json_file, "annotations", index, ann, "has an 'iscrowd' other than 0 or 1")
    keypoints = ann.get("keypoints")
    if keypoints is not None and (
        not isinstance(keypoints, list) or len(keypoints) % 3 or not all(_is_number(v) for v in keypoints)
    ):
        raise _bad_record(json_file, "annotations", index, ann,
                          "has 'keypoints' that are not a flat list of numbers (x, y, visibility) per keypoint")
    segm = ann.get("segmentation")
    if segm is None:
        return
    if isinstance(segm, list):
        for polygon in segm:
            if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
                raise _bad_record(json_file, "annotations", index, ann,
                                  "has a 'segmentation' polygon that is not a flat list of numbers")
    elif isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise _bad_record(json_file, "annotations", index, ann, "has an RLE without a 'size' [height, width]")
        if not (isinstance(counts, str) or (isinstance(counts, list) and all(_is_count(v) for v in counts))):
            raise _bad_record(json_file, "annotations", index, ann,
                              "has an RLE whose 'counts' is neither a string nor a list of non-negative ints")
    else:
        raise _bad_record(json_file, "annotations", index, ann,
                          "has a 'segmentation' that is neither a list of polygons nor an RLE object")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    # json reads NaN, Infinity and ints of any size; boxes or polygons of them would poison the losses
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _is_count(value: Any) -> bool:
    # pycocotools keeps RLE counts as unsigned 32-bit integers
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def _clean_segmentation(segm: Any, height: int, width: int) -> Tuple[Any, Optional[str]]:
    """Returns (usable segmentation, None) or (None, reason to drop the annotation)."""
    if isinstance(segm, list):
        if any(len(p) > 2 * MAX_POLYGON_POINTS for p in segm):
            return None, _BIG_POLYGON
        polygons = [p for p in segm if len(p) >= 6 and len(p) % 2 == 0]
        return (polygons, None) if polygons else (None, _BAD_POLYGON)
    if list(segm["size"]) != [height, width]:
        return None, _RLE_SIZE
    if isinstance(segm["counts"], list):
        if sum(segm["counts"]) != height * width:
            return None, _RLE_COUNTS
        # Compressed from here on, so downstream code meets one RLE flavour.
        segm = mask_util.frPyObjects(segm, height, width)
    return segm, None


def load_coco_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    extra_annotation_keys: Optional[List[str]] = None,
) -> List[Dict]:
    """Reads a COCO instances json into dataset dicts (the format described in `d2mask.data.catalog`).

    Category ids are mapped to contiguous ids 0..K-1 in the order of the sorted dataset ids.
    Polygons with < 3 points are removed from their annotation; annotations then left without any
    polygon, with a non-positive box size, a wrong-sized RLE, or an unknown image or category id are
    dropped and counted in a warning. Images without annotations are kept.
    Keypoints ("keypoints", when the annotation has a non-empty list) become continuous coordinates:
    COCO's integer pixel indices plus 0.5, as in Detectron2.

    Raises:
        FileNotFoundError: there is no `json_file`.
        DatasetError: the file is not a COCO instances json; the message names the first bad record.

    Args:
        json_file: path of the json.
        image_root: directory the images' "file_name"s are relative to.
        dataset_name: if given, sets `thing_classes` and `thing_dataset_id_to_contiguous_id` in
            this dataset's metadata.
        extra_annotation_keys: further keys of each json annotation to copy, where present, into
            its dict (e.g. PointSup's "point_coords", "point_labels").

    Returns:
        One dict per image, in the json's order; uncompressed RLEs are converted to compressed ones.
    """
    data = _read_json(json_file)
    _validate_records(json_file, data)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()

    category_ids = sorted(coco.cats)
    id_map = {cat_id: i for i, cat_id in enumerate(category_ids)}
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(
            thing_classes=[coco.cats[c]["name"] for c in category_ids], thing_dataset_id_to_contiguous_id=id_map
        )

    dropped: Counter = Counter()
    first_dropped: Dict[str, Any] = {}  # reason -> id of the first annotation dropped for it
    num_kept = 0
    dataset_dicts = []
    for img in data["images"]:
        record = {
            "file_name": os.path.join(image_root, img["file_name"]),
            "height": img["height"],
            "width": img["width"],
            "image_id": img["id"],
            "annotations": [],
        }
        for ann in coco.imgToAnns.get(img["id"], []):
            obj, reason = _to_instance(ann, id_map, img["height"], img["width"], extra_annotation_keys or ())
            if reason is not None:
                dropped[reason] += 1
                first_dropped.setdefault(reason, ann["id"])
                continue
            record["annotations"].append(obj)
        num_kept += len(record["annotations"])
        dataset_dicts.append(record)

    image_ids = set(coco.imgs)
    unknown_image = [ann["id"] for ann in data["annotations"] if ann["image_id"] not in image_ids]
    dropped[_UNKNOWN_IMAGE] = len(unknown_image)
    if unknown_image:
        first_dropped[_UNKNOWN_IMAGE] = unknown_image[0]
    dropped = +dropped  # drops zero counts
    if dropped:
        reasons = "; ".join(f"{n} {reason} (first: id {first_dropped[reason]!r})" for reason, n in dropped.items())
        logger.warning(f"{json_file}: dropped {sum(dropped.values())} of {len(data['annotations'])} "
                       f"annotations: {reasons}")
    logger.info(f"Loaded {len(dataset_dicts)} images with {num_kept} annotations from {json_file}")
    return dataset_dicts


def _to_instance(
    ann: Dict, id_map: Dict[int, int], height: int, width: int, extra_keys: Sequence[str]
) -> Tuple[Optional[Dict], Optional[str]]:
    if ann["category_id"] not in id_map:
        return None, _UNKNOWN_CATEGORY
    if ann["bbox"][2] <= 0 or ann["bbox"][3] <= 0:
        return None, _BAD_BOX
    obj = {
        "bbox": [float(v) for v in ann["bbox"]],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": id_map[ann["category_id"]],
        "iscrowd": int(ann.get("iscrowd", 0)),
    }
    if "segmentation" in ann:
        segm, reason = _clean_segmentation(ann["segmentation"], height, width)
        if reason is not None:
            return None, reason
        obj["segmentation"] = segm
    if ann.get("keypoints"):
        obj["keypoints"] = _keypoints_from_json(ann["keypoints"])
    obj.update({key: ann[key] for key in extra_keys if key in ann})
    return obj, None


def register_coco_instances(name: str, metadata: Dict[str, Any], json_file: str, image_root: str) -> None:
    """Registers a COCO instances json as dataset `name` (read lazily, at each `DatasetCatalog.get`).

    Args:
        name: the dataset's name, e.g. "my_train".
        metadata: extra metadata (may be empty); thing_classes are read from the json.
        json_file: path of the COCO instances json.
        image_root: directory the images' "file_name"s are relative to.
    """
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata)


def convert_to_coco_dict(dataset_name: str) -> Dict[str, Any]:
    """The registered dataset `dataset_name` as a COCO instances dict (for pycocotools' evaluation).

    Category ids go back to the dataset's own ids when its metadata has
    `thing_dataset_id_to_contiguous_id`; otherwise they stay contiguous.
    """
    dataset_dicts = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    classes = metadata.get("thing_classes")
    if classes is None:
        raise ValueError(f"Dataset '{dataset_name}' has no 'thing_classes' in its metadata; cannot write it as COCO")
    id_map = metadata.get("thing_dataset_id_to_contiguous_id") or {i: i for i in range(len(classes))}
    to_dataset_id = {contiguous: dataset_id for dataset_id, contiguous in id_map.items()}

    images, annotations = [], []
    for record in dataset_dicts:
        height, width = record["height"], record["width"]
        images.append({"id": record["image_id"], "width": width, "height": height, "file_name": record["file_name"]})
        for obj in record.get("annotations", []):
            bbox = [float(v) for v in BoxMode.convert(list(obj["bbox"]), obj["bbox_mode"], BoxMode.XYWH_ABS)]
            ann = {
                "id": len(annotations) + 1,  # pycocotools treats id 0 as "no match"
                "image_id": record["image_id"],
                "category_id": to_dataset_id[obj["category_id"]],
                "bbox": bbox,
                "iscrowd": int(obj.get("iscrowd", 0)),
                "area": bbox[2] * bbox[3],
            }
            segm = obj.get("segmentation")
            if segm is not None:
                ann["segmentation"], ann["area"] = _segmentation_as_json(segm, height, width)
            if "keypoints" in obj:
                ann["keypoints"], ann["num_keypoints"] = _keypoints_as_json(obj["keypoints"])
            annotations.append(ann)
    categories = [{"id": to_dataset_id[i], "name": name} for i, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _keypoints_from_json(keypoints: List[float]) -> List[float]:
    """COCO's keypoints as continuous coordinates: COCO gives integer pixel indices in [0, W - 1], where
    boxes and polygons are continuous in [0, W]; pixel i covers [i, i + 1), so a labelled keypoint
    moves to i + 0.5. Unlabelled ones stay (0, 0, 0)."""
    flat = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    flat[flat[:, 2] > 0, :2] += 0.5
    return flat.flatten().tolist()


def _keypoints_as_json(keypoints: Any) -> Tuple[List[float], int]:
    """Keypoints (x, y, visibility) in COCO's flat form with COCO's integer pixel coordinates (the
    loader's + 0.5 undone), and the number of labelled ones."""
    flat = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    labelled = flat[:, 2] > 0
    flat[labelled, :2] -= 0.5
    return flat.flatten().tolist(), int(labelled.sum())


def _segmentation_as_json(segm: Any, height: int, width: int) -> Tuple[Any, float]:
    """A segmentation in a json-serialisable form, and the area of its mask in pixels."""
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in segm], height, width))
        return [[float(v) for v in p] for p in segm], float(mask_util.area(rle))
    if isinstance(segm, dict):
        if isinstance(segm["counts"], list):
            segm = mask_util.frPyObjects(segm, height, width)
        counts = segm["counts"]
        rle = {"size": list(segm["size"]), "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        return rle, float(mask_util.area(segm))
    mask = np.asfortranarray(np.asarray(segm, dtype=np.uint8))  # a bitmask array
    rle = mask_util.encode(mask)
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}, float(mask.sum())


def load_sem_seg(gt_root: str, image_root: str, gt_ext: str = "png", image_ext: str = "jpg") -> List[Dict[str, Any]]:
    """Dataset dicts of a semantic-segmentation dataset stored as two directories: images, and
    label maps (one class id per pixel) of the same names, e.g. `image_root/0001.jpg` with
    `gt_root/0001.png`. Images without a label map and label maps without an image are left out,
    and the log says how many.

    Args:
        gt_root: directory of the label maps, files ending in `gt_ext`.
        image_root: directory of the images, files ending in `image_ext`.

    Returns:
        One dict per image, sorted by name: {"file_name", "sem_seg_file_name"}. No file is read.
    """
    def stems(root: str, ext: str) -> Dict[str, str]:
        if not os.path.isdir(root):
            raise DatasetError(f"load_sem_seg: directory {root} does not exist")
        return {f[: -len(ext)].rstrip("."): f for f in os.listdir(root) if f.endswith(ext)}

    gts, images = stems(gt_root, gt_ext), stems(image_root, image_ext)
    if not gts:
        raise DatasetError(f"load_sem_seg: no label maps (*{gt_ext}) in {gt_root}")
    common = sorted(gts.keys() & images.keys())
    if len(common) != len(gts) or len(common) != len(images):
        logger.warning(
            f"{image_root} has {len(images)} *{image_ext} images and {gt_root} {len(gts)} *{gt_ext} label maps; "
            f"using the {len(common)} names found in both"
        )
    logger.info(f"Loaded {len(common)} images with semantic segmentation from {image_root}")
    return [
        {"file_name": os.path.join(image_root, images[k]), "sem_seg_file_name": os.path.join(gt_root, gts[k])}
        for k in common
    ]
