"""Dataset loaders: COCO (instances, semantic label maps, panoptic), LVIS, PASCAL VOC and Cityscapes
(instances, label maps, panoptic) files, and the generated shapes datasets."""
from .cityscapes import load_cityscapes_instances, load_cityscapes_semantic
from .cityscapes_panoptic import load_cityscapes_panoptic
from .coco import convert_to_coco_dict, load_coco_json, load_sem_seg, register_coco_instances
from .coco_panoptic import load_coco_panoptic_json, merge_to_panoptic, register_coco_panoptic, register_coco_panoptic_separated
from .lvis import load_lvis_json, register_lvis_instances
from .pascal_voc import load_voc_instances, register_pascal_voc
from .shapes import SHAPES_CLASSES, datasets_root, mask_to_polygons, register_shapes, set_datasets_root
from .shapes_coco import register_shapes_coco
from .shapes_segmentation import register_shapes_panoptic_separated, register_shapes_sem_seg

__all__ = [
    "load_coco_json",
    "register_coco_instances",
    "convert_to_coco_dict",
    "load_sem_seg",
    "load_coco_panoptic_json",
    "register_coco_panoptic",
    "register_coco_panoptic_separated",
    "merge_to_panoptic",
    "register_shapes",
    "register_shapes_coco",
    "SHAPES_CLASSES",
    "datasets_root",
    "set_datasets_root",
    "mask_to_polygons",
    "register_shapes_sem_seg",
    "register_shapes_panoptic_separated",
    "load_lvis_json",
    "register_lvis_instances",
    "load_voc_instances",
    "register_pascal_voc",
    "load_cityscapes_instances",
    "load_cityscapes_semantic",
    "load_cityscapes_panoptic",
]
