"""Matcher: labels around the IoU thresholds, low-quality ties, empty inputs, chunking, config."""
import itertools

import pytest
import torch

import d2mask.modeling.matcher as matcher_module
from d2mask.config import get_cfg
from d2mask.modeling import Matcher, build_anchor_matcher
from d2mask.structures import Boxes, pairwise_iou

# IoU of each GT (row) with each anchor (column):
#   G0 [0,0,10,10]:      1.0  0.5  0.2  0    0    0
#   G1 [20,20,30,30]:    0    0    0    0.5  0.5  0
#   G2 [100,100,110,110] overlaps nothing.
GT = Boxes(torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110]], dtype=torch.float32))
ANCHORS = Boxes(torch.tensor([
    [0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 2], [20, 20, 30, 25], [20, 25, 30, 30], [50, 50, 60, 60],
], dtype=torch.float32))


def rpn_matcher(low_quality, **kwargs):
    return Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=low_quality, **kwargs)


def test_labels_by_threshold_without_low_quality_matches():
    idxs, labels = rpn_matcher(False)(GT, ANCHORS)
    assert idxs.dtype == torch.int64 and labels.dtype == torch.int8
    assert idxs.tolist() == [0, 0, 0, 1, 1, 0]
    assert labels.tolist() == [1, -1, 0, -1, -1, 0]


def test_low_quality_matches_include_ties_and_skip_gt_overlapping_nothing():
    idxs, labels = rpn_matcher(True)(GT, ANCHORS)
    # G1's best IoU 0.5 is reached by anchors 3 and 4; G2 overlaps nothing and promotes no anchor.
    assert labels.tolist() == [1, -1, 0, 1, 1, 0]
    assert idxs.tolist() == [0, 0, 0, 1, 1, 0]


def test_gt_between_anchors_overlapping_none_makes_no_low_quality_match():
    # The GT box lies inside the anchors' bounding box but overlaps neither anchor: its best IoU is 0,
    # which must not make every anchor (each at IoU 0 with it) a low-quality match.
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]))
    gt = Boxes(torch.tensor([[12.0, 12.0, 18.0, 18.0]]))
    idxs, labels = rpn_matcher(True)(gt, anchors)
    assert labels.tolist() == [0, 0] and idxs.tolist() == [0, 0]


def test_thresholds_are_closed_below():
    gt = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    # IoUs exactly 0.7, 0.3 and 0.29
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 7.0], [0.0, 0.0, 10.0, 3.0], [0.0, 0.0, 10.0, 2.9]]))
    _, labels = rpn_matcher(False)(gt, anchors)
    assert labels.tolist() == [1, -1, 0]


def test_low_quality_match_keeps_the_anchors_own_best_gt():
    # Anchor 0 overlaps G0 with 0.6 and G1 with 0.2; it is G1's best anchor, but stays matched to G0.
    gt = Boxes(torch.tensor([[0.0, 0.0, 10.0, 6.0], [0.0, 8.0, 10.0, 18.0]]))
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 30.0, 10.0, 40.0]]))
    iou = pairwise_iou(gt, anchors)
    assert iou[0, 0] == pytest.approx(0.6) and iou[1, 0] == pytest.approx(2 / 18)
    idxs, labels = rpn_matcher(True)(gt, anchors)
    assert idxs.tolist() == [0, 0] and labels.tolist() == [1, 0]


def test_no_gt_gives_lowest_interval_label():
    idxs, labels = rpn_matcher(True)(Boxes(torch.zeros(0, 4)), ANCHORS)
    assert idxs.tolist() == [0] * 6 and labels.tolist() == [0] * 6
    roi = Matcher(thresholds=[0.5], labels=[-1, 1])
    assert roi(Boxes(torch.zeros(0, 4)), ANCHORS)[1].tolist() == [-1] * 6


def test_no_boxes_gives_empty_results():
    idxs, labels = rpn_matcher(True)(GT, Boxes(torch.zeros(0, 4)))
    assert idxs.shape == (0,) and labels.shape == (0,)


