import json
import math
import uuid

import numpy as np
import pytest
import torch

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.evaluation import COCOEvaluator, encode_masks, instances_to_coco_json
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


def test_encode_masks_gives_pycocotools_rle():
    import pycocotools.mask as mask_util

    # By hand: a 3 x 4 mask with foreground in column 1, rows 1-2: the column-major runs are 3 + 1
    # background, 2 foreground, then 6 background.
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[0, 1:, 1] = True
    (rle,) = encode_masks(mask)
    assert mask_util.decode(rle).sum() == 2 and rle["size"] == [3, 4]
    assert rle == mask_util.frPyObjects({"counts": [4, 2, 6], "size": [3, 4]}, 3, 4)

    rng = np.random.default_rng(0)
    masks = [
        torch.zeros(2, 5, 7, dtype=torch.bool), torch.ones(2, 5, 7, dtype=torch.bool),
        torch.from_numpy(rng.uniform(size=(40, 6, 9)) < 0.5), torch.from_numpy(rng.uniform(size=(40, 6, 9)) < 0.03),
        torch.from_numpy(rng.uniform(size=(10, 1, 1)) < 0.5), torch.zeros(0, 4, 4, dtype=torch.bool),
    ]
    for m in masks:  # includes masks set in the first or last pixel and column, and empty ones
        assert encode_masks(m) == mask_util.encode(np.asfortranarray(m.permute(1, 2, 0).numpy().astype(np.uint8)))


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


def _random_set(seed=0, num_images=24, num_classes=4):
    """Dataset dicts and matching model outputs for `num_images` 60 x 80 images: quadrilaterals as
    GT (some crowd, with RLE masks), detections jittered from the GT or placed at random, a few images
    without GT or without detections, and the last class never detected."""
    import pycocotools.mask as mask_util

    rng = np.random.default_rng(seed)
    dicts, outputs = [], []
    for image_id in range(1, num_images + 1):
        annotations, pred_boxes, pred_masks, pred_classes = [], [], [], []
        num_gt = 0 if image_id % 7 == 0 else int(rng.integers(1, 6))
        for _ in range(num_gt):
            x0, y0 = rng.uniform(0, 30), rng.uniform(0, 20)
            w, h = rng.uniform(4, 50), rng.uniform(4, 40)  # small and medium
            polygon = [x0, y0, x0 + w, y0, x0 + w, y0 + h * rng.uniform(0.3, 1), x0, y0 + h]
            mask = polygons_to_bitmask([np.asarray(polygon)], 60, 80)
            category = int(rng.integers(num_classes))
            crowd = rng.uniform() < 0.15
            segmentation = [polygon]
            if crowd:
                segmentation = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                segmentation["counts"] = segmentation["counts"].decode("ascii")
            annotations.append({"bbox": [x0, y0, w, h], "bbox_mode": BoxMode.XYWH_ABS, "category_id": category,
                                "iscrowd": int(crowd), "segmentation": segmentation})
            if category < num_classes - 1 and rng.uniform() < 0.8:  # a detection of this object
                shift = rng.normal(0, 1, 2)
                pred_boxes.append([x0 + shift[0], y0 + shift[1], x0 + w + shift[0], y0 + h + shift[1]])
                pred_masks.append(np.roll(mask, (round(shift[1]), round(shift[0])), axis=(0, 1)))
                pred_classes.append(category if rng.uniform() < 0.85 else int(rng.integers(num_classes - 1)))
        for _ in range(0 if image_id % 5 == 0 else int(rng.integers(0, 4))):  # false positives
            x0, y0 = rng.uniform(0, 60, 2)
            box = [x0, y0, x0 + rng.uniform(3, 20), y0 + rng.uniform(3, 20)]
            pred_boxes.append(box)
            pred_masks.append(polygons_to_bitmask([np.asarray([box[0], box[1], box[2], box[1], box[2], box[3]])], 60, 80))
            pred_classes.append(int(rng.integers(num_classes - 1)))
        dicts.append({"file_name": f"{image_id}.png", "image_id": image_id, "height": 60, "width": 80,
                      "annotations": annotations})
        if pred_boxes:
            scores = rng.uniform(0.05, 1, len(pred_boxes)).round(2).tolist()  # ties included
            outputs.append(predictions(pred_boxes, scores, pred_classes, pred_masks))
        else:
            outputs.append({"instances": Instances((60, 80), pred_boxes=Boxes(torch.zeros(0, 4)),
                                                   scores=torch.zeros(0), pred_classes=torch.zeros(0, dtype=torch.long),
                                                   pred_masks=torch.zeros(0, 60, 80, dtype=torch.bool))})
    return dicts, outputs


def _evaluate(name, outputs, output_dir, **kwargs):
    evaluator = COCOEvaluator(name, ("bbox", "segm"), False, str(output_dir), **kwargs)
    evaluator.reset()
    for image_id, output in enumerate(outputs, start=1):
        evaluator.process([{"image_id": image_id}], [output])
    return evaluator.evaluate()


