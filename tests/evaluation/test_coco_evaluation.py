import json
import math
import uuid

import numpy as np
import pytest
import torch

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.evaluation import COCOEvaluator, instances_to_coco_json
from d2mask.structures import Boxes, BoxMode, Instances, polygons_to_bitmask


@pytest.fixture
def dataset():
    """`dataset(dicts, **metadata) -> name`, unregistered afterwards."""
    names = []

    def _make(dicts, **metadata):
        name = f"test_eval_{uuid.uuid4().hex[:8]}"
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(**metadata)
        names.append(name)
        return name

    yield _make
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def box_record(image_id, boxes_xywh, classes):
    return {"file_name": f"{image_id}.png", "image_id": image_id, "height": 60, "width": 80, "annotations": [
        {"bbox": b, "bbox_mode": BoxMode.XYWH_ABS, "category_id": c, "iscrowd": 0} for b, c in zip(boxes_xywh, classes)
    ]}


def predictions(boxes_xyxy, scores, classes, masks=None):
    inst = Instances((60, 80), pred_boxes=Boxes(torch.tensor(boxes_xyxy, dtype=torch.float32)),
                     scores=torch.tensor(scores), pred_classes=torch.tensor(classes))
    if masks is not None:
        inst.pred_masks = torch.as_tensor(np.stack(masks))
    return {"instances": inst}


def test_perfect_predictions_give_ap_100_and_saved_results(dataset, tmp_path):
    squares = [[[5, 5, 25, 5, 25, 25, 5, 25]], [[40, 10, 70, 10, 70, 50, 40, 50]]]
    triangle = [[10, 30, 40, 30, 25, 55]]
    dicts = [
        {"file_name": "a.png", "image_id": 1, "height": 60, "width": 80, "annotations": [
            {"bbox": [5, 5, 20, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0, "segmentation": squares[0]},
            {"bbox": [40, 10, 30, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0, "segmentation": squares[1]},
        ]},
        {"file_name": "b.png", "image_id": 2, "height": 60, "width": 80, "annotations": [
            {"bbox": [10, 30, 30, 25], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0, "segmentation": triangle},
        ]},
    ]
    name = dataset(dicts, thing_classes=["a", "b"], thing_dataset_id_to_contiguous_id={10: 0, 20: 1})
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "inference"))
    evaluator.reset()
    for record in dicts:
        boxes = [BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in record["annotations"]]
        masks = [polygons_to_bitmask([np.asarray(p, dtype=float) for p in a["segmentation"]], 60, 80)
                 for a in record["annotations"]]
        classes = [a["category_id"] for a in record["annotations"]]
        evaluator.process([{"image_id": record["image_id"]}], [predictions(boxes, [0.9] * len(boxes), classes, masks)])
    results = evaluator.evaluate()

    assert set(results) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0)
        assert results[task]["AP50"] == pytest.approx(100.0) and results[task]["AP75"] == pytest.approx(100.0)
        assert results[task]["AP-a"] == pytest.approx(100.0) and results[task]["AP-b"] == pytest.approx(100.0)
    saved = json.loads((tmp_path / "inference" / "coco_instances_results.json").read_text())
    assert len(saved) == 3 and {r["category_id"] for r in saved} == {10, 20}  # back to the dataset's ids
    assert not list((tmp_path / "inference").glob("*.tmp*"))


def test_partial_case_matches_hand_computed_ap(dataset):
    # Two 10 x 10 GT boxes (area 100: "small"). One exact detection (score 0.9) and one of IoU 0.72
    # (score 0.8). For IoU thresholds 0.50..0.70 both are true positives: AP 1. For 0.75..0.95 the
    # second is a false positive and recall stops at 0.5: precision is 1 at the 51 recall points
    # 0.00..0.50 of 101 and 0 after, AP 51/101. Mean over the 10 thresholds: (5 + 5 * 51/101) / 10.
    name = dataset([box_record(1, [[0, 0, 10, 10], [20, 20, 10, 10]], [0, 0])], thing_classes=["only"])
    evaluator = COCOEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process([{"image_id": 1}], [predictions([[0, 0, 10, 10], [20, 20, 30, 27.2]], [0.9, 0.8], [0, 0])])
    bbox = evaluator.evaluate()["bbox"]
    expected = 100 * (5 + 5 * 51 / 101) / 10
    assert bbox["AP"] == pytest.approx(expected)
    assert bbox["AP50"] == pytest.approx(100.0)
    assert bbox["AP75"] == pytest.approx(100 * 51 / 101)
    assert bbox["APs"] == pytest.approx(expected)
    assert math.isnan(bbox["APm"]) and math.isnan(bbox["APl"])  # no medium or large objects
    assert bbox["AP-only"] == pytest.approx(expected)


