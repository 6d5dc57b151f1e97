import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch import nn

from d2mask.config import ConfigError, get_cfg
from d2mask.layers import ShapeSpec
from d2mask.modeling.roi_heads import ROI_MASK_HEAD_REGISTRY, Res5ROIHeads, StandardROIHeads, build_roi_heads
from d2mask.structures import BitMasks, Boxes, ImageList, Instances
from tests.common import tiny_rcnn_cfg

GT0 = [10.0, 10.0, 30.0, 30.0]
GT1 = [40.0, 20.0, 60.0, 60.0]
P_NEAR_GT0 = [11.0, 11.0, 31.0, 31.0]  # IoU ~0.82 with GT0
P_FAR = [0.0, 50.0, 8.0, 60.0]  # IoU 0
P_WEAK_GT1 = [40.0, 20.0, 60.0, 32.0]  # IoU 0.3 with GT1
P_NEAR_GT1 = [40.0, 20.0, 60.0, 44.0]  # IoU 0.6 with GT1


def _fpn_cfg(mask_on=True):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = mask_on
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 5
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 8
    return cfg


FPN_SHAPES = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}


def _targets():
    gt = Instances((64, 64))
    gt.gt_boxes = Boxes(torch.tensor([GT0, GT1]))
    gt.gt_classes = torch.tensor([3, 1])
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 20:60, 40:60] = True
    gt.gt_masks = BitMasks(masks)
    return gt


def _proposals(boxes, size=(64, 64)):
    boxes = torch.tensor(boxes).reshape(-1, 4)
    return Instances(size, proposal_boxes=Boxes(boxes), objectness_logits=torch.zeros(len(boxes)))


def test_label_and_sample_assigns_classes_and_gt_fields():
    heads = build_roi_heads(_fpn_cfg(), FPN_SHAPES)
    sampled, = heads.label_and_sample_proposals([_proposals([P_NEAR_GT0, P_FAR, P_WEAK_GT1, P_NEAR_GT1])], [_targets()])
    rows = {tuple(b): (c, tuple(g)) for b, c, g in zip(
        sampled.proposal_boxes.tensor.tolist(), sampled.gt_classes.tolist(), sampled.gt_boxes.tensor.tolist()
    )}
    # The 4 proposals plus the 2 appended GT boxes; IoU >= 0.5 is foreground, the rest background (K = 5).
    assert len(rows) == 6
    assert rows[tuple(P_NEAR_GT0)] == (3, tuple(GT0))
    assert rows[tuple(GT0)] == (3, tuple(GT0))
    assert rows[tuple(P_NEAR_GT1)] == (1, tuple(GT1))
    assert rows[tuple(GT1)] == (1, tuple(GT1))
    assert rows[tuple(P_FAR)][0] == 5 and rows[tuple(P_WEAK_GT1)][0] == 5
    assert (sampled.gt_classes[:4] != 5).all() and (sampled.gt_classes[4:] == 5).all()  # foreground first
    # gt_masks follow the matched GT: the proposal near GT1 carries GT1's mask.
    index = sampled.proposal_boxes.tensor.tolist().index(P_NEAR_GT1)
    assert torch.equal(sampled.gt_masks.tensor[index], _targets().gt_masks.tensor[1])


def test_sampling_respects_batch_size_and_positive_fraction():
    cfg = _fpn_cfg()
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 4
    cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
    heads = build_roi_heads(cfg, FPN_SHAPES)
    sampled, = heads.label_and_sample_proposals([_proposals([P_NEAR_GT0, P_FAR, P_WEAK_GT1, P_NEAR_GT1])], [_targets()])
    assert (sampled.gt_classes != 5).sum() == 1  # 4 * 0.25 foreground
    assert (sampled.gt_classes == 5).sum() == 2  # only 2 backgrounds exist


def test_detectron2_sampler_arguments():
    """Detectron2's ROIHeads(batch_size_per_image=, positive_fraction=) samples as the config keys do."""
    from d2mask.modeling import Matcher, RandomSampler

    args = build_roi_heads(_fpn_cfg(mask_on=False), FPN_SHAPES)  # borrow the built parts
    parts = dict(box_in_features=["p2", "p3"], box_pooler=args.box_pooler, box_head=args.box_head,
                 box_predictor=args.box_predictor, num_classes=5,
                 proposal_matcher=Matcher([0.5], [0, 1], allow_low_quality_matches=False))
    heads = StandardROIHeads(batch_size_per_image=4, positive_fraction=0.25, **parts)
    assert isinstance(heads.proposal_sampler, RandomSampler)
    sampled, = heads.label_and_sample_proposals([_proposals([P_NEAR_GT0, P_FAR, P_WEAK_GT1, P_NEAR_GT1])], [_targets()])
    assert (sampled.gt_classes != 5).sum() == 1 and (sampled.gt_classes == 5).sum() == 2
    with pytest.raises(ValueError, match="StandardROIHeads got a sampler object and batch_size_per_image"):
        StandardROIHeads(batch_size_per_image=4, proposal_sampler=RandomSampler(batch_size_per_image=4, positive_fraction=0.25), **parts)


