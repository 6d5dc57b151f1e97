"""Semantic and panoptic views of a generated shapes dataset: the same images, with a label map per
image (one class per pixel) for `SemanticSegmentor` and `PanopticFPN`.

- `register_shapes_sem_seg`: classes background, circle, square, triangle (evaluator "sem_seg").
- `register_shapes_panoptic_separated`: the instances of the shapes dataset, plus a label map in
  Detectron2's "separated" panoptic form: 0 for every shape pixel ("things"), 1 for the background,
  the one stuff class; and its COCO panoptic ground truth (PNGs and json: a segment per shape and
  one for the background, of category id 4), in the dicts as Detectron2's standard form has it
  ("pan_seg_file_name", "segments_info"). Evaluator "coco_panoptic_seg": mIoU, box and mask AP, PQ.

The label maps and panoptic PNGs are drawn from the instance annotations, in their order (the
generator's drawing order), on first use into `<shapes dataset directory>/<kind>/` (`panoptic/` holds
the PNGs and `panoptic.json`): written into a temporary sibling and renamed into place, so an
interrupted run leaves nothing that looks complete. The shapes images and annotations themselves are
not touched.
"""
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, List

import cv2
import numpy as np

from ...structures import polygons_to_bitmask
from ..catalog import DatasetCatalog, MetadataCatalog
from .coco_panoptic import encode_panoptic_png, load_coco_panoptic_json
from .shapes import SHAPES_CLASSES

__all__ = ["register_shapes_sem_seg", "register_shapes_panoptic_separated", "SHAPES_SEM_SEG_CLASSES"]

SHAPES_SEM_SEG_CLASSES = ("background",) + SHAPES_CLASSES
# The label of pixels without a class; the shapes label maps have none, but the padding of a batch does.
_IGNORE_LABEL = 255
_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]
_PANOPTIC_JSON = "panoptic.json"


def _label_map(record: Dict, kind: str) -> np.ndarray:
    """`ndarray[H, W]` uint8 label map of one shapes dataset dict; `kind` "sem_seg" (0 background,
    1 + the shape's class) or "panoptic_stuff" (0 shapes, 1 background)."""
    labels = np.zeros((record["height"], record["width"]), dtype=np.uint8)
    if kind == "panoptic_stuff":
        labels[:] = 1
    for annotation in record.get("annotations", []):
        mask = polygons_to_bitmask([np.asarray(p) for p in annotation["segmentation"]], record["height"], record["width"])
        labels[mask] = annotation["category_id"] + 1 if kind == "sem_seg" else 0
    return labels


def _drawn_once(dicts: List[Dict], kind: str, draw: Callable[[str], None]) -> str:
    """`<shapes dataset directory>/<kind>/`, drawn by `draw(directory)` first if it is not there yet."""
    parent = os.path.dirname(os.path.dirname(dicts[0]["file_name"]))
    directory = os.path.join(parent, kind)
    if not os.path.isdir(directory):
        tmp = tempfile.mkdtemp(prefix=f".{kind}.tmp-", dir=parent)
        try:
            draw(tmp)
            try:
                os.rename(tmp, directory)
            except OSError:
                if not os.path.isdir(directory):
                    raise
                # Another process drew the same files first.
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _with_label_maps(dicts: List[Dict], kind: str) -> List[Dict]:
    """The shapes dataset dicts, each with the "sem_seg_file_name" of its label map of `kind`,
    drawing the label maps first if they are not there yet."""
    def draw(directory: str) -> None:
        for record in dicts:
            path = os.path.join(directory, os.path.basename(record["file_name"]))
            if not cv2.imwrite(path, _label_map(record, kind), _PNG_FAST):
                raise OSError(f"Cannot write label map {path}")

    directory = _drawn_once(dicts, kind, draw)
    return [dict(record, sem_seg_file_name=os.path.join(directory, os.path.basename(record["file_name"]))) for record in dicts]


