"""Cityscapes' panoptic data on the one-image split of tests.common.write_cityscapes_tree:
tools/prepare_cityscapes.py's label maps and panoptic files, the cityscapes_fine_panoptic_* built-ins
and their evaluation."""
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from d2mask.config import get_cfg
from d2mask.data import DatasetCatalog, DatasetError, MetadataCatalog
from d2mask.data.datasets import set_datasets_root
from d2mask.data.datasets.coco_panoptic import read_panoptic_png
from d2mask.engine import DefaultTrainer
from d2mask.evaluation import DatasetEvaluators
from d2mask.structures import Instances
from tests.common import CITYSCAPES_STEM, cityscapes_instance_ids, load_script, write_cityscapes_tree

ROAD, PERSON, CAR, MOTORCYCLE = 0, 11, 13, 17  # train ids: the contiguous ids of the panoptic metadata
# (id, category_id, isthing, iscrowd, area, XYWH bbox) of the split's segments, counted on the map of
# cityscapes_instance_ids: the car keeps columns 2-5 of rows 2-6 (the person covers the rest), the
# person loses 3x3 pixels to the caravan (not evaluated: VOID), the road holds the other 120 pixels.
SEGMENTS = [
    (7, ROAD, False, 0, 120, [0, 0, 20, 12]),
    (26, CAR, True, 1, 12, [14, 8, 4, 3]),  # a crowd of cars
    (24000, PERSON, True, 0, 75, [6, 0, 7, 12]),
    (26000, CAR, True, 0, 20, [2, 2, 4, 5]),
    (32000, MOTORCYCLE, True, 0, 4, [19, 0, 1, 4]),
]


@pytest.fixture
def root(tmp_path):
    """A datasets root holding the split as cityscapes/, with the built-in names registered below it."""
    set_datasets_root(str(tmp_path))
    yield tmp_path
    set_datasets_root(None)


def _prepare(cityscapes_dir=None):
    """tools/prepare_cityscapes.py run on `cityscapes_dir` (by default <datasets root>/cityscapes): its report."""
    return load_script("tools/prepare_cityscapes.py").main([str(cityscapes_dir)] if cityscapes_dir else [])


def test_train_ids_pixel_by_pixel_and_never_overwritten(tmp_path):
    _, gt_dir = write_cityscapes_tree(str(tmp_path))
    train_ids_file = os.path.join(gt_dir, "aachen", f"{CITYSCAPES_STEM}_gtFine_labelTrainIds.png")
    os.remove(train_ids_file)
    report = _prepare(tmp_path)
    assert report["val"]["labelTrainIds written"] == 1 and report["val"]["panoptic json written"] == 1
    expected = np.full((12, 20), ROAD)
    expected[2:7, 2:9] = CAR
    expected[:, 6:13] = PERSON
    expected[0:3, 10:13] = 255  # caravan: not trained on
    expected[8:11, 14:18] = CAR
    expected[0:4, 19] = MOTORCYCLE
    np.testing.assert_array_equal(np.asarray(Image.open(train_ids_file)), expected)

    # existing files are kept and counted, even when they differ from what would be written
    Image.fromarray(np.zeros((12, 20), dtype=np.uint8)).save(train_ids_file)
    before = open(train_ids_file, "rb").read()
    report = _prepare(tmp_path)
    assert report["val"] == {"labelTrainIds written": 0, "labelTrainIds kept": 1, "panoptic json kept": 1}
    assert open(train_ids_file, "rb").read() == before


def test_bad_label_map_one_line(tmp_path):
    _, gt_dir = write_cityscapes_tree(str(tmp_path))
    label_ids_file = os.path.join(gt_dir, "aachen", f"{CITYSCAPES_STEM}_gtFine_labelIds.png")
    Image.fromarray(np.full((12, 20), 40, dtype=np.uint8)).save(label_ids_file)
    os.remove(label_ids_file.replace("labelIds", "labelTrainIds"))
    with pytest.raises(DatasetError, match="labelIds.png: value 40 is not a Cityscapes label id") as e:
        _prepare(tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetError, match="No gtFine/"):
        _prepare(tmp_path / "nowhere")