@pytest.mark.parametrize("low_quality", [False, True])
def test_detectron2_form_positional_and_called_with_an_iou_matrix(low_quality):
    """Matcher(thresholds, labels, allow_low_quality_matches=) called with IoU[G, R], as in Detectron2."""
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=low_quality)
    idxs, labels = matcher(pairwise_iou(GT, ANCHORS))
    assert idxs.tolist() == [0, 0, 0, 1, 1, 0]
    assert labels.tolist() == ([1, -1, 0, 1, 1, 0] if low_quality else [1, -1, 0, -1, -1, 0])
    assert labels.dtype == torch.int8 and idxs.dtype == torch.int64
    # no GT: every box in the lowest interval; no boxes: empty
    idxs, labels = matcher(torch.zeros(0, 4))
    assert idxs.tolist() == [0] * 4 and labels.tolist() == [0] * 4
    assert [t.shape for t in matcher(torch.zeros(3, 0))] == [(0,), (0,)]
    with pytest.raises(TypeError, match="or an IoU matrix"):
        matcher(GT.tensor, ANCHORS)
    with pytest.raises(ValueError, match=r"shape \[G, N\]"):
        matcher(torch.zeros(6))


def reference_match(gt, boxes, thresholds, labels, low_quality):
    """The matcher's contract written directly on the full IoU matrix."""
    iou = pairwise_iou(gt, boxes)
    vals, idxs = iou.max(dim=0)
    out = torch.empty(len(boxes), dtype=torch.int8)
    bounds = [-float("inf")] + thresholds + [float("inf")]
    for label, lo, hi in zip(labels, bounds[:-1], bounds[1:]):
        out[(vals >= lo) & (vals < hi)] = label
    if low_quality:
        best = iou.max(dim=1).values
        hits = ((iou == best[:, None]) & (best[:, None] > 0)).any(dim=0)
        out[hits] = 1
    return idxs, out


@pytest.mark.parametrize("low_quality", [False, True])
def test_chunked_matching_equals_the_full_matrix(low_quality):
    g = torch.Generator().manual_seed(0)
    # Coordinates on a coarse integer grid make exact IoU ties common.
    xy = torch.randint(0, 40, (300, 2), generator=g).float()
    wh = torch.randint(1, 12, (300, 2), generator=g).float()
    boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
    gt_xy = torch.randint(0, 40, (13, 2), generator=g).float()
    gt = Boxes(torch.cat([gt_xy, gt_xy + torch.randint(8, 30, (13, 2), generator=g).float()], dim=1))
    expected_idxs, expected_labels = reference_match(gt, boxes, [0.3, 0.7], [0, -1, 1], low_quality)
    without_low_quality = reference_match(gt, boxes, [0.3, 0.7], [0, -1, 1], False)[1]
    # The case is only meaningful if low-quality matches change some labels.
    assert low_quality == (not torch.equal(expected_labels, without_low_quality))
    labels = rpn_matcher(low_quality)(pairwise_iou(gt, boxes))[1]  # the IoU-matrix form
    assert torch.equal(labels, expected_labels)
    for chunk, num_per_level in itertools.product((1, 7, 13 * 50, 10**6), (None, [300])):
        # without num_per_level the boxes are proposals, matched in an order of their own
        idxs, labels = rpn_matcher(low_quality, max_chunk_elements=chunk)(gt, boxes, num_per_level=num_per_level)
        assert torch.equal(labels, expected_labels), chunk
        # Argmax ties may resolve differently; the matched GT must reach the best IoU all the same.
        iou = pairwise_iou(gt, boxes)
        assert torch.equal(iou[idxs, torch.arange(len(boxes))], iou[expected_idxs, torch.arange(len(boxes))])


def test_iou_is_only_ever_computed_in_bounded_chunks(monkeypatch):
    seen = []
    real = matcher_module.iter_pairwise_iou_chunks

    def recording(gt_boxes, boxes, max_elements):
        for start, end, iou in real(gt_boxes, boxes, max_elements):
            seen.append(iou.numel())
            yield start, end, iou

    monkeypatch.setattr(matcher_module, "iter_pairwise_iou_chunks", recording)
    boxes = Boxes(torch.rand(1000, 2).repeat(1, 2) * 100 + torch.tensor([0.0, 0.0, 5.0, 5.0]))
    gt = boxes[:20]
    rpn_matcher(True, max_chunk_elements=200)(gt, boxes, num_per_level=[1000])  # anchors: in their order
    # A first pass over 1000 boxes in chunks of 10 columns of (at most) 20 GT; the second pass redoes
    # only the 2 chunks holding each GT's best match (the GT boxes themselves, boxes 0..19).
    assert len(seen) == 102 and max(seen) <= 200


