"""Cityscapes' metrics on hand-computed cases: the instance-level AP (matching, duplicates, void,
crowd and small-instance regions, cityscapesScripts' curve integration) and the pixel-level IoU, iIoU
and their category versions."""
import logging
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.datasets import load_cityscapes_semantic
from d2mask.data.datasets.builtin_meta import get_builtin_metadata
from d2mask.evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from d2mask.evaluation.cityscapes_evaluation import _average_precision
from d2mask.structures import Instances
from tests.common import CITYSCAPES_STEM, write_cityscapes_tree

CAR = 2  # index in thing_classes
CAR_SIZE, PERSON_SIZE, MOTORCYCLE_SIZE = 12794.0202738185, 3462.4756337644, 6298.7200839748


@pytest.fixture
def dataset(tmp_path):
    """A registered one-image Cityscapes split (tests.common.write_cityscapes_tree)."""
    image_dir, gt_dir = write_cityscapes_tree(str(tmp_path))
    name = "test_cityscapes_eval"
    DatasetCatalog.register(name, lambda: load_cityscapes_semantic(image_dir, gt_dir))
    MetadataCatalog.get(name).set(gt_dir=gt_dir, ignore_label=255, **get_builtin_metadata("cityscapes"))
    yield name, os.path.join(image_dir, "aachen", f"{CITYSCAPES_STEM}_leftImg8bit.png"), gt_dir
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_average_precision_hand_case():
    # 3 GT; detections 0.9 (true), 0.8 (false), 0.7 (true). Points (precision, recall) at scores
    # >= 0.7, 0.8, 0.9 and the final (1, 0): (2/3, 2/3), (1/2, 1/3), (1, 1/3), (1, 0); each weighs
    # half the recall between its neighbours: 1/6 each.
    ap = _average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), num_gt=3)
    assert ap == pytest.approx((2 / 3 + 1 / 2 + 1 + 1) / 6)
    assert _average_precision(np.zeros(0), np.zeros(0, bool), num_gt=2) == 0.0


def _box(shape, rows, cols):
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
    return mask


def test_instance_ap_hand_case(dataset):
    name, file_name, gt_dir = dataset
    ids = np.full((30, 40), 7)  # road
    ids[0:10, 0:20] = 26000  # car A, 200 px
    ids[20:30, 0:10] = 26001  # car B, 100 px: just large enough to count
    ids[20:30, 30:40] = 26  # a crowd of cars
    ids[12:16, 20:30] = 26002  # a car of 40 px: too small to count
    ids[0:10, 30:40] = 0  # unlabeled (void)
    Image.fromarray(ids.astype(np.uint16)).save(os.path.join(gt_dir, "aachen", f"{CITYSCAPES_STEM}_gtFine_instanceIds.png"))
    shape = ids.shape
    predictions = [  # (mask, class, score)
        (_box(shape, (0, 9), (0, 19)), CAR, 0.9),  # A exactly: a true positive at every threshold
        (_box(shape, (0, 9), (0, 11)), CAR, 0.8),  # IoU 0.6 with A: duplicate, then unmatched; false positive
        (_box(shape, (20, 29), (0, 12)), CAR, 0.7),  # IoU 100/130 with B: true positive up to t = 0.75
        (_box(shape, (20, 29), (30, 39)), CAR, 0.6),  # on the crowd: ignored
        (_box(shape, (0, 9), (28, 39)), CAR, 0.5),  # 100 of 120 px on void: ignored while t < 0.83
        (_box(shape, (12, 15), (20, 29)), CAR, 0.4),  # on the small car: ignored
    ]
    instances = Instances(shape)
    instances.pred_masks = torch.from_numpy(np.stack([m for m, _, _ in predictions]))
    instances.pred_classes = torch.tensor([c for _, c, _ in predictions])
    instances.scores = torch.tensor([s for _, _, s in predictions])
    evaluator = CityscapesInstanceEvaluator(name)
    evaluator.reset()
    evaluator.process([{"file_name": file_name}], [{"instances": instances}])
    results = evaluator.evaluate()["segm"]
    # t = 0.5 .. 0.75: TP 0.9, FP 0.8, TP 0.7 of 2 GT -> points (2/3, 1), (1/2, 1/2), (1, 1/2), (1, 0), weights 1/4 each.
    # t = 0.8: TP 0.9, FP 0.8, FP 0.7 -> (1/3, 1/2), (1/2, 1/2), (1, 1/2), (1, 0), weights 0, 0, 1/4, 1/4.
    # t >= 0.85: the void prediction is a false positive too; AP again 1/2.
    car = [19 / 24] * 6 + [0.5] * 4
    assert results["AP-car"] == pytest.approx(100 * np.mean(car))
    assert math.isnan(results["AP-person"])  # no GT
    assert results["AP"] == pytest.approx(100 * np.mean(car))  # the other classes have no GT: left out
    assert results["AP50"] == pytest.approx(100 * 19 / 24)


