"""The data-independent pieces run on the `meta` device (shapes and dtypes, no values): any tensor
they create on another device than their inputs' would make the op mixing them fail here, as it would
on a GPU."""
import torch

from d2mask.layers import ShapeSpec
from d2mask.modeling.anchor_generator import DefaultAnchorGenerator
from d2mask.modeling.box_regression import Box2BoxTransform
from d2mask.modeling.matcher import Matcher
from d2mask.modeling.poolers import assign_boxes_to_levels
from d2mask.modeling.proposal_generator.rpn import StandardRPNHead
from d2mask.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead, mask_rcnn_inference
from d2mask.structures import Boxes, Instances

META = torch.device("meta")


def test_anchor_generator():
    generator = DefaultAnchorGenerator(
        sizes=[[32], [64]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[4, 8], offset=0.0
    ).to(META)
    features = [torch.empty(2, 8, 16, 20, device=META), torch.empty(2, 8, 8, 10, device=META)]
    anchors = generator(features)
    assert [a.tensor.shape for a in anchors] == [(16 * 20 * 3, 4), (8 * 10 * 3, 4)]
    assert all(a.tensor.device == META for a in anchors)


def test_box_coding():
    transform = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    boxes = torch.empty(7, 4, device=META)
    deltas = transform.get_deltas(boxes, torch.empty(7, 4, device=META))
    decoded = transform.apply_deltas(torch.empty(7, 3 * 4, device=META), boxes)
    assert deltas.shape == (7, 4) and decoded.shape == (7, 12) and decoded.device == META


def test_rpn_head():
    head = StandardRPNHead(in_channels=8, num_anchors=3).to(META)
    logits, deltas = head([torch.empty(2, 8, 16, 20, device=META), torch.empty(2, 8, 8, 10, device=META)])
    assert [x.shape for x in logits] == [(2, 3, 16, 20), (2, 3, 8, 10)]
    assert [x.shape for x in deltas] == [(2, 12, 16, 20), (2, 12, 8, 10)]


def test_matcher_without_ground_truth():
    # With GT boxes the matcher's chunking reads IoU values; without, its output is data-independent.
    matcher = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True)
    matched, labels = matcher(Boxes(torch.empty(0, 4, device=META)), Boxes(torch.empty(50, 4, device=META)))
    assert matched.shape == labels.shape == (50,) and matched.device == labels.device == META


def test_level_assignment():
    boxes = [Boxes(torch.empty(5, 4, device=META)), Boxes(torch.empty(3, 4, device=META))]
    levels = assign_boxes_to_levels(boxes, min_level=2, max_level=5, canonical_box_size=224, canonical_level=4)
    assert levels.shape == (8,) and levels.dtype == torch.int64 and levels.device == META


def test_mask_head_inference():
    head = MaskRCNNConvUpsampleHead(ShapeSpec(channels=8, height=7, width=7), num_classes=3, conv_dims=[8, 8]).to(META)
    head.eval()
    instances = [Instances((64, 64), pred_classes=torch.empty(4, dtype=torch.int64, device=META))]
    (result,) = head(torch.empty(4, 8, 7, 7, device=META), instances)
    assert result.pred_masks.shape == (4, 1, 14, 14) and result.pred_masks.device == META