@pytest.mark.parametrize("seed, num_images", [(0, 24), (1, 120)])  # 120 images: more than 255 detections
def test_fast_impl_reports_what_pycocotools_reports(dataset, tmp_path, monkeypatch, seed, num_images):
    import faster_coco_eval

    dicts, outputs = _random_set(seed, num_images)
    name = dataset(dicts, thing_classes=["a", "b", "c", "never detected"],
                   thing_dataset_id_to_contiguous_id={3: 0, 5: 1, 8: 2, 9: 3})
    calls = []
    accumulate = faster_coco_eval.COCOeval_faster.accumulate
    monkeypatch.setattr(faster_coco_eval.COCOeval_faster, "accumulate",
                        lambda self: calls.append(self.params.iouType) or accumulate(self))

    fast = _evaluate(name, outputs, tmp_path / "fast")
    assert calls == ["bbox", "segm"]  # faster-coco-eval computed both
    reference = _evaluate(name, outputs, tmp_path / "reference", use_fast_impl=False)

    assert list(fast) == list(reference) == ["bbox", "segm"]
    for task in reference:
        assert list(fast[task]) == list(reference[task])  # the same metrics and classes, in order
        for metric, value in reference[task].items():
            assert fast[task][metric] == pytest.approx(value, abs=1e-4, nan_ok=True), (task, metric)
        assert 0 < reference[task]["AP"] < 100 and reference[task]["AP-never detected"] == 0
    saved = [(tmp_path / d / "coco_instances_results.json").read_text() for d in ("fast", "reference")]
    assert saved[0] == saved[1]


def test_evaluation_leaves_the_garbage_collector_as_it_was(dataset, tmp_path):
    import gc

    dicts, outputs = _random_set(num_images=3)
    name = dataset(dicts, thing_classes=["a", "b", "c", "d"])
    try:
        for enabled in (True, False):
            gc.enable() if enabled else gc.disable()
            assert _evaluate(name, outputs, tmp_path)["bbox"]["AP"] > 0
            assert gc.isenabled() == enabled
    finally:
        gc.enable()


def test_fast_impl_without_any_detections(dataset, tmp_path):
    dicts, outputs = _random_set(num_images=3)
    name = dataset(dicts, thing_classes=["a", "b", "c", "d"])
    empty = [{"instances": o["instances"][[]]} for o in outputs]
    for use_fast_impl in (True, False):
        results = _evaluate(name, empty, tmp_path, use_fast_impl=use_fast_impl)
        assert results == {task: {m: 0.0 for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
                           for task in ("bbox", "segm")}


def _person(x, y, keypoints):
    """A 40 x 40 person (area 1600: "medium") at (x, y) with keypoints [(x, y, visibility), ...]."""
    return {"bbox": [x, y, 40, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0,
            "keypoints": [v for point in keypoints for v in point]}


# two persons' keypoints, as a loader gives them (continuous coordinates); the second has one unlabelled
_TRUTH = [[(10.5, 12.5, 2), (30.5, 20.5, 2), (20.5, 40.5, 1)], [(60.5, 15.5, 2), (0, 0, 0), (75.5, 45.5, 2)]]


def _keypoint_evaluation(dataset, predicted_keypoints, **kwargs):
    record = {"file_name": "p.png", "image_id": 1, "height": 60, "width": 120,
              "annotations": [_person(5, 5, _TRUTH[0]), _person(55, 10, _TRUTH[1])]}
    name = dataset([record], thing_classes=["person"])
    evaluator = COCOEvaluator(name, distributed=False, **kwargs)
    evaluator.reset()
    out = predictions([[5, 5, 45, 45], [55, 10, 95, 50]], [0.9, 0.8], [0, 0])
    out["instances"].pred_keypoints = torch.tensor(predicted_keypoints, dtype=torch.float32)
    evaluator.process([{"image_id": 1}], [out])
    return evaluator


@pytest.mark.parametrize("use_fast_impl", [True, False])
def test_keypoint_ap_is_100_on_perfect_keypoints_and_halved_when_one_person_is_wrong(dataset, use_fast_impl):
    perfect = [[(x, y, 0.9) for x, y, _ in person] for person in _TRUTH]
    evaluator = _keypoint_evaluation(dataset, perfect, kpt_oks_sigmas=[0.1, 0.1, 0.1], use_fast_impl=use_fast_impl)
    results = evaluator.evaluate()
    assert set(results) == {"bbox", "keypoints"}
    keypoints = results["keypoints"]
    assert keypoints["AP"] == pytest.approx(100.0) and keypoints["APm"] == pytest.approx(100.0)
    assert math.isnan(keypoints["APl"]) and "APs" not in keypoints  # COCO has no small keypoint objects

    # The second person's keypoints 30 px off: OKS exp(-900 / (2 * 1600 * (2 * 0.1)^2)) ~ 0.001, a false
    # positive at every threshold; recall stops at 1/2 with precision 1: AP 51/101 at each threshold.
    wrong = [perfect[0], [(x + 30, y, s) for x, y, s in perfect[1]]]
    evaluator = _keypoint_evaluation(dataset, wrong, kpt_oks_sigmas=[0.1, 0.1, 0.1], use_fast_impl=use_fast_impl)
    assert evaluator.evaluate()["keypoints"]["AP"] == pytest.approx(100 * 51 / 101)


def test_keypoint_sigmas_must_match_the_keypoints(dataset):
    perfect = [[(10.5, 12.5, 0.9)] * 3] * 2
    evaluator = _keypoint_evaluation(dataset, perfect)  # COCO's 17 person sigmas for 3 keypoints
    with pytest.raises(ValueError, match=r"3 keypoints, the ground truth 3 and COCO's person sigmas .* 17; give one "
                                         r"sigma per keypoint as COCOEvaluator\(\.\.\., kpt_oks_sigmas=\)"):
        evaluator.evaluate()


def test_keypoints_in_coco_json_are_pixel_indices():
    inst = predictions([[0, 0, 10, 10]], [0.9], [0])["instances"]
    inst.pred_keypoints = torch.tensor([[[4.5, 6.5, 0.25]]])
    assert instances_to_coco_json(inst, 7)[0]["keypoints"] == [4.0, 6.0, 0.25]