def test_panoptic_builtin_loads_the_prepared_files(root):
    meta = MetadataCatalog.get("cityscapes_fine_panoptic_val")
    assert meta.evaluator_type == "cityscapes_panoptic_seg" and meta.label_divisor == 1000 and meta.ignore_label == 255
    gt_fine = os.path.join(str(root), "cityscapes", "gtFine")
    assert meta.panoptic_json == os.path.join(gt_fine, "cityscapes_panoptic_val.json")
    assert meta.panoptic_root == os.path.join(gt_fine, "cityscapes_panoptic_val")
    assert meta.gt_dir == os.path.join(gt_fine, "val")
    assert meta.thing_dataset_id_to_contiguous_id == {24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert meta.stuff_dataset_id_to_contiguous_id == {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10}
    assert meta.thing_classes == meta.stuff_classes and len(meta.thing_classes) == 19
    assert meta.thing_classes[PERSON] == "person" and meta.stuff_colors[ROAD] == [128, 64, 128]
    assert "cityscapes_fine_panoptic_train" in DatasetCatalog and "cityscapes_fine_panoptic_test" not in DatasetCatalog

    with pytest.raises(DatasetError) as e:  # no files yet
        DatasetCatalog.get("cityscapes_fine_panoptic_val")
    assert "\n" not in str(e.value) and os.path.join("cityscapes", "leftImg8bit", "val") in str(e.value)
    image_dir, gt_dir = write_cityscapes_tree(str(root / "cityscapes"))
    with pytest.raises(DatasetError, match="panoptic_val.json does not exist: make it with tools/prepare_cityscapes.py"):
        DatasetCatalog.get("cityscapes_fine_panoptic_val")

    _prepare(root / "cityscapes")
    (record,) = DatasetCatalog.get("cityscapes_fine_panoptic_val")
    assert record["file_name"] == os.path.join(image_dir, "aachen", f"{CITYSCAPES_STEM}_leftImg8bit.png")
    assert record["image_id"] == CITYSCAPES_STEM and (record["height"], record["width"]) == (12, 20)
    assert record["sem_seg_file_name"] == os.path.join(gt_dir, "aachen", f"{CITYSCAPES_STEM}_gtFine_labelTrainIds.png")
    assert record["pan_seg_file_name"] == os.path.join(meta.panoptic_root, f"{CITYSCAPES_STEM}_gtFine_panoptic.png")
    got = [(s["id"], s["category_id"], s["isthing"], s["iscrowd"], s["area"], s["bbox"]) for s in record["segments_info"]]
    assert got == SEGMENTS
    # the PNG holds the instance map's values as segment ids, the caravan's pixels VOID
    expected = cityscapes_instance_ids()
    expected[expected == 29000] = 0
    np.testing.assert_array_equal(read_panoptic_png(record["pan_seg_file_name"]), expected)
    with open(meta.panoptic_json) as f:
        categories = json.load(f)["categories"]
    assert [c["id"] for c in categories] == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def _perfect_outputs(record):
    """Panoptic-DeepLab's outputs equal to the ground truth: "panoptic_seg" as category * 1000 +
    instance ids (-1: VOID, also on the crowd), "sem_seg" one-hot logits, "instances"."""
    ids = read_panoptic_png(record["pan_seg_file_name"])
    panoptic = np.full(ids.shape, -1)
    instances = []
    for k, segment in enumerate(record["segments_info"]):
        if not segment["iscrowd"]:
            panoptic[ids == segment["id"]] = segment["category_id"] * 1000 + (k if segment["isthing"] else 0)
        if segment["isthing"] and not segment["iscrowd"]:
            instances.append((segment["category_id"], ids == segment["id"]))
    train_ids = np.asarray(Image.open(record["sem_seg_file_name"])).astype(np.int64)
    sem_seg = torch.nn.functional.one_hot(torch.from_numpy(np.where(train_ids == 255, 0, train_ids)), 19)
    result = Instances(ids.shape)
    result.pred_classes = torch.tensor([c for c, _ in instances] + [ROAD])  # a road "instance": left out
    result.pred_masks = torch.from_numpy(np.stack([m for _, m in instances] + [train_ids == ROAD]))
    result.scores = torch.ones(len(instances) + 1)
    return {"panoptic_seg": (torch.from_numpy(panoptic), None), "sem_seg": sem_seg.permute(2, 0, 1).float(),
            "instances": result}


def test_trainer_evaluates_a_perfect_prediction(root):
    write_cityscapes_tree(str(root / "cityscapes"))
    assert _prepare()["val"]["panoptic json written"] == 1
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(root / "out")
    evaluator = DefaultTrainer.build_evaluator(cfg, "cityscapes_fine_panoptic_val")
    assert isinstance(evaluator, DatasetEvaluators)
    (record,) = DatasetCatalog.get("cityscapes_fine_panoptic_val")
    evaluator.reset()
    evaluator.process([record], [_perfect_outputs(record)])
    results = evaluator.evaluate()
    assert results["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert results["panoptic_seg"]["PQ_th"] == pytest.approx(100.0) and results["panoptic_seg"]["PQ_st"] == pytest.approx(100.0)
    assert math.isnan(results["panoptic_seg"]["PQ-sky"])  # in neither ground truth nor prediction
    assert results["sem_seg"]["IoU-road"] == pytest.approx(100.0) and results["sem_seg"]["IoU"] == pytest.approx(100.0)
    # the split's instances are all under 100 pixels: no class has GT that counts
    assert {"AP", "AP50", "AP-car"} <= set(results["segm"]) and math.isnan(results["segm"]["AP"])
