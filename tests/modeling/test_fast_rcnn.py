import math

import pytest
import torch

from d2mask.config import ConfigError, get_cfg
from d2mask.layers import ShapeSpec
from d2mask.modeling.box_regression import Box2BoxTransform
from d2mask.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference_single_image
from d2mask.structures import Boxes, Instances

A = [0.0, 0.0, 10.0, 10.0]
A_SHIFTED = [1.0, 0.0, 11.0, 10.0]  # IoU with A: 90 / 110
FAR = [50.0, 50.0, 60.0, 60.0]
OTHER = [30.0, 30.0, 40.0, 40.0]


def _predictor(num_classes=2, **kwargs):
    return FastRCNNOutputLayers(
        ShapeSpec(channels=4), box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)), num_classes=num_classes, **kwargs
    )


def test_per_class_nms_on_hand_made_boxes():
    # 3 regions x 2 classes; columns are (class 0 box, class 1 box).
    boxes = torch.tensor([A + A, A_SHIFTED + FAR, OTHER + A])
    scores = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.15, 0.05], [0.1, 0.6, 0.3]])
    result, region = fast_rcnn_inference_single_image(boxes, scores, (100, 100), 0.1, 0.5, 100)
    # Candidates (> 0.1): (r0, c0) .9, (r1, c0) .8, (r1, c1) .15, (r2, c1) .6. In class 0 the shifted box
    # is suppressed by A; in class 1, r2's box equals A but another class never suppresses it.
    assert result.scores.tolist() == pytest.approx([0.9, 0.6, 0.15])
    assert result.pred_classes.tolist() == [0, 1, 1]
    assert region.tolist() == [0, 2, 1]
    assert result.pred_boxes.tensor.tolist() == [A, A, FAR]
    assert result.image_size == (100, 100)

    top2, _ = fast_rcnn_inference_single_image(boxes, scores, (100, 100), 0.1, 0.5, 2)
    assert top2.scores.tolist() == pytest.approx([0.9, 0.6])
    # A looser NMS keeps the shifted box.
    loose, _ = fast_rcnn_inference_single_image(boxes, scores, (100, 100), 0.1, 0.9, 100)
    assert len(loose) == 4


def test_inference_clips_and_drops_non_finite_and_can_return_nothing():
    boxes = torch.tensor([[-5.0, -5.0, 120.0, 50.0], [float("nan"), 0.0, 5.0, 5.0]])  # class-agnostic
    scores = torch.tensor([[0.7, 0.3], [0.9, 0.1]])
    result, region = fast_rcnn_inference_single_image(boxes, scores, (40, 100), 0.05, 0.5, 100)
    assert result.pred_boxes.tensor.tolist() == [[0.0, 0.0, 100.0, 40.0]]
    assert region.tolist() == [0]

    empty, region = fast_rcnn_inference_single_image(boxes, scores, (40, 100), 0.95, 0.5, 100)
    assert len(empty) == 0 and len(region) == 0
    assert empty.pred_boxes.tensor.shape == (0, 4)
    assert empty.pred_classes.dtype == torch.int64 and empty.scores.shape == (0,)


def _hand_made_case():
    """Two images, K = 2: image 0 has a class-0 and a background region, image 1 a class-1 region."""
    p0 = Instances((50, 50))
    p0.proposal_boxes = Boxes(torch.tensor([A, [20.0, 20.0, 30.0, 30.0]]))
    p0.gt_classes = torch.tensor([0, 2])
    p0.gt_boxes = Boxes(torch.tensor([[1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 1.0, 1.0]]))
    p1 = Instances((50, 50))
    p1.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 20.0, 20.0]]))
    p1.gt_classes = torch.tensor([1])
    p1.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 20.0, 40.0]]))
    logits = torch.zeros(3, 3)
    logits[1, 2] = math.log(2.0)  # background probability 2 / 4
    deltas = torch.zeros(3, 8)
    deltas[0, :4] = torch.tensor([0.5, 0.0, 0.0, 0.0])
    deltas[0, 4:] = 100.0  # another class's slot: must be ignored
    deltas[1] = 100.0  # a background region: must be ignored
    deltas[2, :4] = 100.0  # class 0's slot of the class-1 region: must be ignored
    return (logits, deltas), [p0, p1]