def dense_roi_scene(num_gt, num_proposals, seed=0):
    """A crowded 800 x 1333 image: GT boxes of 8-64 px, and the ROI heads' proposals (random boxes
    and boxes near the GT, in no spatial order, then the GT boxes appended)."""
    g = torch.Generator().manual_seed(seed)

    def random_boxes(n, lo, hi):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([1333.0, 800.0])
        return torch.cat([xy, xy + lo + torch.rand(n, 2, generator=g) * (hi - lo)], dim=1)

    gt = random_boxes(num_gt, 8, 64)
    near = gt[torch.randint(num_gt, (num_proposals // 2,), generator=g)]
    near = near + torch.randn(len(near), 4, generator=g) * 4
    proposals = torch.cat([random_boxes(num_proposals - len(near), 8, 128), near])
    proposals = torch.cat([proposals[torch.randperm(len(proposals), generator=g)], gt])
    return Boxes(gt), Boxes(proposals)


@pytest.mark.parametrize("low_quality", [False, True])
def test_dense_proposals_get_the_full_matrix_labels_from_a_fraction_of_it(monkeypatch, low_quality):
    computed = []
    real = matcher_module.iter_pairwise_iou_chunks

    def recording(gt_boxes, boxes, max_elements):
        for start, end, iou in real(gt_boxes, boxes, max_elements):
            computed.append(iou.numel())
            yield start, end, iou

    monkeypatch.setattr(matcher_module, "iter_pairwise_iou_chunks", recording)
    gt, proposals = dense_roi_scene(num_gt=600, num_proposals=400)
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=low_quality, max_chunk_elements=600 * 20)
    idxs, labels = matcher(gt, proposals)
    expected_idxs, expected_labels = reference_match(gt, proposals, [0.5], [0, 1], low_quality)
    assert torch.equal(labels, expected_labels) and torch.equal(idxs, expected_idxs)
    assert 600 <= int(labels.sum()) < len(proposals)  # every appended GT box is foreground, not all else
    # Sorted by position, each chunk of 20 proposals meets only the GT boxes of its band of the image.
    assert sum(computed) < 0.25 * len(gt) * len(proposals)


def test_build_from_stage_config():
    cfg = get_cfg()
    rpn = build_anchor_matcher(cfg, cfg.MODEL.RPN)
    assert (rpn.thresholds, rpn.labels, rpn.allow_low_quality_matches) == ([0.3, 0.7], [0, -1, 1], True)
    roi = build_anchor_matcher(cfg, cfg.MODEL.ROI_HEADS)
    assert (roi.thresholds, roi.labels, roi.allow_low_quality_matches) == ([0.5], [0, 1], False)


@pytest.mark.parametrize(
    "thresholds, labels, message",
    [([0.7, 0.3], [0, -1, 1], "increasing"), ([0.5], [0, -1, 1], "one label per IoU interval"), ([0.5], [0, 2], "-1, 0 or 1")],
)
def test_bad_settings_are_explained(thresholds, labels, message):
    with pytest.raises(ValueError, match=message):
        Matcher(thresholds=thresholds, labels=labels)


def test_classes_of_matches():
    gt_classes = torch.tensor([4, 1])
    matched_idxs = torch.tensor([1, 0, 1, 0])
    match_labels = torch.tensor([1, 1, 0, -1], dtype=torch.int8)
    assert matcher_module.classes_of_matches(gt_classes, matched_idxs, match_labels, num_classes=5).tolist() == [1, 4, 5, -1]
    # no GT: background (or ignored) everywhere
    none = torch.zeros(0, dtype=torch.int64)
    labels = torch.tensor([0, -1], dtype=torch.int8)
    assert matcher_module.classes_of_matches(none, torch.zeros(2, dtype=torch.int64), labels, num_classes=5).tolist() == [5, -1]
