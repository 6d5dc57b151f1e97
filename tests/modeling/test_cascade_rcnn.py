"""CascadeROIHeads: each stage pools the previous stage's boxes, matches them at its own IoU, scales the
gradient reaching the shared features, and inference averages the stages' scores."""
import pytest
import torch

from d2mask.config import ConfigError, get_cfg
from d2mask.layers import ShapeSpec
from d2mask.modeling.roi_heads import CascadeROIHeads, build_roi_heads
from d2mask.modeling.roi_heads.cascade_rcnn import _ScaleGradient
from d2mask.structures import BitMasks, Boxes, Instances, pairwise_iou

SHAPES = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}
GT = [[10.0, 10.0, 40.0, 40.0], [34.0, 8.0, 60.0, 56.0]]


def _cfg(mask_on=True):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = mask_on
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 8
    return cfg


def _features():
    torch.manual_seed(0)
    return {"p2": torch.randn(1, 8, 16, 16), "p3": torch.randn(1, 8, 8, 8)}


def _targets():
    gt = Instances((64, 64), gt_boxes=Boxes(torch.tensor(GT)), gt_classes=torch.tensor([2, 0]))
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 10:40, 10:40] = True
    masks[1, 8:56, 34:60] = True
    gt.gt_masks = BitMasks(masks)
    return gt


def _proposals():
    torch.manual_seed(1)
    xy = torch.rand(20, 2) * 40
    boxes = torch.cat([xy, xy + 8 + torch.rand(20, 2) * 24], dim=1)
    return Instances((64, 64), proposal_boxes=Boxes(boxes), objectness_logits=torch.zeros(20))


def _record_stages(heads, monkeypatch):
    """Makes `heads._run_stage` record (stage, proposal boxes, predictions) of every call."""
    calls, run = [], heads._run_stage

    def recording(features, proposals, stage):
        predictions = run(features, proposals, stage)
        calls.append((stage, [p.proposal_boxes.tensor.clone() for p in proposals], predictions, proposals))
        return predictions

    monkeypatch.setattr(heads, "_run_stage", recording)
    return calls


def _shift_predicted_boxes(heads):
    """Every stage predicts a box moved right of its region (dx > 0), so a stage's boxes differ from its input."""
    for predictor in heads.box_predictor:
        torch.nn.init.zeros_(predictor.bbox_pred.weight)
        predictor.bbox_pred.bias.data = torch.tensor([1.0, 0.0, 0.0, 0.0])


def test_built_from_config_with_a_matcher_and_box_coding_per_stage():
    heads = build_roi_heads(_cfg(), SHAPES)
    assert isinstance(heads, CascadeROIHeads) and heads.num_cascade_stages == 3
    assert [m.thresholds for m in heads.proposal_matchers] == [[0.5], [0.6], [0.7]]
    assert all(m.labels == [0, 1] and not m.allow_low_quality_matches for m in heads.proposal_matchers)
    assert heads.proposal_matcher is heads.proposal_matchers[0]
    assert [p.box2box_transform.weights for p in heads.box_predictor] == [
        (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)
    ]
    assert [p.bbox_pred.out_features for p in heads.box_predictor] == [4, 4, 4]
    assert len({id(h) for h in heads.box_head}) == 3 and heads.mask_on


@pytest.mark.parametrize("training", [True, False])
def test_each_stage_pools_the_previous_stages_boxes(monkeypatch, training):
    heads = build_roi_heads(_cfg(), SHAPES).train(training)
    _shift_predicted_boxes(heads)
    calls = _record_stages(heads, monkeypatch)
    with torch.no_grad():
        heads(None, _features(), [_proposals()], [_targets()] if training else None)
    assert [c[0] for c in calls] == [0, 1, 2]
    for k in range(1, 3):
        _, previous_input, predictions, proposals = calls[k - 1]
        # stage k - 1's boxes, decoded with its own box coding and clipped; training drops empty ones
        expected = Boxes(heads.box_predictor[k - 1].predict_boxes(predictions, proposals)[0])
        expected.clip((64, 64))
        if training:
            expected = expected[expected.nonempty()]
        assert torch.allclose(calls[k][1][0], expected.tensor)
        # they moved: stage k does not pool stage k - 1's input again
        assert not torch.allclose(calls[k][1][0][:3], previous_input[0][:3])


def test_later_stages_label_their_boxes_at_their_own_iou_without_sampling():
    heads = build_roi_heads(_cfg(), SHAPES).train()
    # IoU with GT[0] (area 900): 0.88, 0.67 and 0.54 for boxes shifted right by 2, 6 and 9 pixels
    boxes = torch.tensor([[12.0, 10, 42, 40], [16.0, 10, 46, 40], [19.0, 10, 49, 40], [0.0, 50, 8, 60]])
    ious = pairwise_iou(Boxes(torch.tensor(GT[:1])), Boxes(boxes))[0]
    assert ious[:3].tolist() == pytest.approx([28 / 32, 24 / 36, 21 / 39], abs=1e-6)
    for stage, expected in [(1, [2, 2, 3, 3]), (2, [2, 3, 3, 3])]:
        proposals = [Instances((64, 64), proposal_boxes=Boxes(boxes))]
        labelled, = heads._match_and_label_boxes(proposals, stage, [_targets()])
        assert labelled.gt_classes.tolist() == expected  # class 2 for GT[0], K = 3 background
        assert torch.equal(labelled.gt_boxes.tensor[0], torch.tensor(GT[0]))
        assert not labelled.has("gt_masks")  # the mask branch trains on the first stage only