def test_instance_evaluator_without_predictions_counts_the_gt(dataset):
    name, file_name, gt_dir = dataset
    ids = np.full((30, 40), 7)
    ids[0:10, 0:20] = 26000
    Image.fromarray(ids.astype(np.uint16)).save(os.path.join(gt_dir, "aachen", f"{CITYSCAPES_STEM}_gtFine_instanceIds.png"))
    evaluator = CityscapesInstanceEvaluator(name)
    evaluator.process([{"file_name": file_name}], [{}])
    results = evaluator.evaluate()["segm"]
    assert results["AP-car"] == 0.0 and results["AP"] == 0.0


def test_instance_evaluator_with_panoptic_metadata(dataset):
    """Panoptic-DeepLab's metadata (cityscapes_fine_panoptic_*) lists all 19 classes as thing_classes:
    its contiguous ids are train ids, and predictions of classes without instances are left out."""
    name, file_name, gt_dir = dataset
    ids = np.full((30, 40), 7)
    ids[0:10, 0:20] = 26000
    Image.fromarray(ids.astype(np.uint16)).save(os.path.join(gt_dir, "aachen", f"{CITYSCAPES_STEM}_gtFine_instanceIds.png"))
    MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(gt_dir=gt_dir, **get_builtin_metadata("cityscapes_panoptic"))
    instances = Instances(ids.shape)
    instances.pred_masks = torch.from_numpy(np.stack([ids == 26000, ids == 7]))
    instances.pred_classes = torch.tensor([13, 0])  # car, road
    instances.scores = torch.tensor([0.5, 0.9])
    evaluator = CityscapesInstanceEvaluator(name)
    evaluator.process([{"file_name": file_name}], [{"instances": instances}])
    results = evaluator.evaluate()["segm"]
    assert results["AP-car"] == 100.0 and results["AP"] == 100.0


def test_sem_seg_hand_case(dataset):
    name, file_name, _ = dataset
    # GT (tests.common): road 120 px, car 20 px (instance) + 12 px (crowd), person 75 px, motorcycle
    # 4 px, caravan 9 px (ignored). Predicted: road everywhere but car on rows 2..6, columns 2..7:
    # the car's 20 px and 10 px of the person.
    pred = np.zeros((12, 20), dtype=np.int64)
    pred[2:7, 2:8] = 13
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), 19).permute(2, 0, 1).float()
    evaluator = CityscapesSemSegEvaluator(name)
    evaluator.reset()
    evaluator.process([{"file_name": file_name}], [{"sem_seg": logits}])
    results = evaluator.evaluate()["sem_seg"]
    # road: TP 120, FP 65 + 12 + 4 (person, crowd, motorcycle); car: TP 20, FP 10, FN 12; person and
    # motorcycle: IoU 0; the 15 classes without pixels are left out.
    assert results["IoU-road"] == pytest.approx(100 * 120 / 201) and results["IoU-car"] == pytest.approx(100 * 20 / 42)
    assert math.isnan(results["IoU-sky"])
    assert results["IoU"] == pytest.approx(100 * (120 / 201 + 20 / 42) / 4)
    # categories: flat as road; human 0; vehicle TP 20 of 36 GT px, FP 10
    assert results["IoU_sup"] == pytest.approx(100 * (120 / 201 + 20 / 46) / 3)
    # instances (the crowd and the caravan are not): car fully found (weight CAR_SIZE / 20), the
    # person and the motorcycle not at all; FP pixels as in IoU.
    assert results["iIoU"] == pytest.approx(100 * (CAR_SIZE / (CAR_SIZE + 10)) / 3)
    assert results["iIoU_sup"] == pytest.approx(100 * (CAR_SIZE / (CAR_SIZE + 10 + MOTORCYCLE_SIZE)) / 2)


