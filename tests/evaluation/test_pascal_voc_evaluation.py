"""PascalVOCDetectionEvaluator on a two-image VOC-layout directory with hand-computed APs."""
import uuid

import numpy as np

import pytest
import torch

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.datasets import register_pascal_voc
from d2mask.evaluation.pascal_voc_evaluation import PascalVOCDetectionEvaluator, voc_ap
from d2mask.structures import Boxes, Instances

CLASSES = ["cat", "dog"]
# VOC pixel indices (from 1, last pixel included): in continuous coordinates the top-left moves by -1
GT = {
    "img1": [("cat", (1, 1, 10, 10), 0), ("cat", (31, 31, 40, 40), 1)],  # the second is difficult
    "img2": [("cat", (1, 1, 10, 10), 0), ("dog", (51, 51, 60, 60), 0)],
}
A = [0.0, 0.0, 10.0, 10.0]  # img1's and img2's cat boxes in continuous coordinates
DIFFICULT = [30.0, 30.0, 40.0, 40.0]
FAR = [60.0, 0.0, 70.0, 10.0]
A_72 = [0.0, 0.0, 10.0, 7.2]  # IoU 0.72 with A


def _xml(objects):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return f"<annotation><size><width>80</width><height>80</height></size>{objs}</annotation>"


@pytest.fixture
def voc(tmp_path):
    """`voc(year) -> name` of the split holding GT, unregistered afterwards."""
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "test.txt").write_text("\n".join(GT))
    for image_id, objects in GT.items():
        (tmp_path / "Annotations" / f"{image_id}.xml").write_text(_xml(objects))
    names = []

    def _make(year):
        name = f"test_voc_{uuid.uuid4().hex[:8]}"
        register_pascal_voc(name, str(tmp_path), "test", year, CLASSES)
        names.append(name)
        return name

    yield _make
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _evaluate(name, per_image):
    evaluator = PascalVOCDetectionEvaluator(name)
    evaluator.reset()
    for image_id, detections in per_image.items():
        boxes, scores, classes = zip(*detections) if detections else ((), (), ())
        instances = Instances((80, 80), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
                              scores=torch.tensor(scores, dtype=torch.float32),
                              pred_classes=torch.tensor(classes, dtype=torch.int64))
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    return evaluator.evaluate()["bbox"]


def test_voc_ap_by_hand():
    recall, precision = [0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]
    # 11 points: precision 1 up to recall 0.5 (6 points), then 2/3 (5 points)
    assert voc_ap(np.array(recall), np.array(precision), use_07_metric=True) == pytest.approx((6 + 5 * 2 / 3) / 11)
    # area: 0.5 of recall at precision 1, 0.5 at the envelope's 2/3
    assert voc_ap(np.array(recall), np.array(precision), use_07_metric=False) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_perfect_detections_give_100(voc):
    perfect = {"img1": [(A, 0.9, 0)], "img2": [(A, 0.8, 0), ([50.0, 50.0, 60.0, 60.0], 0.7, 1)]}
    for year in (2007, 2012):
        assert _evaluate(voc(year), perfect) == pytest.approx({"AP": 100.0, "AP50": 100.0, "AP75": 100.0})


@pytest.mark.parametrize("year, ap_good, ap_bad", [
    # cat's curve where img2's box counts (IoU 0.72 > thresholds 0.5 ... 0.7): TP, FP, TP, recall
    # (.5, .5, 1), precision (1, .5, 2/3); where it does not: TP, FP, FP, recall .5 throughout
    (2007, (6 + 5 * 2 / 3) / 11, 6 / 11),
    (2012, 0.5 + 0.5 * 2 / 3, 0.5),
])
def test_imperfect_detections_by_hand(voc, year, ap_good, ap_bad):
    detections = {
        # A found; the difficult box found (neither true nor false positive); a false positive
        "img1": [(A, 0.9, 0), (DIFFICULT, 0.8, 0), (FAR, 0.7, 0)],
        "img2": [(A_72, 0.6, 0)],  # the dog is never found: AP 0
    }
    result = _evaluate(voc(year), detections)
    # the mean over the 2 classes; 5 thresholds (0.5 ... 0.7) with the good cat curve, 5 without
    assert result["AP50"] == pytest.approx(100 * ap_good / 2)
    assert result["AP75"] == pytest.approx(100 * ap_bad / 2)
    assert result["AP"] == pytest.approx(100 * (5 * ap_good + 5 * ap_bad) / 10 / 2)


def test_missing_metadata_and_unknown_images_are_named(voc):
    name = voc(2012)
    evaluator = PascalVOCDetectionEvaluator(name)
    evaluator.process([{"image_id": "img9"}], [{"instances": Instances(
        (8, 8), pred_boxes=Boxes(torch.tensor([A])), scores=torch.tensor([0.5]), pred_classes=torch.tensor([0]))}])
    with pytest.raises(ValueError, match="image 'img9', which split 'test' does not list"):
        evaluator.evaluate()
    MetadataCatalog.get("test_voc_without_dirname").set(thing_classes=CLASSES)
    try:
        with pytest.raises(Exception, match=r"needs the metadata \['dirname', 'split', 'year'\]"):
            PascalVOCDetectionEvaluator("test_voc_without_dirname")
    finally:
        MetadataCatalog.remove("test_voc_without_dirname")


def test_train_net_chooses_it_by_evaluator_type(voc):
    from d2mask.config import get_cfg
    from d2mask.engine import DefaultTrainer

    assert isinstance(DefaultTrainer.build_evaluator(get_cfg(), voc(2007)), PascalVOCDetectionEvaluator)