def test_without_gt_every_proposal_is_background_and_append_gt_is_optional():
    cfg = _fpn_cfg()
    cfg.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = False
    heads = build_roi_heads(cfg, FPN_SHAPES)
    empty = Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
    sampled, with_gt = heads.label_and_sample_proposals(
        [_proposals([P_FAR, P_NEAR_GT0]), _proposals([P_FAR, P_NEAR_GT0])], [empty, _targets()]
    )
    assert sampled.gt_classes.tolist() == [5, 5]
    assert torch.equal(sampled.gt_boxes.tensor, sampled.proposal_boxes.tensor)
    assert len(with_gt) == 2  # no GT appended
    with pytest.raises(ValueError, match="instances"):
        heads.label_and_sample_proposals([_proposals([P_FAR])], None)


def _run(heads, features, proposals, targets=None):
    images = ImageList(torch.zeros(len(proposals), 3, 64, 64), [(64, 64)] * len(proposals))
    return heads(images, features, proposals, targets)


@pytest.mark.parametrize("mask_on", [True, False])
def test_standard_roi_heads_train_and_inference(mask_on):
    torch.manual_seed(0)
    heads = build_roi_heads(_fpn_cfg(mask_on), FPN_SHAPES)
    assert isinstance(heads, StandardROIHeads)
    features = {"p2": torch.rand(2, 8, 16, 16), "p3": torch.rand(2, 8, 8, 8)}
    proposals = [_proposals([P_NEAR_GT0, P_FAR, P_NEAR_GT1]), _proposals([P_FAR])]

    _, losses = _run(heads, features, proposals, [_targets(), _targets()])
    expected = {"loss_cls", "loss_box_reg"} | ({"loss_mask"} if mask_on else set())
    assert set(losses) == expected
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())

    heads.eval()
    heads.box_predictor.test_score_thresh = 0.0
    with torch.no_grad():
        results, losses = _run(heads, features, proposals)
    assert losses == {}
    assert [r.image_size for r in results] == [(64, 64), (64, 64)]
    for r in results:
        assert set(r.get_fields()) == {"pred_boxes", "scores", "pred_classes"} | ({"pred_masks"} if mask_on else set())
        if mask_on:
            assert r.pred_masks.shape == (len(r), 1, 28, 28)