def _panoptic_annotation(record: Dict, directory: str, thing_ids: Dict[int, int], background_id: int) -> Dict:
    """Writes the COCO panoptic PNG of one shapes dataset dict into `directory` and returns its json
    annotation: segment i + 1 for the i-th shape, then one for the background. `thing_ids` maps the
    contiguous class ids to dataset ids; `background_id` is the background's."""
    ids = np.full((record["height"], record["width"]), len(record["annotations"]) + 1, dtype=np.int64)
    categories = []
    for i, annotation in enumerate(record["annotations"]):
        mask = polygons_to_bitmask([np.asarray(p) for p in annotation["segmentation"]], record["height"], record["width"])
        ids[mask] = i + 1
        categories.append(thing_ids[annotation["category_id"]])
    categories.append(background_id)
    segments_info = []
    for segment_id, category in enumerate(categories, start=1):
        mask = ids == segment_id
        if mask.any():  # a shape drawn over entirely has no segment
            ys, xs = np.nonzero(mask)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            segments_info.append({"id": segment_id, "category_id": category, "iscrowd": 0, "area": int(mask.sum()), "bbox": bbox})
    file_name = os.path.basename(record["file_name"])
    with open(os.path.join(directory, file_name), "wb") as f:
        f.write(encode_panoptic_png(ids))
    return {"image_id": record["image_id"], "file_name": file_name, "segments_info": segments_info}


def _with_panoptic(dicts: List[Dict], metadata: Dict) -> List[Dict]:
    """The shapes dataset dicts, each with the "pan_seg_file_name" and "segments_info" of its COCO
    panoptic ground truth (`load_coco_panoptic_json`), drawing the PNGs and json first if they are not
    there yet."""
    thing_ids = {c: i for i, c in metadata["thing_dataset_id_to_contiguous_id"].items()}
    (background_id,) = (i for i, c in metadata["stuff_dataset_id_to_contiguous_id"].items() if c == 1)

    def draw(directory: str) -> None:
        data = {
            "images": [
                {"id": r["image_id"], "file_name": os.path.basename(r["file_name"]), "height": r["height"], "width": r["width"]}
                for r in dicts
            ],
            "annotations": [_panoptic_annotation(r, directory, thing_ids, background_id) for r in dicts],
            "categories": [{"id": i, "name": metadata["thing_classes"][c], "isthing": 1} for c, i in thing_ids.items()]
            + [{"id": background_id, "name": "background", "isthing": 0}],
        }
        with open(os.path.join(directory, _PANOPTIC_JSON), "w", encoding="utf-8") as f:
            json.dump(data, f)

    directory = _drawn_once(dicts, "panoptic", draw)
    image_dir = os.path.dirname(dicts[0]["file_name"])
    panoptic = load_coco_panoptic_json(os.path.join(directory, _PANOPTIC_JSON), image_dir, directory, metadata)
    by_file = {p["file_name"]: p for p in panoptic}
    return [dict(record, **by_file[record["file_name"]]) for record in dicts]


def register_shapes_sem_seg(name: str, shapes_name: str) -> None:
    """Registers `name`: the images of the shapes dataset `shapes_name` with label maps of classes
    background, circle, square, triangle, and no instance annotations."""
    def load() -> List[Dict]:
        dicts = _with_label_maps(DatasetCatalog.get(shapes_name), "sem_seg")
        return [{k: v for k, v in d.items() if k != "annotations"} for d in dicts]

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        stuff_classes=list(SHAPES_SEM_SEG_CLASSES), ignore_label=_IGNORE_LABEL, evaluator_type="sem_seg"
    )


def register_shapes_panoptic_separated(name: str, shapes_name: str) -> None:
    """Registers `name`: the shapes dataset `shapes_name` with its instances, a label map of stuff
    classes "things" (0) and "background" (1), and its COCO panoptic ground truth."""
    shapes = MetadataCatalog.get(shapes_name)
    background_id = max(shapes.thing_dataset_id_to_contiguous_id) + 1
    metadata = dict(
        thing_classes=list(shapes.thing_classes),
        thing_dataset_id_to_contiguous_id=dict(shapes.thing_dataset_id_to_contiguous_id),
        stuff_classes=["things", "background"],
        # dataset id 0 is the "things" class of the label maps, as in Detectron2's separated COCO metadata
        stuff_dataset_id_to_contiguous_id={0: 0, background_id: 1},
    )
    DatasetCatalog.register(
        name, lambda: _with_panoptic(_with_label_maps(DatasetCatalog.get(shapes_name), "panoptic_stuff"), metadata)
    )
    MetadataCatalog.get(name).set(ignore_label=_IGNORE_LABEL, evaluator_type="coco_panoptic_seg", **metadata)
