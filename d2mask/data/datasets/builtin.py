"""Registers the datasets that come with d2mask, and Detectron2's built-in dataset names; imported
by `d2mask.data`.

"shapes_coco_train" and "shapes_coco_val" are the main job's (configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml):
shapes in cluttered, textured scenes with COCO's mix of sizes, occlusion and visible-part masks
(shapes_coco.py). "shapes_train" and "shapes_val" are the simple shapes the other quick starts and
many tests train on: plain colours, few and mostly medium-sized shapes. Generating each pair takes a
few seconds. "shapes_sem_seg_train/val" and "shapes_train/val_panoptic_separated" are their
semantic and panoptic views (the same images, with label maps);
"shapes_keypoints_train/val" the same images with keypoints on the shapes.

COCO ("coco_2017_train", ...; COCO panoptic as "coco_2017_train_panoptic" (the standard form),
"coco_2017_train_panoptic_separated" and "..._stuffonly"), LVIS v1, PASCAL VOC and Cityscapes
("cityscapes_fine_instance_seg_train", "cityscapes_fine_sem_seg_val", "cityscapes_fine_panoptic_val",
...) are registered under
Detectron2's names and relative paths below `datasets_root()` (DATASETS.ROOT, else `$D2MASK_DATASETS`, else
`$DETECTRON2_DATASETS`, else ~/.cache/d2mask), with their metadata, so that a model trained on them
can be run and drawn without their files. Their files are only needed when a dataset is loaded; a
missing one then stops the run with its expected path and the settings that move it.
"""
import os
from typing import Callable, Dict, List, Sequence

from ..catalog import DatasetCatalog, DatasetError, MetadataCatalog
from .builtin_meta import _get_builtin_metadata, get_builtin_metadata  # noqa: F401 (Detectron2's import path)
from .cityscapes import load_cityscapes_instances, load_cityscapes_semantic
from .cityscapes_panoptic import _RAW_CITYSCAPES_PANOPTIC_SPLITS, register_all_cityscapes_panoptic
from .coco import register_coco_instances
from .coco_panoptic import register_coco_panoptic, register_coco_panoptic_separated
from .lvis import register_lvis_instances
from .pascal_voc import register_pascal_voc
from .shapes import datasets_root, register_shapes
from .shapes_coco import register_shapes_coco
from .shapes_segmentation import register_shapes_panoptic_separated, register_shapes_sem_seg

__all__ = [
    "register_all_builtins", "register_all_coco", "register_all_coco_panoptic", "register_all_lvis", "register_all_pascal_voc",
    "register_all_cityscapes",
]

