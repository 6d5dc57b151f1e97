"""COCOPanopticEvaluator: PQ, SQ, RQ computed by hand on tiny label maps (a match whose IoU leaves the
VOID pixels out, a false positive, a false negative, a prediction on VOID, crowd regions), through
the evaluator on a COCO panoptic set registered with register_coco_panoptic, and on the shapes'
panoptic view."""
import json
import math

import numpy as np
import pytest
import torch

from d2mask.data import DatasetCatalog, DatasetError, MetadataCatalog
from d2mask.data.datasets import load_coco_panoptic_json, register_coco_panoptic, register_shapes
from d2mask.data.datasets.shapes_segmentation import register_shapes_panoptic_separated
from d2mask.data.datasets.coco_panoptic import encode_panoptic_png, read_panoptic_png
from d2mask.evaluation import COCOPanopticEvaluator
from d2mask.evaluation.panoptic_evaluation import pq_image_stats

# Dataset ids: things 1 ("a") and 2 ("b"), stuff 3 ("sky"), and thing 7 ("c") that never appears.
CATEGORIES = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 1},
              {"id": 3, "name": "sky", "isthing": 0}, {"id": 7, "name": "c", "isthing": 1}]
META = dict(
    thing_classes=["a", "b", "c", "sky"], stuff_classes=["a", "b", "c", "sky"],
    thing_dataset_id_to_contiguous_id={1: 0, 2: 1, 7: 2}, stuff_dataset_id_to_contiguous_id={3: 3},
)


def _ground_truth():
    """10 x 10 ids: segment 1 (category a) 20 px, 2 (b) 8 px, 3 (sky) 50 px, VOID the other 22."""
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[0:4, 0:5] = 1
    gt[0:2, 6:10] = 2
    gt[5:10, :] = 3
    return gt, {1: {"category_id": 1, "iscrowd": 0}, 2: {"category_id": 2, "iscrowd": 0}, 3: {"category_id": 3, "iscrowd": 0}}


def _imperfect_prediction():
    """Segment 1 (a): rows 0-4 x cols 0-3, 16 px on GT 1 and 4 on VOID: IoU 16 / (20 + 20 - 16 - 4) = 0.8
    (0.67 if the VOID pixels counted). 2 (sky): rows 6-9 x cols 0-7, 32 px of GT 3's 50: IoU 0.64.
    3 (b): only VOID pixels, ignored. 4 (a): 4 px of sky, a false positive. GT 2 (b) is missed."""
    pred = np.zeros((10, 10), dtype=np.int64)
    pred[0:5, 0:4] = 1
    pred[6:10, 0:8] = 2
    pred[2:4, 6:10] = 3
    pred[5, 0:4] = 4
    return pred, {1: 1, 2: 3, 3: 2, 4: 1}


# (PQ, SQ, RQ) per category: a: TP 0.8 and an FP: 0.8 / 1.5, 0.8, 1 / 1.5; b: an FN: 0, 0, 0; sky: TP 0.64.
EXPECTED_PER_CATEGORY = {"a": (0.8 / 1.5, 0.8, 1 / 1.5), "b": (0.0, 0.0, 0.0), "sky": (0.64, 0.64, 1.0)}


def _expected_results():
    pq = {name: 100 * np.array(v) for name, v in EXPECTED_PER_CATEGORY.items()}
    results = {}
    for suffix, names in (("", ["a", "b", "sky"]), ("_th", ["a", "b"]), ("_st", ["sky"])):
        mean = np.mean([pq[n] for n in names], axis=0)
        results.update({f"PQ{suffix}": mean[0], f"SQ{suffix}": mean[1], f"RQ{suffix}": mean[2]})
    return results


def test_pq_image_stats_by_hand():
    gt, gt_segments = _ground_truth()
    pred, pred_segments = _imperfect_prediction()
    stats = pq_image_stats(gt, gt_segments, pred, pred_segments)
    # (TP, FP, FN, sum of matched IoUs)
    assert set(stats) == {1, 2, 3}
    np.testing.assert_allclose(stats[1], [1, 1, 0, 0.8])
    np.testing.assert_allclose(stats[2], [0, 0, 1, 0])
    np.testing.assert_allclose(stats[3], [1, 0, 0, 0.64])


