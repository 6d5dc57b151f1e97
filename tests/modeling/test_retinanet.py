"""RetinaNet: its head, anchor labelling, focal and box losses computed by hand, and inference."""
import copy
import itertools
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from d2mask.config import ConfigError, get_cfg
from d2mask.engine import SimpleTrainer
from d2mask.layers import ShapeSpec
from d2mask.modeling import (
    Backbone,
    Box2BoxTransform,
    DefaultAnchorGenerator,
    LastLevelP6P7,
    Matcher,
    RetinaNet,
    RetinaNetHead,
    build_model,
)
from d2mask.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from d2mask.structures import Boxes, Instances
from d2mask.utils.events import EventStorage
from tests.common import REPO

K = 2  # foreground classes; label 2 is background


class _OneLevel(Backbone):
    """A stride-8 conv: a single feature level "p3" with 8 channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=8, padding=1)
        self._out_features = ["p3"]
        self._out_feature_channels = {"p3": 8}
        self._out_feature_strides = {"p3": 8}

    def forward(self, x):
        return {"p3": self.conv(x)}


def _retinanet(**kwargs):
    """A RetinaNet built without a config: one level, one 16 px anchor per location."""
    shape = [ShapeSpec(channels=8, stride=8)]
    args = dict(
        backbone=_OneLevel(),
        head=RetinaNetHead(input_shape=shape, num_classes=K, num_anchors=1, conv_dims=[8]),
        head_in_features=["p3"],
        anchor_generator=DefaultAnchorGenerator(sizes=[[16]], aspect_ratios=[[1.0]], strides=[8]),
        box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
        anchor_matcher=Matcher(thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True),
        num_classes=K,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
    )
    args.update(kwargs)
    return RetinaNet(**args)


def test_head_outputs_and_prior_initialisation():
    head = RetinaNetHead(input_shape=[ShapeSpec(channels=8)] * 2, num_classes=3, num_anchors=9, conv_dims=[8, 8],
                         prior_prob=0.01)
    logits, deltas = head([torch.zeros(2, 8, 6, 5), torch.zeros(2, 8, 3, 3)])
    assert [tuple(x.shape) for x in logits] == [(2, 27, 6, 5), (2, 27, 3, 3)]
    assert [tuple(x.shape) for x in deltas] == [(2, 36, 6, 5), (2, 36, 3, 3)]
    # every anchor and class starts at the prior foreground probability
    assert torch.allclose(torch.sigmoid(logits[0]), torch.full_like(logits[0], 0.01), atol=1e-3)
    assert [name for name, _ in head.named_children()] == ["cls_subnet", "bbox_subnet", "cls_score", "bbox_pred"]


def test_head_batchnorm_keeps_statistics_per_level_with_detectron2s_names():
    head = RetinaNetHead(input_shape=[ShapeSpec(channels=4)] * 2, num_classes=1, num_anchors=1, conv_dims=[4],
                         norm="BN")
    # Detectron2's CycleBatchNormList: L affine-free batch norms, one shared weight and bias
    assert [k for k in head.state_dict() if k.startswith("cls_subnet.1.")] == [
        "cls_subnet.1.weight", "cls_subnet.1.bias",
        *(f"cls_subnet.1.{i}.{b}" for i in (0, 1) for b in ("running_mean", "running_var", "num_batches_tracked")),
    ]
    conv = head.cls_subnet[0]
    level0, level1 = torch.zeros(2, 4, 3, 3), torch.ones(2, 4, 2, 2)
    head([level0, level1])
    # momentum 0.1 from 0: a tenth of each level's own batch mean, unmixed
    bn0, bn1 = head.cls_subnet[1][0], head.cls_subnet[1][1]
    assert torch.allclose(bn0.running_mean, torch.zeros(4))  # conv of zeros is its zero bias
    assert torch.allclose(bn1.running_mean, 0.1 * conv(level1).mean(dim=(0, 2, 3)), atol=1e-7)
    head([level0, level1])  # a second step cycles through the same norms in level order
    assert torch.allclose(bn0.running_mean, torch.zeros(4))
    assert bn0.num_batches_tracked == bn1.num_batches_tracked == 2


def test_permute_to_N_HWA_K_follows_the_anchor_order():
    a, k, h, w = 2, 3, 2, 4
    x = torch.arange(1 * a * k * h * w, dtype=torch.float32).view(1, a * k, h, w)
    out = permute_to_N_HWA_K(x, k)
    assert out.shape == (1, h * w * a, k)
    for y in range(h):
        for xx in range(w):
            for anchor in range(a):
                for c in range(k):
                    assert out[0, (y * w + xx) * a + anchor, c] == x[0, anchor * k + c, y, xx]


def test_label_anchors_by_iou_thresholds():
    model = _retinanet()
    anchors = [Boxes(torch.tensor([
        [0.0, 0.0, 10.0, 10.0],   # IoU 1: foreground
        [0.0, 0.0, 10.0, 22.5],   # IoU 100 / 225 = 0.44, in [0.4, 0.5): ignored
        [20.0, 20.0, 30.0, 30.0],  # IoU 0: background
        [5.0, 0.0, 15.0, 10.0],   # IoU 50 / 150 = 0.33: background
    ]))]
    gt = Instances((32, 32), gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]])), gt_classes=torch.tensor([1]))
    empty = Instances((32, 32), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
    labels, boxes = model.label_anchors(anchors, [gt, empty])
    assert labels[0].tolist() == [1, -1, K, K]
    assert torch.equal(boxes[0][0], torch.tensor([0.0, 0.0, 10.0, 10.0]))
    assert labels[1].tolist() == [K] * 4 and not boxes[1].any()


def _focal(logit, target, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-logit))
    p_t = p if target else 1 - p
    alpha_t = alpha if target else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


def test_losses_by_hand():
    model = _retinanet()
    anchors = [Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 22.5]]))]
    logits = [torch.tensor([[[0.0, 2.0], [1.0, -1.0], [5.0, 5.0]]])]  # (N=1, R=3, K=2)
    deltas = [torch.tensor([[[0.2, 0.0, 0.0, 0.1], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]]])]
    gt_labels = [torch.tensor([1, K, -1])]  # foreground of class 1, background, ignored
    gt_boxes = [torch.tensor([[1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])]

    losses = model.losses(anchors, logits, gt_labels, deltas, gt_boxes)
    # the normaliser is a moving average of the foreground count starting at 100: 0.9 * 100 + 0.1 * 1
    normalizer = 90.1
    focal = _focal(0.0, 0) + _focal(2.0, 1) + _focal(1.0, 0) + _focal(-1.0, 0)  # the ignored anchor adds nothing
    assert losses["loss_cls"].item() == pytest.approx(focal / normalizer, rel=1e-5)
    # target deltas (0.1, 0.1, 0, 0) for a 1 px shift of a 10 px box; L1 (SMOOTH_L1_LOSS_BETA 0)
    assert losses["loss_box_reg"].item() == pytest.approx((0.1 + 0.1 + 0.0 + 0.1) / normalizer, rel=1e-5)

    again = model.losses(anchors, logits, gt_labels, deltas, gt_boxes)
    assert again["loss_cls"].item() == pytest.approx(focal / (0.9 * normalizer + 0.1), rel=1e-5)


def _train_retinanet(model, start_iter, max_iter, state=None):
    """Trains `model` on one fixed image from `start_iter`, after loading a trainer `state`:
    (the trainer's state, the loss_cls of each iteration)."""
    gt = Instances((64, 48), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 30.0, 40.0]])), gt_classes=torch.tensor([0]))
    image = torch.randint(0, 255, (3, 64, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    trainer = SimpleTrainer(model, itertools.repeat([{"image": image, "instances": gt}]),
                            torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    if state is not None:
        trainer.load_state_dict(state)
    trainer.train(start_iter, max_iter)
    return trainer.state_dict(), [v for v, _ in trainer.storage.history("loss_cls").values()]


def test_resumed_training_keeps_the_loss_normalizer_outside_the_weights():
    torch.manual_seed(0)
    uninterrupted = _retinanet()
    weights = copy.deepcopy(uninterrupted.state_dict())
    _, losses = _train_retinanet(uninterrupted, 0, 3)

    first = _retinanet()
    first.load_state_dict(weights)
    state, _ = _train_retinanet(first, 0, 2)
    assert state["model_training_state"] == {"": {"loss_normalizer": pytest.approx(first.loss_normalizer)}}
    resumed = _retinanet()
    resumed.load_state_dict(first.state_dict())
    _, resumed_losses = _train_retinanet(resumed, 2, 3, state)
    assert resumed_losses == pytest.approx(losses[2:], rel=1e-6)
    # the weights' names stay Detectron2's, whose checkpoints have no normaliser
    assert "loss_normalizer" not in first.state_dict()


@pytest.mark.parametrize("topk, most, expected", [
    # the 0.3 candidate is not among the 3 best of the level; anchor 1's class 0 box is suppressed by anchor 0's
    (3, 100, [(0, 0.9, [0.0, 0.0, 10.0, 10.0]), (1, 0.6, [20.0, 20.0, 30.0, 30.0])]),
    (4, 100, [(0, 0.9, [0.0, 0.0, 10.0, 10.0]), (1, 0.6, [20.0, 20.0, 30.0, 30.0]), (1, 0.3, [1.0, 0.0, 11.0, 10.0])]),
    # max_detections_per_image: the best survivors; < 0 keeps them all, as the box head's topk does
    (4, 2, [(0, 0.9, [0.0, 0.0, 10.0, 10.0]), (1, 0.6, [20.0, 20.0, 30.0, 30.0])]),
    (4, -1, [(0, 0.9, [0.0, 0.0, 10.0, 10.0]), (1, 0.6, [20.0, 20.0, 30.0, 30.0]), (1, 0.3, [1.0, 0.0, 11.0, 10.0])]),
])
def test_inference_single_image(topk, most, expected):
    model = _retinanet(test_topk_candidates=topk, test_score_thresh=0.05, test_nms_thresh=0.5, max_detections_per_image=most)
    anchors = [Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [20.0, 20.0, 30.0, 30.0]]))]
    scores = [torch.tensor([[0.9, 0.01], [0.8, 0.3], [0.02, 0.6]])]
    result = model.inference_single_image(anchors, scores, [torch.zeros(3, 4)], (32, 32))
    got = list(zip(result.pred_classes.tolist(), result.scores.tolist(), result.pred_boxes.tensor.tolist()))
    assert [(c, round(s, 4), b) for c, s, b in got] == expected