@ROI_MASK_HEAD_REGISTRY.register()
class DictFeaturesMaskHeadOfRoiHeadsTests(nn.Module):
    """A pooler-less mask head, as Detectron2's PointRend has: it gets the image features by name."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        self.input_shape = input_shape
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, features, instances):
        self.seen = (sorted(features), [len(i) for i in instances])
        if self.training:
            return {"loss_mask": self.scale * sum(f.mean() for f in features.values())}
        for i in instances:
            i.pred_masks = torch.zeros(len(i), 1, 28, 28)
        return instances


def test_mask_head_without_pooler_gets_the_features_by_name():
    cfg = _fpn_cfg()
    cfg.MODEL.ROI_MASK_HEAD.NAME = "DictFeaturesMaskHeadOfRoiHeadsTests"
    cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE = ""
    heads = build_roi_heads(cfg, FPN_SHAPES)
    assert heads.mask_pooler is None and heads.mask_head.input_shape == FPN_SHAPES
    features = {"p2": torch.rand(1, 8, 16, 16), "p3": torch.rand(1, 8, 8, 8)}
    _, losses = _run(heads, features, [_proposals([P_NEAR_GT0, P_FAR])], [_targets()])
    assert "loss_mask" in losses and heads.mask_head.seen[0] == ["p2", "p3"]
    assert heads.mask_head.seen[1] == [3]  # the foreground: P_NEAR_GT0 and the two appended GT boxes
    heads.eval()
    with torch.no_grad():
        (result,), _ = _run(heads, features, [_proposals([P_NEAR_GT0, P_FAR])])
    assert result.has("pred_masks") and heads.mask_head.seen[1] == [len(result)]


def test_train_on_pred_boxes_gives_the_mask_branch_the_predicted_boxes():
    cfg = _fpn_cfg()
    cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = True
    cfg.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = False
    heads = build_roi_heads(cfg, FPN_SHAPES)
    assert heads.train_on_pred_boxes
    with torch.no_grad():
        heads.box_predictor.bbox_pred.weight.zero_()
        heads.box_predictor.bbox_pred.bias.zero_()
        heads.box_predictor.bbox_pred.bias[3 * 4] = 10.0  # class 3: dx = 10 / wx, one width to the right
    features = {"p2": torch.rand(1, 8, 16, 16), "p3": torch.rand(1, 8, 8, 8)}
    (sampled,), losses = _run(heads, features, [_proposals([P_NEAR_GT0])], [_targets()])
    assert "loss_mask" in losses and sampled.gt_classes.tolist() == [3]
    assert sampled.proposal_boxes.tensor.tolist() == [[31.0, 11.0, 51.0, 31.0]]  # P_NEAR_GT0 moved 20 px


def test_res5_roi_heads_reject_train_on_pred_boxes():
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = True
    with pytest.raises(ConfigError, match="TRAIN_ON_PRED_BOXES is implemented by StandardROIHeads"):
        build_roi_heads(cfg, {"res4": ShapeSpec(channels=64, stride=16)})


def test_res5_roi_heads_train_and_inference():
    torch.manual_seed(0)
    cfg = tiny_rcnn_cfg("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml", num_classes=5)  # res4: 64 channels; res5: 128
    heads = build_roi_heads(cfg, {"res4": ShapeSpec(channels=64, stride=16)})
    assert isinstance(heads, Res5ROIHeads)
    assert heads.res5[0].conv1.weight.shape == (32, 64, 1, 1)
    features = {"res4": torch.rand(1, 64, 4, 4)}
    proposals = [_proposals([P_NEAR_GT0, P_FAR, P_NEAR_GT1])]

    # Predictors that output zeros, and mask logit 2 for classes 1 and 3 (the GT's), -3 for the others.
    for layer in (heads.box_predictor.cls_score, heads.box_predictor.bbox_pred, heads.mask_head.predictor):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    with torch.no_grad():
        heads.mask_head.predictor.bias.copy_(torch.tensor([-3.0, 2.0, -3.0, 2.0, -3.0]))
    _, losses = _run(heads, features, proposals, [_targets()])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    # All 5 regions are sampled: P_NEAR_GT0, P_NEAR_GT1 and the two appended GT boxes are foreground.
    assert losses["loss_cls"].item() == pytest.approx(math.log(6))  # uniform over 5 classes + background
    # L1 of the GT deltas (weights 10, 10, 5, 5) over the 5 sampled regions: P_NEAR_GT0 -> GT0 is
    # (-0.5, -0.5, 0, 0); P_NEAR_GT1 -> GT1 is (0, 10 * 8 / 24, 0, 5 * log(40 / 24)); GT boxes give 0.
    assert losses["loss_box_reg"].item() == pytest.approx((1.0 + 10 / 3 + 5 * math.log(40 / 24)) / 5, rel=1e-5)
    # Mask: logit 2 on each pixel of the foreground regions, against the GT mask cropped to each.
    gt_masks = _targets().gt_masks
    targets = torch.cat([gt_masks[[i]].crop_and_resize(torch.tensor([box]), 14) for i, box in
                         [(0, P_NEAR_GT0), (1, P_NEAR_GT1), (0, GT0), (1, GT1)]]).float()
    expected_mask = F.binary_cross_entropy_with_logits(torch.full_like(targets, 2.0), targets)
    assert 0 < (targets == 0).sum() < targets.numel() and losses["loss_mask"].item() == pytest.approx(expected_mask.item())

    heads.eval()
    heads.box_predictor.test_score_thresh = 0.0
    with torch.no_grad():
        results, _ = _run(heads, features, proposals)
    assert len(results[0]) > 0
    assert results[0].pred_masks.shape == (len(results[0]), 1, 14, 14)  # C4 masks are 14 x 14


def test_heads_are_importable_from_detectron2s_module():
    from d2mask.modeling.roi_heads import roi_heads

    assert roi_heads.StandardROIHeads is StandardROIHeads and roi_heads.Res5ROIHeads is Res5ROIHeads


@pytest.mark.parametrize("nms_thresh, expected", [(0.5, 1), (0.7, 2)])
def test_nms_thresh_test_from_config_decides_whether_an_overlapping_detection_survives(nms_thresh, expected):
    cfg = _fpn_cfg(mask_on=False)
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = nms_thresh
    predictor = build_roi_heads(cfg, FPN_SHAPES).box_predictor
    proposals = _proposals([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0]])  # IoU 80 / 120 = 0.67
    scores = torch.tensor([[0.0, 6.0, 0.0, 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 0.0, 0.0, 0.0]])  # both class 1
    (result,), _ = predictor.inference((scores, torch.zeros(2, 5 * 4)), [proposals])
    assert len(result) == expected and result.pred_classes.tolist() == [1] * expected
    assert result.pred_boxes.tensor[0].tolist() == [0.0, 0.0, 10.0, 10.0]