def test_crowd_regions_are_neither_missed_nor_matched():
    gt = np.zeros((4, 8), dtype=np.int64)
    gt[:, 0:4], gt[:, 4:8] = 1, 2  # a crowd region of category 1, and segment 2 of category 1
    gt_segments = {1: {"category_id": 1, "iscrowd": 1}, 2: {"category_id": 1, "iscrowd": 0}}
    pred = np.zeros((4, 8), dtype=np.int64)
    pred[:, 0:4] = 1   # exactly the crowd region: neither a TP nor (lying on the crowd) an FP
    pred[:, 4:6] = 2   # half of segment 2: IoU 0.5, not a match (IoU must exceed 0.5), so an FP
    pred[0, 6:8] = 3   # 2 px on segment 2, category 2: an FP of category 2
    stats = pq_image_stats(gt, gt_segments, pred, {1: 1, 2: 1, 3: 2})
    np.testing.assert_allclose(stats[1], [0, 1, 1, 0])
    np.testing.assert_allclose(stats[2], [0, 1, 0, 0])


def test_unlisted_ground_truth_segment_is_an_error():
    gt, gt_segments = _ground_truth()
    del gt_segments[2]
    with pytest.raises(DatasetError, match=r"segment ids \[2\]"):
        pq_image_stats(gt, gt_segments, gt, {1: 1, 3: 3})


@pytest.fixture
def panoptic_set(tmp_path):
    """A COCO panoptic set of two images (both the same label map) registered in the standard form."""
    gt, segments = _ground_truth()
    (tmp_path / "panoptic").mkdir()
    for name in ("x.png", "y.png"):
        (tmp_path / "panoptic" / name).write_bytes(encode_panoptic_png(gt))
    data = {
        "images": [{"id": i, "file_name": f"{s}.jpg", "height": 10, "width": 10} for i, s in ((5, "x"), (6, "y"))],
        "annotations": [
            {"image_id": i, "file_name": f"{s}.png", "segments_info": [{"id": k, **v} for k, v in segments.items()]}
            for i, s in ((5, "x"), (6, "y"))
        ],
        "categories": CATEGORIES,
    }
    json_file = tmp_path / "panoptic.json"
    json_file.write_text(json.dumps(data))
    register_coco_panoptic("pq_test_panoptic", META, str(tmp_path / "images"), str(tmp_path / "panoptic"), str(json_file))
    yield json_file
    DatasetCatalog.remove("pq_test_panoptic")
    MetadataCatalog.remove("pq_test_panoptic")


def test_load_coco_panoptic_json(panoptic_set, tmp_path):
    dicts = DatasetCatalog.get("pq_test_panoptic")
    assert [d["image_id"] for d in dicts] == [5, 6]
    assert dicts[0]["file_name"] == str(tmp_path / "images" / "x.jpg") and (dicts[0]["height"], dicts[0]["width"]) == (10, 10)
    assert dicts[1]["pan_seg_file_name"] == str(tmp_path / "panoptic" / "y.png")
    assert [(s["id"], s["category_id"], s["isthing"]) for s in dicts[0]["segments_info"]] == [(1, 0, True), (2, 1, True), (3, 3, False)]
    meta = MetadataCatalog.get("pq_test_panoptic")
    assert (meta.evaluator_type, meta.label_divisor, meta.panoptic_json) == ("coco_panoptic_seg", 1000, str(panoptic_set))
    np.testing.assert_array_equal(read_panoptic_png(dicts[0]["pan_seg_file_name"]), _ground_truth()[0])

    data = json.loads(panoptic_set.read_text())
    data["annotations"][1]["segments_info"][0]["category_id"] = 9
    panoptic_set.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"panoptic.json: annotations\[1\] has a segment of category id 9"):
        load_coco_panoptic_json(str(panoptic_set), "", "", META)


def _output(ids, segments):
    """A "panoptic_seg" output in PanopticFPN's form: contiguous category ids with "isthing"."""
    contiguous = {1: 0, 2: 1, 3: 3}
    info = [{"id": k, "category_id": contiguous[c], "isthing": c != 3} for k, c in segments.items()]
    return {"panoptic_seg": (torch.as_tensor(ids, dtype=torch.int32), info)}


def _evaluate(evaluator, outputs):
    evaluator.reset()
    evaluator.process([{"image_id": 5, "file_name": "x.jpg"}, {"image_id": 6, "file_name": "y.jpg"}], outputs)
    return evaluator.evaluate()["panoptic_seg"]