def test_forward_trains_and_detects_at_the_input_size():
    torch.manual_seed(0)
    model = _retinanet(test_score_thresh=0.0)
    gt = Instances((64, 48), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 30.0, 40.0]])), gt_classes=torch.tensor([0]))
    image = torch.randint(0, 255, (3, 64, 48), dtype=torch.uint8)
    losses = model([{"image": image, "instances": gt}])
    assert set(losses) == {"loss_cls", "loss_box_reg"} and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([{"image": image, "height": 128, "width": 96}])[0]["instances"]
    assert out.image_size == (128, 96) and len(out) > 0
    assert (out.pred_boxes.tensor[:, 2:] <= torch.tensor([96.0, 128.0])).all()


def test_training_visualisation_shows_detections_every_vis_period():
    model = _retinanet(vis_period=2, input_format="BGR", test_score_thresh=0.0)
    gt = Instances((64, 48), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 30.0, 40.0]])), gt_classes=torch.tensor([0]))
    inputs = [{"image": torch.randint(0, 255, (3, 64, 48), dtype=torch.uint8), "instances": gt}]
    with EventStorage(start_iter=3) as storage:
        model(inputs)  # iteration 3: nothing
        assert storage.images == []
        storage.iter = 4
        model(inputs)
        (name, image, iteration), = storage.images
    assert "20 highest-scoring detections" in name and iteration == 4
    assert image.shape == (3, 64, 96) and image.dtype == np.uint8
    with pytest.raises(ValueError, match="input_format"):
        _retinanet(vis_period=2)


def test_p6p7_top_block_and_retinanet_backbone_levels():
    block = LastLevelP6P7(in_channels=16, out_channels=8)
    p6, p7 = block(torch.zeros(1, 16, 7, 10))
    assert p6.shape == (1, 8, 4, 5) and p7.shape == (1, 8, 2, 3)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "Shapes", "retinanet_R_18_FPN_shapes.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert {k: v.stride for k, v in model.backbone.output_shape().items()} == {
        "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128
    }
    assert model.head.cls_score.out_channels == 9 * 3  # 3 sizes x 3 aspect ratios, 3 shapes classes


def test_in_features_that_the_backbone_lacks_are_named():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "Shapes", "retinanet_R_18_FPN_shapes.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RETINANET.IN_FEATURES", "['p3', 'p9']"])
    with pytest.raises(ConfigError, match=r"MODEL.RETINANET.IN_FEATURES \['p3', 'p9'\]: each must be a backbone "
                                          r"output; the backbone produces \['p3', 'p4', 'p5', 'p6', 'p7'\]"):
        build_model(cfg)