def test_bad_metadata_one_line(dataset):
    name, _, _ = dataset
    MetadataCatalog.get("test_cityscapes_not").set(thing_classes=["cat"], gt_dir="x")
    try:
        with pytest.raises(ValueError, match="'cat'"):
            CityscapesInstanceEvaluator("test_cityscapes_not")
        MetadataCatalog.remove("test_cityscapes_not")
        MetadataCatalog.get("test_cityscapes_not").set(thing_classes=["road", "sky"], gt_dir="x")  # no instance class
        with pytest.raises(ValueError, match="none of those"):
            CityscapesInstanceEvaluator("test_cityscapes_not")
    finally:
        MetadataCatalog.remove("test_cityscapes_not")


def test_evaluator_factory(dataset):
    from d2mask.config import get_cfg
    from d2mask.engine import DefaultTrainer

    name, _, _ = dataset
    meta = MetadataCatalog.get(name).as_dict()
    MetadataCatalog.get(name).set(evaluator_type="cityscapes_sem_seg")
    assert isinstance(DefaultTrainer.build_evaluator(get_cfg(), name), CityscapesSemSegEvaluator)
    MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(**{k: v for k, v in meta.items() if k != "name"}, evaluator_type="cityscapes_instance")
    assert isinstance(DefaultTrainer.build_evaluator(get_cfg(), name), CityscapesInstanceEvaluator)


def test_trainer_evaluates_the_builtin_names(tmp_path, caplog):
    """DefaultTrainer.test on cityscapes_fine_{instance_seg,sem_seg}_val below the datasets root: the
    built-in datasets, the test loader, a (random) model and the evaluators their metadata name."""
    from d2mask.config import get_cfg
    from d2mask.data.datasets import set_datasets_root
    from d2mask.engine import DefaultTrainer
    from tests.common import REPO, tiny_rcnn_cfg

    write_cityscapes_tree(str(tmp_path / "cityscapes"))
    set_datasets_root(str(tmp_path))
    try:
        cfg = tiny_rcnn_cfg(num_classes=8)
        cfg.DATASETS.TEST = ("cityscapes_fine_instance_seg_val",)
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.DATALOADER.NUM_WORKERS = 64, 128, 0
        results = DefaultTrainer.test(cfg, DefaultTrainer.build_model(cfg))
        # the split's instances are all under 100 pixels: no class has GT that counts
        assert {"AP", "AP50", "AP-car"} <= set(results["segm"]) and math.isnan(results["segm"]["AP"])

        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(REPO, "configs", "Shapes", "semantic_R_18_FPN_shapes.yaml"))
        cfg.MODEL.DEVICE, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = "cpu", 19, 32
        cfg.DATASETS.TEST = ("cityscapes_fine_sem_seg_val",)
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.DATALOADER.NUM_WORKERS = 64, 128, 0
        with caplog.at_level(logging.INFO, logger="d2mask.engine.default_trainer"):
            results = DefaultTrainer.test(cfg, DefaultTrainer.build_model(cfg))
        assert {"IoU", "iIoU", "IoU_sup", "iIoU_sup", "IoU-road"} <= set(results["sem_seg"])
        assert f"sem_seg: IoU {results['sem_seg']['IoU']:.2f}  iIoU" in caplog.text  # the run's summary line
        assert 0 <= results["sem_seg"]["IoU"] <= 100  # road, car, person and motorcycle have GT
    finally:
        set_datasets_root(None)