def test_losses_on_a_hand_made_case():
    predictions, proposals = _hand_made_case()
    losses = _predictor().losses(predictions, proposals)
    assert losses["loss_cls"].item() == pytest.approx((math.log(3) + math.log(2) + math.log(3)) / 3)
    # Targets with weights (10, 10, 5, 5): region 0 (1, 1, 0, 0), predicted (0.5, 0, 0, 0): L1 1.5.
    # Region 2: centre moves 10 px on a 20 px box -> dy 5; height doubles -> dh 5 ln 2; predicted 0.
    # Summed over foreground, divided by the 3 sampled regions.
    expected = (1.5 + 5 + 5 * math.log(2)) / 3
    assert losses["loss_box_reg"].item() == pytest.approx(expected, rel=1e-5)

    weighted = _predictor(loss_weight={"loss_box_reg": 2.0}).losses(predictions, proposals)
    assert weighted["loss_box_reg"].item() == pytest.approx(2 * expected, rel=1e-5)
    assert weighted["loss_cls"].item() == pytest.approx(losses["loss_cls"].item())


def test_class_agnostic_and_iou_losses():
    (logits, deltas), proposals = _hand_made_case()
    transform = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    exact = torch.zeros(3, 4)
    exact[0] = transform.get_deltas(torch.tensor([A]), torch.tensor([[1.0, 1.0, 11.0, 11.0]]))[0]
    exact[2] = transform.get_deltas(torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([[0.0, 0.0, 20.0, 40.0]]))[0]
    for loss_type in ("smooth_l1", "giou"):
        predictor = _predictor(cls_agnostic_bbox_reg=True, box_reg_loss_type=loss_type)
        assert predictor.bbox_pred.out_features == 4
        loss = predictor.losses((logits, exact), proposals)["loss_box_reg"]
        assert loss.item() == pytest.approx(0.0, abs=1e-5)
    wrong = exact.clone()
    wrong[0, 0] += 3.0
    loss = _predictor(cls_agnostic_bbox_reg=True).losses((logits, wrong), proposals)["loss_box_reg"]
    assert loss.item() == pytest.approx(3.0 / 3, rel=1e-5)


def test_losses_without_regions_are_zero_and_differentiable():
    predictor = _predictor()
    x = torch.zeros(0, 4, requires_grad=True)
    losses = predictor.losses(predictor(x), [])
    total = sum(losses.values())
    total.backward()
    assert total.item() == 0.0


def test_forward_and_inference_shapes():
    predictor = _predictor(num_classes=3, test_score_thresh=0.0)
    proposals = [Instances((30, 30), proposal_boxes=Boxes(torch.tensor([A, OTHER]))), Instances((30, 30), proposal_boxes=Boxes(torch.zeros(0, 4)))]
    scores, deltas = predictor(torch.rand(2, 4, 1, 1))
    assert scores.shape == (2, 4) and deltas.shape == (2, 12)
    boxes = predictor.predict_boxes((scores, torch.zeros_like(deltas)), proposals)
    assert [b.shape for b in boxes] == [(2, 12), (0, 12)]
    torch.testing.assert_close(boxes[0], torch.tensor([A * 3, OTHER * 3]))  # zero deltas: the proposals
    results, _ = predictor.inference((scores, deltas), proposals)
    assert [r.image_size for r in results] == [(30, 30), (30, 30)]
    assert len(results[1]) == 0


def test_inference_when_no_image_has_proposals():
    predictor = _predictor(num_classes=3)
    proposals = [Instances((30, 30), proposal_boxes=Boxes(torch.zeros(0, 4))) for _ in range(2)]
    results, kept = predictor.inference(predictor(torch.zeros(0, 4)), proposals)
    assert [len(r) for r in results] == [0, 0] and [len(k) for k in kept] == [0, 0]
    assert results[0].pred_boxes.tensor.shape == (0, 4)


def test_predict_boxes_for_gt_classes_by_hand():
    predictor = _predictor(num_classes=2)
    proposals = [Instances((30, 30), proposal_boxes=Boxes(torch.tensor([A, OTHER])), gt_classes=torch.tensor([1, 2]))]
    deltas = torch.zeros(2, 8)
    deltas[0, 4] = 10.0  # class 1 of region 0: dx = 10 / wx = 1 width to the right
    deltas[1, 4] = 5.0  # class 1 of region 1: half a width; region 1 is background (2), read as class K - 1 = 1
    deltas[1, 0] = 7.0  # class 0 of region 1: not used
    (boxes,) = predictor.predict_boxes_for_gt_classes((torch.zeros(2, 3), deltas), proposals)
    torch.testing.assert_close(boxes, torch.tensor([[10.0, 0.0, 20.0, 10.0], [35.0, 30.0, 45.0, 40.0]]))
    agnostic = _predictor(num_classes=2, cls_agnostic_bbox_reg=True)
    (boxes,) = agnostic.predict_boxes_for_gt_classes((torch.zeros(2, 3), torch.zeros(2, 4)), proposals)
    torch.testing.assert_close(boxes, torch.tensor([A, OTHER]))


