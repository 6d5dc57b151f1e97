"""SemSegEvaluator on perfect and on hand-counted imperfect predictions, with an ignored pixel."""
import json

import cv2
import numpy as np
import pytest
import torch

from d2mask.data import DatasetCatalog, DatasetError, MetadataCatalog
from d2mask.evaluation import SemSegEvaluator

GT = {"a.png": [[0, 0, 1], [1, 2, 255]], "b.png": [[2, 2]]}


@pytest.fixture
def dataset(tmp_path):
    """Two images' label maps as PNGs, registered with classes x, y, z; unregistered afterwards."""
    dicts = []
    for name, labels in GT.items():
        cv2.imwrite(str(tmp_path / name), np.array(labels, dtype=np.uint8))
        dicts.append({"file_name": f"images/{name}", "sem_seg_file_name": str(tmp_path / name)})
    DatasetCatalog.register("sem_seg_eval_test", lambda: dicts)
    MetadataCatalog.get("sem_seg_eval_test").set(stuff_classes=["x", "y", "z"], ignore_label=255)
    yield "sem_seg_eval_test"
    DatasetCatalog.remove("sem_seg_eval_test")
    MetadataCatalog.remove("sem_seg_eval_test")


def _evaluate(name, predictions, **kwargs):
    """Results of predicted class maps {file: [[class]]}, as one-hot logits."""
    evaluator = SemSegEvaluator(name, distributed=False, **kwargs)
    for file, classes in predictions.items():
        logits = torch.nn.functional.one_hot(torch.tensor(classes), 3).permute(2, 0, 1).float()
        evaluator.process([{"file_name": f"images/{file}"}], [{"sem_seg": logits}])
    return evaluator.evaluate()["sem_seg"]


def test_perfect_predictions(dataset, tmp_path):
    perfect = {"a.png": [[0, 0, 1], [1, 2, 0]], "b.png": [[2, 2]]}  # the ignored pixel may be anything
    results = _evaluate(dataset, perfect, output_dir=str(tmp_path / "out"))
    assert {k: results[k] for k in ("mIoU", "fwIoU", "mACC", "pACC")} == {"mIoU": 100, "fwIoU": 100, "mACC": 100, "pACC": 100}
    assert [results[f"IoU-{c}"] for c in "xyz"] == [100, 100, 100]
    records = json.loads((tmp_path / "out" / "sem_seg_predictions.json").read_text())
    assert [(r["file_name"], r["category_id"]) for r in records] == [
        ("images/a.png", 0), ("images/a.png", 1), ("images/a.png", 2), ("images/b.png", 2)]


def test_imperfect_predictions_counted_by_hand(dataset):
    results = _evaluate(dataset, {"a.png": [[0, 1, 1], [1, 1, 0]], "b.png": [[2, 0]]})
    # Counted pixels (the ignored one left out): GT x 2, y 2, z 3; predicted x 2, y 4, z 1;
    # correct x 1, y 2, z 1. IoU x 1/3, y 2/4, z 1/3; accuracy x 1/2, y 1, z 1/3.
    expected = {
        "mIoU": 100 * (1 / 3 + 1 / 2 + 1 / 3) / 3,
        "fwIoU": 100 * (2 / 7 * 1 / 3 + 2 / 7 * 1 / 2 + 3 / 7 * 1 / 3),
        "IoU-x": 100 / 3, "IoU-y": 50, "IoU-z": 100 / 3,
        "mACC": 100 * (1 / 2 + 1 + 1 / 3) / 3,
        "pACC": 100 * 4 / 7,
        "ACC-x": 50, "ACC-y": 100, "ACC-z": 100 / 3,
    }
    assert results == pytest.approx(expected)


def test_class_without_ground_truth_is_nan_and_left_out(dataset):
    # Only image b (all z): x and y have no GT pixels.
    results = _evaluate(dataset, {"b.png": [[2, 1]]})
    assert np.isnan(results["IoU-x"]) and np.isnan(results["ACC-y"])
    assert results["mIoU"] == pytest.approx(50) and results["pACC"] == pytest.approx(50)


def test_bad_label_and_wrong_class_count(dataset, tmp_path):
    cv2.imwrite(str(tmp_path / "b.png"), np.array([[2, 7]], dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"b.png has label 7, neither a class in \[0, 3\) nor the ignore_label 255"):
        _evaluate(dataset, {"b.png": [[2, 2]]})
    evaluator = SemSegEvaluator(dataset, distributed=False)
    with pytest.raises(ValueError, match="predicts 4 classes but dataset 'sem_seg_eval_test' has 3"):
        evaluator.process([{"file_name": "images/b.png"}], [{"sem_seg": torch.zeros(4, 1, 2)}])