def test_perfect_prediction_scores_100(panoptic_set):
    gt, segments = _ground_truth()
    results = _evaluate(COCOPanopticEvaluator("pq_test_panoptic"), [_output(gt, {k: v["category_id"] for k, v in segments.items()})] * 2)
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "PQ-a", "PQ-sky"):
        assert results[key] == pytest.approx(100)
    assert math.isnan(results["PQ-c"])  # in neither the ground truth nor the predictions


def test_imperfect_prediction_by_hand(panoptic_set, tmp_path):
    pred, segments = _imperfect_prediction()
    evaluator = COCOPanopticEvaluator("pq_test_panoptic", output_dir=str(tmp_path / "out"))
    results = _evaluate(evaluator, [_output(pred, segments)] * 2)  # the same counts twice: the same ratios
    for key, value in _expected_results().items():
        assert results[key] == pytest.approx(value), key
    for name, values in EXPECTED_PER_CATEGORY.items():
        assert [results[f"{m}-{name}"] for m in ("PQ", "SQ", "RQ")] == pytest.approx([100 * v for v in values])
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [a["file_name"] for a in written["annotations"]] == ["x.png", "y.png"]
    assert written["annotations"][0]["segments_info"] == [{"id": k, "category_id": c} for k, c in segments.items()]
    np.testing.assert_array_equal(read_panoptic_png(str(tmp_path / "out" / "panoptic_predictions" / "y.png")), pred)


def test_category_times_label_divisor_form(panoptic_set):
    """segments_info None: each pixel holds contiguous category * label_divisor + instance, -1 VOID."""
    pred, segments = _imperfect_prediction()
    contiguous = {1: 0, 2: 1, 3: 3}
    labels = np.full(pred.shape, -1, dtype=np.int64)
    for k, c in segments.items():
        labels[pred == k] = contiguous[c] * 1000 + k
    results = _evaluate(COCOPanopticEvaluator("pq_test_panoptic"), [{"panoptic_seg": (torch.as_tensor(labels), None)}] * 2)
    for key, value in _expected_results().items():
        assert results[key] == pytest.approx(value), key


def test_prediction_errors_name_the_problem(panoptic_set):
    gt, _ = _ground_truth()
    evaluator = COCOPanopticEvaluator("pq_test_panoptic")
    with pytest.raises(ValueError, match=r"segment ids \[2, 3\], which its segments_info does not list"):
        evaluator.process([{"image_id": 5, "file_name": "x.jpg"}], [_output(gt, {1: 1})])
    with pytest.raises(DatasetError, match=r"is \(10, 10\) but the prediction for x.jpg is \(5, 10\)"):
        evaluator.process([{"image_id": 5, "file_name": "x.jpg"}], [_output(gt[:5], {1: 1, 2: 2})])
    with pytest.raises(DatasetError, match="image id 9 "):
        evaluator.process([{"image_id": 9, "file_name": "z.jpg"}], [_output(gt, {1: 1, 2: 2, 3: 3})])


def test_ground_truth_from_the_dataset_dicts(tmp_path):
    """Without panoptic_json in the metadata (the shapes' panoptic view), the dicts' "pan_seg_file_name"
    and "segments_info" are the ground truth: predicting them scores 100."""
    register_shapes("pq_test_shapes", str(tmp_path), num_images=2, seed=3, image_size=64, object_size=(16, 32))
    register_shapes_panoptic_separated("pq_test_shapes_panoptic", "pq_test_shapes")
    try:
        dicts = DatasetCatalog.get("pq_test_shapes_panoptic")
        outputs = [
            {"panoptic_seg": (torch.as_tensor(read_panoptic_png(d["pan_seg_file_name"])), d["segments_info"])} for d in dicts
        ]
        evaluator = COCOPanopticEvaluator("pq_test_shapes_panoptic")
        evaluator.reset()
        evaluator.process(dicts, outputs)
        results = evaluator.evaluate()["panoptic_seg"]
        assert results["PQ"] == results["PQ_th"] == results["PQ_st"] == results["PQ-background"] == pytest.approx(100)
    finally:
        for name in ("pq_test_shapes", "pq_test_shapes_panoptic"):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
