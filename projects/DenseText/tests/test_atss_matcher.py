"""ATSSMatcher on hand-computed cases, against a direct per-GT implementation, and built from config."""
import math

import pytest
import torch

from d2mask.config import ConfigError, get_cfg
from d2mask.modeling import ANCHOR_MATCHER_REGISTRY, build_anchor_matcher
from d2mask.structures import Boxes, pairwise_iou
from projects.DenseText.atss_matcher import ATSSMatcher

ATSS_CONFIG = "projects/DenseText/configs/faster_rcnn_R_18_FPN_dense_atss.yaml"

# Level 0: three 2x2 anchors in a row; level 1: two 4x4 anchors.
ANCHORS = Boxes([[0, 0, 2, 2], [2, 0, 4, 2], [4, 0, 6, 2], [0, 0, 4, 4], [4, 0, 8, 4]])
LEVELS = [3, 2]


def test_two_gt_boxes_by_hand():
    matcher = ATSSMatcher(topk=2)
    # GT 0 [0,0,3,2], centre (1.5, 1). Nearest: level 0 anchors 0, 1; level 1 anchors 3, 4.
    #   IoUs 4/6, 2/8, 6/16, 0: mean 0.3229, std 0.2772, threshold 0.6001 -> anchor 0 only.
    # GT 1 [3,0,8,4], centre (5.5, 2). Nearest: level 0 anchors 2, 1; level 1 anchors 4, 3.
    #   IoUs 4/20, 2/22, 16/20, 4/32: mean 0.3040, std 0.3338, threshold 0.6378 -> anchor 4 only.
    gt = Boxes([[0, 0, 3, 2], [3, 0, 8, 4]])
    matched_idxs, match_labels = matcher(gt, ANCHORS, num_per_level=LEVELS)
    assert match_labels.dtype == torch.int8 and matched_idxs.dtype == torch.int64
    assert match_labels.tolist() == [1, 0, 0, 0, 1]
    assert matched_idxs.tolist() == [0, 0, 0, 0, 1]


def test_centre_outside_the_gt_box_is_not_positive():
    # One level, one candidate: its own IoU is the threshold, so only the centre test decides.
    matcher = ATSSMatcher(topk=1)
    anchors = Boxes([[0, 0, 4, 4], [8, 0, 12, 4]])
    # Both GT boxes are nearest to anchor 0, centre (2, 2): left of the first box, inside the second.
    _, match_labels = matcher(Boxes([[2.5, 0, 6, 4]]), anchors, num_per_level=[2])
    assert match_labels.tolist() == [0, 0]
    _, match_labels = matcher(Boxes([[1.5, 0, 6, 4]]), anchors, num_per_level=[2])
    assert match_labels.tolist() == [1, 0]


def test_an_anchor_chosen_twice_goes_to_the_higher_iou():
    matcher = ATSSMatcher(topk=1)
    anchors = Boxes([[0, 0, 4, 4], [8, 0, 12, 4]])
    exact, shifted = [0, 0, 4, 4], [1, 0, 5, 4]  # IoU with anchor 0: 1 and 12/20
    for gt, winner in (([exact, shifted], 0), ([shifted, exact], 1)):
        matched_idxs, match_labels = matcher(Boxes(gt), anchors, num_per_level=[2])
        assert match_labels.tolist() == [1, 0]
        assert matched_idxs[0].item() == winner
    # equal IoUs: the lower GT index
    matched_idxs, _ = matcher(Boxes([exact, exact]), anchors, num_per_level=[2])
    assert matched_idxs[0].item() == 0


def test_small_object_gets_positives_where_iou_thresholds_give_none():
    # A 6x6 object among 16x16 anchors reaches IoU 36/256 = 0.14 at best: below any fixed threshold.
    anchors = Boxes([[x, y, x + 16, y + 16] for y in range(-8, 40, 4) for x in range(-8, 40, 4)])
    gt = Boxes([[13, 13, 19, 19]])
    assert pairwise_iou(gt, anchors).max().item() == pytest.approx(36 / 256)
    matched_idxs, match_labels = ATSSMatcher(topk=9)(gt, anchors, num_per_level=[len(anchors)])
    # The 9 anchors nearest the GT centre (16, 16) all contain it: IoU 36/256 each, so the threshold
    # (mean + std) is 36/256 and all pass it; of their centres only (16, 16) lies inside the GT box.
    # That anchor is [8, 8, 24, 24]: row 4, column 4 of the 12 x 12 grid.
    assert (match_labels == 1).nonzero().flatten().tolist() == [4 * 12 + 4]
    assert matched_idxs[52].item() == 0