def test_training_losses_are_each_stages_fast_rcnn_losses(monkeypatch):
    heads = build_roi_heads(_cfg(), SHAPES).train()
    calls = _record_stages(heads, monkeypatch)
    torch.manual_seed(3)
    _, losses = heads(None, _features(), [_proposals()], [_targets()])
    assert set(losses) == {f"loss_{n}_stage{k}" for n in ("cls", "box_reg") for k in range(3)} | {"loss_mask"}
    for stage, _, predictions, proposals in calls:
        expected = heads.box_predictor[stage].losses(predictions, proposals)
        assert torch.allclose(losses[f"loss_cls_stage{stage}"], expected["loss_cls"])
        assert torch.allclose(losses[f"loss_box_reg_stage{stage}"], expected["loss_box_reg"])
    # every loss reaches the features' gradient path
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in heads.box_head[2].parameters())


def test_scale_gradient_is_identity_forward_and_scales_backward():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = _ScaleGradient.apply(x, 1.0 / 3)
    assert torch.equal(y, x)
    (y * torch.tensor([3.0, 6.0, 9.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([1.0, 2.0, 3.0]))


def test_stage_gradient_on_features_is_divided_by_the_number_of_stages():
    heads = build_roi_heads(_cfg(mask_on=False), SHAPES).train()
    proposals = [_proposals()]
    grads = []
    for scaled in (True, False):
        features = {k: v.clone().requires_grad_() for k, v in _features().items()}
        heads.train(scaled)  # the scaling applies in training only; the outputs are the same either way
        predictions = heads._run_stage([features["p2"], features["p3"]], proposals, 1)
        sum(p.sum() for p in predictions).backward()
        grads.append(features["p2"].grad)
    assert torch.allclose(grads[0] * 3, grads[1], atol=1e-6)


def test_inference_averages_the_stages_scores_and_keeps_the_last_stages_boxes():
    cfg = _cfg(mask_on=False)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    heads = build_roi_heads(cfg, SHAPES).eval()
    logits = [torch.tensor([2.0, 0.0, -1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 3.0, 0.0])]
    for predictor, bias in zip(heads.box_predictor, logits):
        torch.nn.init.zeros_(predictor.cls_score.weight)
        predictor.cls_score.bias.data = bias
        torch.nn.init.zeros_(predictor.bbox_pred.weight)
        torch.nn.init.zeros_(predictor.bbox_pred.bias)
    box = [8.0, 8.0, 40.0, 48.0]
    proposals = [Instances((64, 64), proposal_boxes=Boxes(torch.tensor([box])), objectness_logits=torch.zeros(1))]
    detections, _ = heads(None, _features(), proposals)
    mean = sum(torch.softmax(b, dim=0) for b in logits) / 3  # (K+1,)
    by_class = dict(zip(detections[0].pred_classes.tolist(), detections[0].scores.tolist()))
    assert by_class == pytest.approx({c: mean[c].item() for c in range(3)})
    assert torch.allclose(detections[0].pred_boxes.tensor, torch.tensor([box] * 3))


def test_mask_branch_runs_on_the_cascades_detections():
    cfg = _cfg()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    heads = build_roi_heads(cfg, SHAPES).eval()
    with torch.no_grad():
        detections, _ = heads(None, _features(), [_proposals()])
    assert len(detections[0]) > 0 and detections[0].pred_masks.shape[1:] == (1, 28, 28)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False, "CLS_AGNOSTIC_BBOX_REG: True"),
        ("MODEL.ROI_BOX_CASCADE_HEAD.IOUS", (0.5, 0.6), "one entry per cascade stage"),
        ("MODEL.ROI_HEADS.IOU_THRESHOLDS", [0.4], "must equal MODEL.ROI_HEADS.IOU_THRESHOLDS[0] (0.4)"),
        ("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", True, "not CascadeROIHeads"),
    ],
)
def test_inconsistent_config_is_one_config_error(key, value, message):
    cfg = _cfg()
    cfg.merge_from_list([key, str(value)])
    with pytest.raises(ConfigError) as info:
        build_roi_heads(cfg, SHAPES)
    assert message in str(info.value)


def test_explicit_construction_refuses_one_matcher_or_unequal_stages():
    heads = build_roi_heads(_cfg(mask_on=False), SHAPES)
    parts = dict(
        box_in_features=["p2", "p3"], box_pooler=heads.box_pooler, box_heads=list(heads.box_head),
        box_predictors=list(heads.box_predictor), proposal_matchers=heads.proposal_matchers, num_classes=3,
        proposal_sampler=heads.proposal_sampler,
    )
    assert CascadeROIHeads(**parts).num_cascade_stages == 3
    with pytest.raises(ValueError, match="proposal_matchers="):
        CascadeROIHeads(**parts, proposal_matcher=heads.proposal_matchers[0])
    with pytest.raises(ValueError, match="one box head, box predictor and matcher per stage"):
        CascadeROIHeads(**{**parts, "proposal_matchers": heads.proposal_matchers[:2]})
