"""Semantic and panoptic views of a generated shapes dataset: the same images, with a label map per
image (one class per pixel) for `SemanticSegmentor` and `PanopticFPN`.

- `register_shapes_sem_seg`: classes background, circle, square, triangle (evaluator "sem_seg").
- `register_shapes_panoptic_separated`: the instances of the shapes dataset, plus a label map in
  Detectron2's "separated" panoptic form: 0 for every shape pixel ("things"), 1 for the background,
  the one stuff class (evaluator "coco_panoptic_seg": mIoU, box and mask AP).

The label maps are drawn from the instance annotations, in their order (the generator's drawing
order), on first use into `<shapes dataset directory>/<kind>/`: written into a temporary sibling and
renamed into place, so an interrupted run leaves nothing that looks complete. The shapes images and
annotations themselves are not touched.
"""
import os
import shutil
import tempfile
from typing import Dict, List

import cv2
import numpy as np

from ...structures import polygons_to_bitmask
from ..catalog import DatasetCatalog, MetadataCatalog
from .shapes import SHAPES_CLASSES

__all__ = ["register_shapes_sem_seg", "register_shapes_panoptic_separated", "SHAPES_SEM_SEG_CLASSES"]

SHAPES_SEM_SEG_CLASSES = ("background",) + SHAPES_CLASSES
# The label of pixels without a class; the shapes label maps have none, but the padding of a batch does.
_IGNORE_LABEL = 255
_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]


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


def _with_label_maps(dicts: List[Dict], kind: str) -> List[Dict]:
    """The shapes dataset dicts, each with the "sem_seg_file_name" of its label map of `kind`,
    drawing the label maps first if they are not there yet."""
    image_dir = os.path.dirname(dicts[0]["file_name"])
    directory = os.path.join(os.path.dirname(image_dir), kind)
    if not os.path.isdir(directory):
        tmp = tempfile.mkdtemp(prefix=f".{kind}.tmp-", dir=os.path.dirname(image_dir))
        try:
            for record in dicts:
                name = os.path.basename(record["file_name"])
                if not cv2.imwrite(os.path.join(tmp, name), _label_map(record, kind), _PNG_FAST):
                    raise OSError(f"Cannot write label map {os.path.join(tmp, name)}")
            try:
                os.rename(tmp, directory)
            except OSError:
                if not os.path.isdir(directory):
                    raise
                # Another process drew the same label maps first.
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [dict(record, sem_seg_file_name=os.path.join(directory, os.path.basename(record["file_name"]))) for record in dicts]


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
    """Registers `name`: the shapes dataset `shapes_name` with its instances and a label map of
    stuff classes "things" (0) and "background" (1)."""
    DatasetCatalog.register(name, lambda: _with_label_maps(DatasetCatalog.get(shapes_name), "panoptic_stuff"))
    shapes = MetadataCatalog.get(shapes_name)
    MetadataCatalog.get(name).set(
        thing_classes=list(shapes.thing_classes),
        thing_dataset_id_to_contiguous_id=dict(shapes.thing_dataset_id_to_contiguous_id),
        stuff_classes=["things", "background"],
        ignore_label=_IGNORE_LABEL,
        evaluator_type="coco_panoptic_seg",
    )