# name -> (image directory, annotation json), relative to the datasets root (Detectron2's layout).
_PREDEFINED_SPLITS_COCO = {
    "coco_2014_train": ("coco/train2014", "coco/annotations/instances_train2014.json"),
    "coco_2014_val": ("coco/val2014", "coco/annotations/instances_val2014.json"),
    "coco_2014_minival": ("coco/val2014", "coco/annotations/instances_minival2014.json"),
    "coco_2014_valminusminival": ("coco/val2014", "coco/annotations/instances_valminusminival2014.json"),
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
    "coco_2017_test": ("coco/test2017", "coco/annotations/image_info_test2017.json"),
    "coco_2017_test-dev": ("coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
    "coco_2017_val_100": ("coco/val2017", "coco/annotations/instances_val2017_100.json"),
}

# COCO's person keypoints: the images of COCO, the annotations of its persons with their keypoints.
_PREDEFINED_SPLITS_COCO_PERSON = {
    "keypoints_coco_2014_train": ("coco/train2014", "coco/annotations/person_keypoints_train2014.json"),
    "keypoints_coco_2014_val": ("coco/val2014", "coco/annotations/person_keypoints_val2014.json"),
    "keypoints_coco_2014_minival": ("coco/val2014", "coco/annotations/person_keypoints_minival2014.json"),
    "keypoints_coco_2014_valminusminival": (
        "coco/val2014", "coco/annotations/person_keypoints_valminusminival2014.json"
    ),
    "keypoints_coco_2017_train": ("coco/train2017", "coco/annotations/person_keypoints_train2017.json"),
    "keypoints_coco_2017_val": ("coco/val2017", "coco/annotations/person_keypoints_val2017.json"),
    "keypoints_coco_2017_val_100": ("coco/val2017", "coco/annotations/person_keypoints_val2017_100.json"),
}

# prefix -> (panoptic PNG directory, panoptic json, semantic label-map directory), relative to the
# datasets root; the images and instances json are those of the COCO split without "_panoptic".
# The label maps are made by Detectron2's datasets/prepare_panoptic_fpn.py.
_PREDEFINED_SPLITS_COCO_PANOPTIC = {
    "coco_2017_train_panoptic": ("coco/panoptic_train2017", "coco/annotations/panoptic_train2017.json", "coco/panoptic_stuff_train2017"),
    "coco_2017_val_panoptic": ("coco/panoptic_val2017", "coco/annotations/panoptic_val2017.json", "coco/panoptic_stuff_val2017"),
    "coco_2017_val_100_panoptic": ("coco/panoptic_val2017_100", "coco/annotations/panoptic_val2017_100.json", "coco/panoptic_stuff_val2017_100"),
}

_PREDEFINED_SPLITS_LVIS = {
    "lvis_v1_train": ("coco/", "lvis/lvis_v1_train.json"),
    "lvis_v1_val": ("coco/", "lvis/lvis_v1_val.json"),
    "lvis_v1_test_dev": ("coco/", "lvis/lvis_v1_image_info_test_dev.json"),
    "lvis_v1_test_challenge": ("coco/", "lvis/lvis_v1_image_info_test_challenge.json"),
}

# name -> (directory, split, year)
_PREDEFINED_SPLITS_VOC = {
    f"voc_{year}_{split}": (f"VOC{year}", split, year)
    for year in (2007, 2012)
    for split in ("trainval", "train", "val", "test")
    if not (year == 2012 and split == "test")  # VOC2012's test annotations were never released
}

# name (with {task} "instance_seg" or "sem_seg") -> (image directory, annotation directory)
_RAW_CITYSCAPES_SPLITS = {
    f"cityscapes_fine_{{task}}_{split}": (f"cityscapes/leftImg8bit/{split}", f"cityscapes/gtFine/{split}")
    for split in ("train", "val", "test")
}

# name -> the function registered for it below the current root; registered again when the root
# changes, unless the user has registered something else under the name meanwhile.
_FILE_DATASETS: Dict[str, Callable[[], List[Dict]]] = {}


def _require_file(name: str, paths: Sequence[str], load: Callable[[], List[Dict]]) -> Callable[[], List[Dict]]:
    def checked() -> List[Dict]:
        path = next((p for p in paths if not os.path.exists(p)), None)
        if path is not None:
            raise DatasetError(
                f"Built-in dataset '{name}' expects {path}, which does not exist: put the dataset there "
                f"(Detectron2's layout), or set DATASETS.ROOT, $D2MASK_DATASETS or $DETECTRON2_DATASETS "
                f"to the directory that holds it"
            )
        return load()

    return checked


def _guard(name: str, *paths: str) -> None:
    """Makes loading the just-registered dataset `name` stop with one line when one of `paths` is missing."""
    checked = _require_file(name, paths, DatasetCatalog[name])
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, checked)
    _FILE_DATASETS[name] = checked


def register_all_coco(root: str) -> None:
    for dataset_type, splits in (("coco", _PREDEFINED_SPLITS_COCO), ("coco_person", _PREDEFINED_SPLITS_COCO_PERSON)):
        for name, (image_root, json_file) in splits.items():
            if name in DatasetCatalog:  # the user's own dataset of that name
                continue
            json_file = os.path.join(root, json_file)
            metadata = get_builtin_metadata(dataset_type)
            register_coco_instances(name, metadata, json_file, os.path.join(root, image_root))
            _guard(name, json_file)


def register_all_coco_panoptic(root: str) -> None:
    """COCO panoptic in Detectron2's standard form (`<prefix>`) and separated form (`<prefix>_separated`,
    `<prefix>_stuffonly`)."""
    for prefix, (panoptic_root, panoptic_json, sem_seg_root) in _PREDEFINED_SPLITS_COCO_PANOPTIC.items():
        image_root, instances_json = (os.path.join(root, p) for p in _PREDEFINED_SPLITS_COCO[prefix[: -len("_panoptic")]])
        panoptic_root, panoptic_json = os.path.join(root, panoptic_root), os.path.join(root, panoptic_json)
        if prefix not in DatasetCatalog:  # else the user's own dataset of that name
            register_coco_panoptic(
                prefix, get_builtin_metadata("coco_panoptic_standard"), image_root, panoptic_root, panoptic_json, instances_json
            )
            _guard(prefix, panoptic_json, panoptic_root)
        names = (prefix + "_separated", prefix + "_stuffonly")
        if any(n in DatasetCatalog for n in names):
            continue
        sem_seg_root = os.path.join(root, sem_seg_root)
        register_coco_panoptic_separated(
            prefix, get_builtin_metadata("coco_panoptic_separated"), image_root, panoptic_root, panoptic_json,
            sem_seg_root, instances_json,
        )
        _guard(names[0], instances_json, sem_seg_root)
        _guard(names[1], sem_seg_root)