def test_unknown_box_loss_type_is_refused_when_built():
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "iou"
    with pytest.raises(ConfigError, match=r"FastRCNNOutputLayers box_reg_loss_type \(MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE\)"):
        FastRCNNOutputLayers(cfg, ShapeSpec(channels=8))


def _bce(logit, target):
    """Binary cross-entropy of one logit, by hand: softplus(z) - t * z."""
    return math.log1p(math.exp(logit)) - target * logit


def test_sigmoid_cross_entropy_by_hand_and_sigmoid_scores():
    _, proposals = _hand_made_case()  # GT classes 0, background, 1 of K = 2
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.0, 9.0], [0.0, 3.0, 0.0]])
    predictor = _predictor(use_sigmoid_ce=True)
    loss = predictor.losses((logits, torch.zeros(3, 8)), proposals)["loss_cls"]
    # summed over the K foreground logits (the background one is not used), averaged over the regions
    expected = (_bce(2, 1) + _bce(-1, 0) + _bce(0.5, 0) + _bce(0, 0) + _bce(0, 0) + _bce(3, 1)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    probs = predictor.predict_probs((logits, torch.zeros(3, 8)), proposals)
    assert torch.allclose(torch.cat(probs), logits.sigmoid())


def _fed_predictor(num_fed_classes, weights=(0.0, 2.0, 0.0, 5.0)):
    return _predictor(num_classes=4, use_sigmoid_ce=True, use_fed_loss=True, fed_loss_num_classes=num_fed_classes,
                      get_fed_loss_cls_weights=lambda: torch.tensor(weights))


def test_federated_loss_counts_the_gt_classes_and_drawn_negatives_only():
    gt_classes = torch.tensor([1, 4, 1])  # class 1 and background, K = 4
    # 3 classes: the 2 present ones and 1 drawn among those of non-zero weight not present: class 3 only
    assert sorted(_fed_predictor(3).fed_loss_classes(gt_classes).tolist()) == [1, 3, 4]
    assert sorted(_fed_predictor(2).fed_loss_classes(gt_classes).tolist()) == [1, 4]
    # more than the classes that can be drawn: all of them, not an error
    assert sorted(_fed_predictor(50).fed_loss_classes(gt_classes).tolist()) == [1, 3, 4]
    # drawn by weight: class 0 (weight 1) comes about a third as often as class 2 (weight 3)
    torch.manual_seed(0)
    draws = [_fed_predictor(3, (1.0, 0.0, 3.0, 0.0)).fed_loss_classes(gt_classes)[-1].item() for _ in range(400)]
    assert set(draws) == {0, 2} and 0.18 < draws.count(0) / 400 < 0.32

    logits = torch.tensor([[0.5, -1.0, 2.0, 1.5, 0.0], [-0.5, 0.25, 1.0, -2.0, 0.0], [1.0, 2.0, -1.0, 0.75, 0.0]])
    proposals = Instances((50, 50), proposal_boxes=Boxes(torch.tensor([A, A, A])), gt_classes=gt_classes,
                          gt_boxes=Boxes(torch.tensor([A, A, A])))
    loss = _fed_predictor(3).losses((logits, torch.zeros(3, 16)), [proposals])["loss_cls"]
    # only the columns of classes 1 and 3; region 1 is background, negative for both
    expected = (_bce(-1.0, 1) + _bce(1.5, 0) + _bce(0.25, 0) + _bce(-2.0, 0) + _bce(2.0, 1) + _bce(0.75, 0)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_federated_loss_is_refused_without_sigmoid_or_with_weights_of_other_classes():
    with pytest.raises(ValueError, match="MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE"):
        _predictor(use_fed_loss=True, get_fed_loss_cls_weights=lambda: torch.ones(2))
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(2,\)"):
        _predictor(use_sigmoid_ce=True, use_fed_loss=True, get_fed_loss_cls_weights=lambda: torch.ones(3))
    # a buffer, as in Detectron2's state dicts
    assert "fed_loss_cls_weights" in _fed_predictor(3).state_dict()
