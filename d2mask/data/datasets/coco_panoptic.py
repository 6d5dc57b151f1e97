"""COCO panoptic segmentation in Detectron2's "separated" form (Panoptic FPN's): instance annotations
from COCO's instances json, and a semantic label map per image in which every thing pixel is class 0
and the stuff classes are 1..K-1 (made from COCO's panoptic PNGs by Detectron2's
datasets/prepare_panoptic_fpn.py)."""
from typing import Any, Dict, List

from ..catalog import DatasetCatalog, DatasetError, MetadataCatalog
from .coco import load_coco_json, load_sem_seg

__all__ = ["register_coco_panoptic_separated", "merge_to_panoptic"]


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
        panoptic_root, panoptic_json: COCO's panoptic PNGs and json, kept in the metadata (d2mask
            does not compute PQ; docs/datasets.md).
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
