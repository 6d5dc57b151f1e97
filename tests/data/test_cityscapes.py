"""Cityscapes' loaders on a one-image split written by hand (tests.common.write_cityscapes_tree): the
instances from the polygon files and from the instance maps, the label maps, the built-in names."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from matplotlib.path import Path

from d2mask.data import DatasetCatalog, DatasetError, MetadataCatalog
from d2mask.data.datasets import load_cityscapes_instances, load_cityscapes_semantic, set_datasets_root
from d2mask.structures import BoxMode
from tests.common import CITYSCAPES_STEM, cityscapes_instance_ids, write_cityscapes_tree

PERSON, CAR = 0, 2  # indices in thing_classes
# (category, iscrowd, XYXY box) in the loaders' order
EXPECTED = {
    "json": [(CAR, 1, [14, 8, 18, 11]), (PERSON, 0, [6, 0, 13, 12]), (CAR, 0, [2, 2, 6, 7])],  # drawn last first
    "png": [(CAR, 1, [14, 8, 18, 11]), (PERSON, 0, [6, 0, 13, 12]), (CAR, 0, [2, 2, 6, 7])],  # by value: 26, 24000, 26000
}
INSTANCE_VALUES = [26, 24000, 26000]


@pytest.fixture
def split(tmp_path):
    return write_cityscapes_tree(str(tmp_path))


def _pixels_inside(polygons, height, width):
    """The pixels whose centres are inside any of the polygons (how Cityscapes rasterises)."""
    ys, xs = np.mgrid[:height, :width]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
    inside = np.zeros(height * width, dtype=bool)
    for polygon in polygons:
        inside |= Path(np.asarray(polygon).reshape(-1, 2)).contains_points(centres)
    return inside.reshape(height, width)


def _check(record, kind):
    assert record["height"] == 12 and record["width"] == 20
    assert record["image_id"] == f"{CITYSCAPES_STEM}_leftImg8bit.png"
    got = [(a["category_id"], a["iscrowd"], a["bbox"]) for a in record["annotations"]]
    assert [(c, crowd) for c, crowd, _ in got] == [(c, crowd) for c, crowd, _ in EXPECTED[kind]]
    for (_, _, box), (_, _, expected) in zip(got, EXPECTED[kind]):
        np.testing.assert_allclose(box, expected, atol=1e-6)
    assert all(a["bbox_mode"] == BoxMode.XYXY_ABS for a in record["annotations"])


def test_instances_from_json_reproduce_the_instance_map(split):
    (record,) = load_cityscapes_instances(*split)
    _check(record, "json")
    ids = cityscapes_instance_ids()
    for ann, value in zip(record["annotations"], INSTANCE_VALUES):
        # the visible part only: the person lost its top-right corner to the caravan, the car its right part
        np.testing.assert_array_equal(_pixels_inside(ann["segmentation"], 12, 20), ids == value)


def test_instances_from_instance_map(split):
    (record,) = load_cityscapes_instances(*split, from_json=False, to_polygons=True)
    _check(record, "png")  # the motorcycle one pixel wide is left out
    ids = cityscapes_instance_ids()
    for ann, value in zip(record["annotations"], INSTANCE_VALUES):
        np.testing.assert_array_equal(_pixels_inside(ann["segmentation"], 12, 20), ids == value)

    (record,) = load_cityscapes_instances(*split, from_json=False, to_polygons=False)
    _check(record, "png")
    for ann, value in zip(record["annotations"], INSTANCE_VALUES):
        np.testing.assert_array_equal(mask_util.decode(ann["segmentation"]).astype(bool), ids == value)


def test_semantic(split):
    image_dir, gt_dir = split
    (record,) = load_cityscapes_semantic(image_dir, gt_dir)
    assert record["file_name"] == os.path.join(image_dir, "aachen", f"{CITYSCAPES_STEM}_leftImg8bit.png")
    assert record["sem_seg_file_name"] == os.path.join(gt_dir, "aachen", f"{CITYSCAPES_STEM}_gtFine_labelTrainIds.png")
    assert (record["height"], record["width"]) == (12, 20)


def test_bad_inputs_one_line(split, tmp_path):
    image_dir, gt_dir = split
    with pytest.raises(ValueError, match="to_polygons=True"):
        load_cityscapes_instances(image_dir, gt_dir, from_json=True, to_polygons=False)
    json_file = os.path.join(gt_dir, "aachen", f"{CITYSCAPES_STEM}_gtFine_polygons.json")
    with open(json_file, "w") as f:
        json.dump({"imgHeight": 12, "imgWidth": 20, "objects": [{"label": "spaceship", "polygon": [[0, 0], [1, 0], [1, 1]]}]}, f)
    with pytest.raises(DatasetError, match="'spaceship' is not a Cityscapes label"):
        load_cityscapes_instances(image_dir, gt_dir)
    os.remove(os.path.join(gt_dir, "aachen", f"{CITYSCAPES_STEM}_gtFine_labelTrainIds.png"))
    with pytest.raises(DatasetError, match="labelTrainIds.png of image .*createTrainIdLabelImgs") as e:
        load_cityscapes_semantic(image_dir, gt_dir)
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetError, match="does not exist"):
        load_cityscapes_semantic(str(tmp_path / "nowhere"), gt_dir)


def test_builtin_names(tmp_path):
    set_datasets_root(str(tmp_path))
    try:
        for split in ("train", "val", "test"):
            instance = MetadataCatalog.get(f"cityscapes_fine_instance_seg_{split}")
            semantic = MetadataCatalog.get(f"cityscapes_fine_sem_seg_{split}")
            assert instance.evaluator_type == "cityscapes_instance" and semantic.evaluator_type == "cityscapes_sem_seg"
            assert semantic.gt_dir == os.path.join(str(tmp_path), "cityscapes", "gtFine", split)
            assert semantic.ignore_label == 255
        assert instance.thing_classes == ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
        assert len(semantic.stuff_classes) == 19 and semantic.stuff_classes[11:] == instance.thing_classes
        assert semantic.stuff_colors[0] == [128, 64, 128] and instance.thing_colors[2] == [0, 0, 142]
        with pytest.raises(DatasetError) as e:  # no files yet
            DatasetCatalog.get("cityscapes_fine_sem_seg_val")
        assert "\n" not in str(e.value) and os.path.join("cityscapes", "leftImg8bit", "val") in str(e.value)

        write_cityscapes_tree(str(tmp_path / "cityscapes"))
        (record,) = DatasetCatalog.get("cityscapes_fine_instance_seg_val")
        _check(record, "json")
        (record,) = DatasetCatalog.get("cityscapes_fine_sem_seg_val")
        assert record["sem_seg_file_name"].endswith("_gtFine_labelTrainIds.png")
    finally:
        set_datasets_root(None)