def test_wrong_class_ranked_first_halves_ap(dataset):
    name = dataset([box_record(1, [[0, 0, 20, 20]], [0]), box_record(2, [[0, 0, 20, 20]], [1])],
                   thing_classes=["x", "y"])
    evaluator = COCOEvaluator(name, distributed=False)
    evaluator.reset()
    # Class x: a false positive (image 2, score 0.95) ranks above the true positive (image 1), so
    # precision is 0.5 at the only recall reached, 1.0: AP 50. Class y is never detected: AP 0.
    evaluator.process([{"image_id": 1}, {"image_id": 2}],
                      [predictions([[0, 0, 20, 20]], [0.9], [0]), predictions([[0, 0, 20, 20]], [0.95], [0])])
    bbox = evaluator.evaluate()["bbox"]
    assert bbox["AP-x"] == pytest.approx(50.0)
    assert bbox["AP-y"] == pytest.approx(0.0)
    assert bbox["AP"] == pytest.approx(25.0)


def test_instances_to_coco_json():
    inst = predictions([[1, 2, 11, 22]], [0.5], [3], [np.pad(np.ones((2, 2), bool), ((0, 58), (0, 78)))])["instances"]
    (record,) = instances_to_coco_json(inst, image_id=9)
    assert record["image_id"] == 9 and record["category_id"] == 3 and record["score"] == 0.5
    assert record["bbox"] == [1.0, 2.0, 10.0, 20.0]
    assert record["segmentation"]["size"] == [60, 80] and isinstance(record["segmentation"]["counts"], str)
    assert instances_to_coco_json(inst[[]], image_id=9) == []


def test_class_outside_the_dataset_is_an_error(dataset):
    name = dataset([box_record(1, [[0, 0, 10, 10]], [0])], thing_classes=["a"], thing_dataset_id_to_contiguous_id={1: 0})
    evaluator = COCOEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process([{"image_id": 1}], [predictions([[0, 0, 10, 10]], [0.9], [4])])
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        evaluator.evaluate()


def test_no_predictions_give_empty_results(dataset):
    evaluator = COCOEvaluator(dataset([box_record(1, [[0, 0, 10, 10]], [0])], thing_classes=["a"]))
    evaluator.reset()
    assert evaluator.evaluate() == {}


def test_uses_the_json_file_when_the_metadata_has_one(dataset, tmp_path):
    gt = {"images": [{"id": 5, "file_name": "x.png", "height": 60, "width": 80}],
          "annotations": [{"id": 1, "image_id": 5, "category_id": 2, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
          "categories": [{"id": 2, "name": "thing"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    name = dataset([], thing_classes=["thing"], thing_dataset_id_to_contiguous_id={2: 0}, json_file=str(path))
    # Detectron2's positional order: dataset_name, tasks, distributed, output_dir
    evaluator = COCOEvaluator(name, ("bbox",), False, str(tmp_path / "out"))
    evaluator.reset()
    evaluator.process([{"image_id": 5}], [predictions([[0, 0, 10, 10]], [0.9], [0])])
    assert evaluator.evaluate()["bbox"]["AP"] == pytest.approx(100.0)
    assert (tmp_path / "out" / "coco_instances_results.json").is_file()
    with pytest.raises(ValueError, match="tasks must be among"):
        COCOEvaluator(name, str(tmp_path))  # a folder where the tasks go
