"""LVISEvaluator on perfect and hand-computed imperfect detections."""
import json
import math
import uuid

import pytest
import torch

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.datasets import register_lvis_instances
from d2mask.evaluation.lvis_evaluation import LVISEvaluator
from d2mask.structures import Boxes, Instances

A, B, C = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [40.0, 0.0, 50.0, 10.0]


def _ann(ann_id, image_id, category_id, xyxy):
    x0, y0, x1, y1 = xyxy
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": (x1 - x0) * (y1 - y0), "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}


# Image 1: two boxes of "cup" (frequent); it was not exhaustively annotated for "yak" (rare).
# Image 2: one box of "yak"; it is known to have no cup.
LVIS_GT = {
    "images": [
        {"id": 1, "height": 60, "width": 60, "not_exhaustive_category_ids": [2], "neg_category_ids": []},
        {"id": 2, "height": 60, "width": 60, "not_exhaustive_category_ids": [], "neg_category_ids": [1]},
    ],
    "annotations": [_ann(1, 1, 1, A), _ann(2, 1, 1, B), _ann(3, 2, 2, C)],
    "categories": [{"id": 1, "name": "cup", "frequency": "f", "image_count": 1},
                   {"id": 2, "name": "yak", "frequency": "r", "image_count": 1}],
}


@pytest.fixture
def lvis_dataset(tmp_path):
    json_file = tmp_path / "lvis.json"
    json_file.write_text(json.dumps(LVIS_GT))
    name = f"test_lvis_{uuid.uuid4().hex[:8]}"
    register_lvis_instances(name, {}, str(json_file), str(tmp_path))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _evaluate(name, per_image, **kwargs):
    evaluator = LVISEvaluator(name, **kwargs)
    evaluator.reset()
    for image_id, detections in per_image.items():
        boxes, scores, classes = zip(*detections)
        instances = Instances((60, 60), pred_boxes=Boxes(torch.tensor(boxes)), scores=torch.tensor(scores),
                              pred_classes=torch.tensor(classes))  # contiguous: LVIS id - 1
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    return evaluator.evaluate()


def test_perfect_detections_give_100(lvis_dataset, tmp_path):
    results = _evaluate(lvis_dataset, {1: [(A, 0.9, 0), (B, 0.8, 0)], 2: [(C, 0.7, 1)]}, output_dir=str(tmp_path))
    bbox = results["bbox"]
    assert [bbox[k] for k in ("AP", "AP50", "AP75", "APr", "APf")] == pytest.approx([100.0] * 5)
    assert math.isnan(bbox["APc"])  # no common class to measure
    saved = json.loads((tmp_path / "lvis_instances_results.json").read_text())
    assert sorted(r["category_id"] for r in saved) == [1, 1, 2]  # LVIS's ids, from 1


def test_imperfect_detections_by_hand(lvis_dataset):
    detections = {
        # cup: A found, then a false positive; B missed. yak: a detection in image 1, which is not
        # known to contain or to lack yak (and not exhaustively annotated for it), counts neither way.
        1: [(A, 0.9, 0), (C, 0.8, 0), (B, 0.95, 1)],
        2: [(C, 0.7, 1)],
    }
    bbox = _evaluate(lvis_dataset, detections)["bbox"]
    # cup: precision 1 up to recall 0.5, nothing beyond: 51 of the 101 recall points
    cup = 100 * 51 / 101
    assert bbox["APf"] == pytest.approx(cup)
    assert bbox["APr"] == pytest.approx(100.0)
    assert bbox["AP"] == pytest.approx((cup + 100) / 2)


def test_at_most_max_dets_per_image_over_all_classes(lvis_dataset):
    # image 1 allows 1 detection: the yak one (not exhaustively annotated, not counted) is the best,
    # so no cup detection is left there: cup's AP is 0
    detections = {1: [(A, 0.9, 0), (B, 0.8, 0), (C, 0.95, 1)], 2: [(C, 0.7, 1)]}
    bbox = _evaluate(lvis_dataset, detections, max_dets_per_image=1)["bbox"]
    assert bbox["APf"] == pytest.approx(0.0) and bbox["APr"] == pytest.approx(100.0)


def test_masks_and_the_choice_by_evaluator_type(lvis_dataset):
    from d2mask.config import get_cfg
    from d2mask.engine import DefaultTrainer
    from d2mask.structures import polygons_to_bitmask

    evaluator = DefaultTrainer.build_evaluator(get_cfg(), lvis_dataset)
    assert isinstance(evaluator, LVISEvaluator)
    evaluator.reset()
    for image_id, anns in ((1, LVIS_GT["annotations"][:2]), (2, LVIS_GT["annotations"][2:])):
        masks = torch.stack([torch.from_numpy(polygons_to_bitmask(a["segmentation"], 60, 60)) for a in anns])
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns])
        instances = Instances((60, 60), pred_boxes=Boxes(boxes), scores=torch.tensor([0.9] * len(anns)),
                              pred_classes=torch.tensor([a["category_id"] - 1 for a in anns]), pred_masks=masks)
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    results = evaluator.evaluate()
    assert set(results) == {"bbox", "segm"} and results["segm"]["AP"] == pytest.approx(100.0)
