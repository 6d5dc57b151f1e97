"""Dataset loaders: COCO, LVIS and PASCAL VOC files, and the generated shapes dataset."""
from .coco import convert_to_coco_dict, load_coco_json, register_coco_instances
from .lvis import load_lvis_json, register_lvis_instances
from .pascal_voc import load_voc_instances, register_pascal_voc
from .shapes import SHAPES_CLASSES, datasets_root, mask_to_polygons, register_shapes, set_datasets_root

__all__ = [
    "load_coco_json",
    "register_coco_instances",
    "convert_to_coco_dict",
    "register_shapes",
    "SHAPES_CLASSES",
    "datasets_root",
    "set_datasets_root",
    "mask_to_polygons",
    "load_lvis_json",
    "register_lvis_instances",
    "load_voc_instances",
    "register_pascal_voc",
]
