"""Panoptic FPN: the combination of instances and stuff on a hand-made case, and the model's losses and
outputs."""
import pytest
import torch

from d2mask.modeling import PanopticFPN, build_model
from d2mask.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from d2mask.structures import BitMasks, Boxes, Instances
from d2mask.utils.events import EventStorage
from tests.common import tiny_rcnn_cfg

H, W = 4, 6
SEMANTIC = torch.tensor([
    [2, 0, 0, 0, 2, 2],
    [0, 0, 0, 0, 1, 1],
    [0, 0, 0, 0, 1, 1],
    [2, 2, 2, 2, 3, 3],
])


def _mask(rows, cols):
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def _instances():
    # name: (score, class, mask)
    spec = {
        "E": (0.4, 1, _mask(3, slice(0, 6))),  # below the score threshold
        "B": (0.8, 0, _mask(slice(0, 2), slice(1, 4))),  # 4 of its 6 pixels under A
        "A": (0.9, 2, _mask(slice(0, 2), slice(0, 3))),
        "D": (0.6, 1, torch.zeros(H, W, dtype=torch.bool)),  # empty
        "F": (0.65, 0, _mask(2, slice(1, 3))),  # 1 of its 2 pixels under C: exactly the threshold
        "C": (0.7, 1, _mask(slice(1, 3), slice(2, 4))),  # 1 of its 4 pixels under A
    }
    instances = Instances((H, W))
    instances.scores = torch.tensor([s for s, _, _ in spec.values()])
    instances.pred_classes = torch.tensor([c for _, c, _ in spec.values()])
    instances.pred_masks = torch.stack([m for _, _, m in spec.values()])
    return instances, {name: i for i, name in enumerate(spec)}


def test_combine_pastes_instances_by_score_then_the_large_stuff():
    instances, index = _instances()
    panoptic, segments = combine_semantic_and_instance_outputs(instances, SEMANTIC, 0.5, 3, 0.5)
    # A (1), C (2) on what A left, F (3) on what C left; B overlaps A too much. Then the free pixels
    # of class 1 (4 pixels) and 2 (6; its pixel under A is not counted); class 3 has 2 < 3 pixels.
    assert panoptic.dtype == torch.int32
    assert panoptic.tolist() == [
        [1, 1, 1, 0, 5, 5],
        [1, 1, 1, 2, 4, 4],
        [0, 3, 2, 2, 4, 4],
        [5, 5, 5, 5, 0, 0],
    ]
    things = [(s["id"], s["instance_id"], s["category_id"]) for s in segments if s["isthing"]]
    assert things == [(1, index["A"], 2), (2, index["C"], 1), (3, index["F"], 0)]
    assert [s["score"] for s in segments if s["isthing"]] == pytest.approx([0.9, 0.7, 0.65])
    stuff = [(s["id"], s["category_id"], s["area"]) for s in segments if not s["isthing"]]
    assert stuff == [(4, 1, 4), (5, 2, 6)]


def test_combine_thresholds():
    instances, index = _instances()
    # A looser overlap threshold keeps B on the 2 pixels A left it, and C still overlaps 2 of 4 pixels.
    panoptic, segments = combine_semantic_and_instance_outputs(instances, SEMANTIC, 0.7, 3, 0.5)
    assert [s["instance_id"] for s in segments if s["isthing"]] == [index[n] for n in "ABCF"]
    assert panoptic[:2, 3].tolist() == [2, 2]
    # A lower score threshold lets E in, on the free row 3; the stuff then keeps only class 1.
    _, segments = combine_semantic_and_instance_outputs(instances, SEMANTIC, 0.5, 3, 0.3)
    assert [s["instance_id"] for s in segments if s["isthing"]] == [index[n] for n in "ACFE"]
    assert [(s["category_id"], s["area"]) for s in segments if not s["isthing"]] == [(1, 4)]
    # No instance at all: every stuff class of at least stuff_area_thresh pixels.
    _, segments = combine_semantic_and_instance_outputs(instances[:0], SEMANTIC, 0.5, 2, 0.5)
    assert [(s["category_id"], s["area"]) for s in segments] == [(1, 4), (2, 7), (3, 2)]


def _panoptic_cfg():
    cfg = tiny_rcnn_cfg("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml")
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 8
    cfg.MODEL.SEM_SEG_HEAD.NORM = ""
    cfg.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 16
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.0
    return cfg


def _inputs():
    instances = Instances((32, 48))
    instances.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 20.0, 24.0]]))
    instances.gt_classes = torch.tensor([1])
    masks = torch.zeros(1, 32, 48, dtype=torch.bool)
    masks[0, 8:24, 8:20] = True
    instances.gt_masks = BitMasks(masks)
    sem_seg = torch.ones(32, 48, dtype=torch.int64)
    sem_seg[masks[0]] = 0
    sem_seg[:, 40:] = 2
    image = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8)
    return [{"image": image, "instances": instances, "sem_seg": sem_seg, "height": 64, "width": 96}]


def _losses(instance_loss_weight):
    cfg = _panoptic_cfg()
    cfg.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT = instance_loss_weight
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.manual_seed(1)
    return {k: v.item() for k, v in model(_inputs()).items()}


def test_losses_and_instance_loss_weight():
    plain, weighted = _losses(1.0), _losses(2.0)
    assert set(plain) == {"loss_sem_seg", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
    for name in plain:  # the ROI heads' losses only
        factor = 2.0 if name in ("loss_cls", "loss_box_reg", "loss_mask") else 1.0
        assert weighted[name] == pytest.approx(factor * plain[name], rel=1e-5), name


def test_inference_outputs_and_combine_enabled():
    torch.manual_seed(0)
    model = build_model(_panoptic_cfg())
    assert isinstance(model, PanopticFPN)
    model.eval()
    with torch.no_grad():
        (output,) = model(_inputs())
    assert output["sem_seg"].shape == (3, 64, 96)
    assert output["instances"].image_size == (64, 96)
    panoptic, segments = output["panoptic_seg"]
    assert panoptic.shape == (64, 96)
    assert set(panoptic.unique().tolist()) <= {0} | {s["id"] for s in segments}

    model.combine_enabled = False
    with torch.no_grad():
        (output,) = model(_inputs())
    assert set(output) == {"sem_seg", "instances"}


def test_vis_period_draws_the_proposals():
    cfg = _panoptic_cfg()
    cfg.VIS_PERIOD = 1
    model = build_model(cfg)
    with EventStorage() as storage:
        model(_inputs())
    assert "Left: GT bounding boxes;  Right: Predicted proposals" in [name for name, _, _ in storage.images]


def test_detectron2_python_config_loads_with_its_loaders_and_evaluators():
    from d2mask.config import LazyConfig
    from d2mask.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator
    from tests.common import REPO

    cfg = LazyConfig.load(f"{REPO}/configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.py")
    assert cfg.model._target_ is PanopticFPN and cfg.model.sem_seg_head.num_classes == 54
    assert cfg.model.sem_seg_head.loss_weight == 0.5  # semantic_fpn.py's head, weighed as Detectron2's YAML
    assert list(cfg.dataloader.train.dataset.names) == ["coco_2017_train_panoptic_separated"]
    assert cfg.dataloader.train.dataset.filter_empty is False
    assert [e._target_ for e in cfg.dataloader.evaluator] == [COCOEvaluator, SemSegEvaluator, COCOPanopticEvaluator]
    assert {e.dataset_name for e in cfg.dataloader.evaluator} == {"coco_2017_val_panoptic_separated"}