def register_all_lvis(root: str) -> None:
    for name, (image_root, json_file) in _PREDEFINED_SPLITS_LVIS.items():
        if name in DatasetCatalog:  # the user's own dataset of that name
            continue
        json_file = os.path.join(root, json_file)
        register_lvis_instances(name, {}, json_file, os.path.join(root, image_root))
        _guard(name, json_file)


def register_all_pascal_voc(root: str) -> None:
    for name, (dirname, split, year) in _PREDEFINED_SPLITS_VOC.items():
        if name in DatasetCatalog:  # the user's own dataset of that name
            continue
        dirname = os.path.join(root, dirname)
        register_pascal_voc(name, dirname, split, year)
        MetadataCatalog.get(name).set(thing_colors=get_builtin_metadata("pascal_voc")["thing_colors"])
        _guard(name, os.path.join(dirname, "ImageSets", "Main", f"{split}.txt"))


def register_all_cityscapes(root: str) -> None:
    """Cityscapes' fine annotations: instances from the polygon files (evaluator_type
    "cityscapes_instance"), the train-id label maps (evaluator_type "cityscapes_sem_seg") and the
    panoptic ground truth (`register_all_cityscapes_panoptic`, evaluator_type "cityscapes_panoptic_seg")."""
    meta = get_builtin_metadata("cityscapes")
    for key, (image_dir, gt_dir) in _RAW_CITYSCAPES_SPLITS.items():
        image_dir, gt_dir = os.path.join(root, image_dir), os.path.join(root, gt_dir)
        instance_name, semantic_name = key.format(task="instance_seg"), key.format(task="sem_seg")
        if instance_name not in DatasetCatalog:  # else the user's own dataset of that name
            DatasetCatalog.register(instance_name, lambda x=image_dir, y=gt_dir: load_cityscapes_instances(x, y))
            MetadataCatalog.get(instance_name).set(
                image_dir=image_dir, gt_dir=gt_dir, evaluator_type="cityscapes_instance", **meta
            )
            _guard(instance_name, image_dir, gt_dir)
        if semantic_name not in DatasetCatalog:
            DatasetCatalog.register(semantic_name, lambda x=image_dir, y=gt_dir: load_cityscapes_semantic(x, y))
            MetadataCatalog.get(semantic_name).set(
                image_dir=image_dir, gt_dir=gt_dir, evaluator_type="cityscapes_sem_seg", ignore_label=255, **meta
            )
            _guard(semantic_name, image_dir, gt_dir)
    panoptic_names = [name for name in _RAW_CITYSCAPES_PANOPTIC_SPLITS if name not in DatasetCatalog]
    register_all_cityscapes_panoptic(root)
    for name in panoptic_names:
        # the dataset's own files; its loader names the prepared files (json, label maps) that are missing
        _guard(name, MetadataCatalog.get(name).image_root, MetadataCatalog.get(name).gt_dir)


def register_file_datasets() -> None:
    """(Re-)registers COCO, LVIS, VOC and Cityscapes below the current `datasets_root()`. A name the user has
    registered again (after removing ours) keeps the user's dataset."""
    for name, func in _FILE_DATASETS.items():
        if DatasetCatalog.data.get(name) is func:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    _FILE_DATASETS.clear()
    root = datasets_root()
    register_all_coco(root)
    register_all_coco_panoptic(root)
    register_all_lvis(root)
    register_all_pascal_voc(root)
    register_all_cityscapes(root)


def register_all_builtins() -> None:
    register_shapes_coco("shapes_coco_train", num_images=500, seed=1)
    register_shapes_coco("shapes_coco_val", num_images=50, seed=2)
    register_shapes("shapes_train", num_images=500, seed=1)
    register_shapes("shapes_val", num_images=50, seed=2)
    for split in ("train", "val"):
        register_shapes_sem_seg(f"shapes_sem_seg_{split}", f"shapes_{split}")
        register_shapes_panoptic_separated(f"shapes_{split}_panoptic_separated", f"shapes_{split}")
    # the same images, with keypoints (configs/Shapes/keypoint_rcnn_R_18_FPN_shapes.yaml)
    register_shapes("shapes_keypoints_train", num_images=500, seed=1, keypoints=True)
    register_shapes("shapes_keypoints_val", num_images=50, seed=2, keypoints=True)
    register_file_datasets()