def test_levels_are_the_given_counts():
    # The five anchors as one level: GT 1 of the first test (centre (5.5, 2)) then has the two nearest
    # of all as candidates, anchors 4 (IoU 16/20) and 2 (4/20): mean 0.5 + std 0.4243 = 0.9243,
    # which neither reaches, where the two levels [3, 2] made anchor 4 positive.
    matcher = ATSSMatcher(topk=2)
    _, match_labels = matcher(Boxes([[3, 0, 8, 4]]), ANCHORS, num_per_level=[5])
    assert match_labels.tolist() == [0, 0, 0, 0, 0]
    _, match_labels = matcher(Boxes([[3, 0, 8, 4]]), ANCHORS, num_per_level=LEVELS)
    assert match_labels.tolist() == [0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="num_per_level"):
        matcher(Boxes([[3, 0, 8, 4]]), ANCHORS)
    with pytest.raises(ValueError, match="does not add up to the 5 anchors"):
        matcher(Boxes([[3, 0, 8, 4]]), ANCHORS, num_per_level=[3, 3])


def test_no_gt_boxes_makes_everything_background():
    matched_idxs, match_labels = ATSSMatcher()(Boxes([]), ANCHORS, num_per_level=LEVELS)
    assert match_labels.tolist() == [0] * 5 and matched_idxs.tolist() == [0] * 5


def _reference(gt: Boxes, anchors: Boxes, levels: torch.Tensor, topk: int):
    """ATSS written directly: GT by GT, level by level, on the full IoU and distance matrices; equal
    distances are taken in anchor order."""
    iou = pairwise_iou(gt, anchors)
    dist = torch.cdist(gt.get_centers(), anchors.get_centers(), compute_mode="donot_use_mm_for_euclid_dist")
    best = torch.full((len(anchors),), -1.0)
    matched = torch.zeros(len(anchors), dtype=torch.int64)
    for g in range(len(gt)):
        candidates = torch.cat([
            torch.nonzero(levels == level)[:, 0][dist[g, levels == level].sort(stable=True).indices[:topk]]
            for level in levels.unique()
        ])
        values = iou[g, candidates]
        threshold = values.mean() + values.std()
        x0, y0, x1, y1 = gt.tensor[g]
        for a in candidates.tolist():
            cx, cy = anchors.get_centers()[a]
            inside = min(cx - x0, cy - y0, x1 - cx, y1 - cy) > 0.01
            if iou[g, a] >= threshold and inside and iou[g, a] > best[a]:
                best[a], matched[a] = iou[g, a], g
    return matched, (best >= 0).to(torch.int8)


def test_matches_a_direct_implementation_and_does_not_depend_on_chunking():
    torch.manual_seed(0)
    sizes = [[8], [16], [32]]
    anchors = []
    for (size,), stride in zip(sizes, (4, 8, 16)):
        centres = torch.arange(0, 64, stride, dtype=torch.float32) + stride / 2
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        for ratio in (0.5, 1.0, 2.0):
            w, h = size / math.sqrt(ratio), size * math.sqrt(ratio)
            anchors.append(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1).reshape(-1, 4))
    num_per_level = [sum(len(a) for a in anchors[3 * i: 3 * i + 3]) for i in range(3)]
    anchors = Boxes(torch.cat(anchors))
    xy = torch.rand(20, 2) * 56
    gt = Boxes(torch.cat([xy, xy + 4 + torch.rand(20, 2) * 20], dim=1))

    whole = ATSSMatcher(topk=5)
    chunked = ATSSMatcher(topk=5, max_chunk_elements=7)
    matched_idxs, match_labels = whole(gt, anchors, num_per_level=num_per_level)
    levels = torch.repeat_interleave(torch.arange(3), torch.tensor(num_per_level))
    ref_idxs, ref_labels = _reference(gt, anchors, levels, topk=5)
    assert match_labels.tolist() == ref_labels.tolist()
    positive = match_labels == 1
    assert matched_idxs[positive].tolist() == ref_idxs[positive].tolist()
    assert positive.sum() >= len(gt)  # these boxes are all larger than 4 px: each gets a positive
    chunked_idxs, chunked_labels = chunked(gt, anchors, num_per_level=num_per_level)
    assert torch.equal(chunked_labels, match_labels) and torch.equal(chunked_idxs, matched_idxs)


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="TOPK"):
        ATSSMatcher(topk=0)


def test_built_from_the_project_config():
    cfg = get_cfg()
    cfg.merge_from_file(ATSS_CONFIG)
    matcher = build_anchor_matcher(cfg, cfg.MODEL.RPN)
    assert ANCHOR_MATCHER_REGISTRY.get("ATSSMatcher") is ATSSMatcher
    assert isinstance(matcher, ATSSMatcher)
    assert matcher.topk == cfg.MODEL.RPN.MATCHER.TOPK == 9


def test_config_without_the_import_says_what_to_import():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RPN.MATCHER.NAME", "ATSSMatcher"])
    with pytest.raises(ConfigError, match="projects.DenseText.atss_matcher"):
        build_anchor_matcher(cfg, cfg.MODEL.RPN)
