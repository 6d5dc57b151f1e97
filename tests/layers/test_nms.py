import importlib

import pytest
import torch

from d2mask.layers import batched_nms, nms

nms_module = importlib.import_module("d2mask.layers.nms")  # the package's `nms` is the function


def test_batched_nms_suppresses_only_within_a_class():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: class 0, kept
            [1.0, 1.0, 10.0, 10.0],  # 1: class 0, IoU 81/100 with box 0 -> suppressed
            [0.0, 0.0, 10.0, 10.0],  # 2: class 1, same box as 0 but another class -> kept
            [20.0, 20.0, 30.0, 30.0],  # 3: class 0, disjoint -> kept
            [0.0, 0.0, 10.0, 5.0],  # 4: class 1, IoU 50/100 with box 2 -> kept at threshold 0.6
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.6])
    classes = torch.tensor([0, 0, 1, 0, 1])
    assert batched_nms(boxes, scores, classes, 0.6).tolist() == [3, 0, 2, 4]
    assert batched_nms(boxes, scores, classes, 0.4).tolist() == [3, 0, 2]
    # Without classes, box 2 falls to box 0.
    assert nms(boxes, scores, 0.6).tolist() == [3, 0, 4]


def test_batched_nms_of_no_boxes():
    keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64


def test_batched_nms_accepts_half_precision():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]]).half()
    keep = batched_nms(boxes, torch.tensor([0.5, 0.9]).half(), torch.tensor([0, 0]), 0.5)
    assert keep.tolist() == [1]


def _nms_of_three_categories(boxes, scores, idxs):
    return batched_nms(boxes, scores, idxs, 0.6, num_categories=3)


def test_traced_batched_nms_runs_once_per_category_and_follows_its_input():
    # Traced on one input, run on another with other counts per category: the same kept boxes as
    # eager mode, from one NMS per category (not one over all boxes, quadratic in their total).
    sample = (torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 2]))
    traced = torch.jit.trace(_nms_of_three_categories, sample)
    assert len(traced.graph.findAllNodes("torchvision::nms")) == 3
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: category 0, kept
            [1.0, 1.0, 10.0, 10.0],  # 1: category 0, IoU 0.81 with box 0 -> suppressed
            [0.0, 0.0, 10.0, 10.0],  # 2: category 1, kept
            [20.0, 20.0, 30.0, 30.0],  # 3: category 0, kept
            [0.0, 0.0, 10.0, 5.0],  # 4: category 1, IoU 0.5 with box 2 -> kept
            [1.0, 1.0, 10.0, 10.0],  # 5: category 1, IoU 0.81 with box 2 -> suppressed
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.6, 0.65])
    idxs = torch.tensor([0, 0, 1, 0, 1, 1])
    assert traced(boxes, scores, idxs).tolist() == [3, 0, 2, 4]
    assert batched_nms(boxes, scores, idxs, 0.6).tolist() == [3, 0, 2, 4]
    empty = traced(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert empty.shape == (0,) and empty.dtype == torch.int64


def _crowded_boxes(num, num_categories, seed):
    """`num` boxes in clusters of near-copies (NMS at 0.5 keeps few of each) and spread ones, with
    distinct scores (equal scores are ordered by index here and arbitrarily by torchvision)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(num // 8, 2, generator=g) * 200
    xy = torch.cat([centres.repeat_interleave(6, dim=0) + torch.randn(num // 8 * 6, 2, generator=g),
                    torch.rand(num - num // 8 * 6, 2, generator=g) * 200])
    boxes = torch.cat([xy, xy + 10 + torch.rand(num, 2, generator=g) * 20], dim=1)
    scores = torch.randperm(num, generator=g).float() / num
    return boxes, scores, torch.randint(num_categories, (num,), generator=g)


@pytest.mark.parametrize("num, num_categories, max_kept", [(3000, 5, 500), (2000, 80, 100), (400, 3, 150), (300, 2, 1000), (300, 2, 0)])
def test_max_kept_is_the_first_survivors_of_nms_over_all_boxes(monkeypatch, num, num_categories, max_kept):
    boxes, scores, idxs = _crowded_boxes(num, num_categories, seed=num)
    got = batched_nms(boxes, scores, idxs, 0.5, max_kept=max_kept)
    monkeypatch.setattr(nms_module, "_HIGHEST_SCORES_FIRST_ON_CPU", False)
    expected = batched_nms(boxes, scores, idxs, 0.5)[:max_kept]
    assert torch.equal(got, expected) and len(got) == min(max_kept, len(batched_nms(boxes, scores, idxs, 0.5)))


def test_max_kept_runs_nms_on_the_highest_scoring_boxes_first(monkeypatch):
    boxes, scores, idxs = _crowded_boxes(3000, 5, seed=1)
    seen = []

    def counting_nms(b, s, threshold):
        seen.append(len(b))
        return nms(b, s, threshold)

    monkeypatch.setattr(nms_module, "nms", counting_nms)
    kept = batched_nms(boxes, scores, idxs, 0.5, max_kept=100)
    # the 200 best boxes hold 100 survivors: NMS never saw the other 2800
    assert len(kept) == 100 and sum(seen) == 200
    seen.clear()
    # near-copies of one box: each round keeps one, so the rounds double up to all 3000
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]) + torch.rand(3000, 1) * 0.1
    assert batched_nms(boxes, scores, torch.zeros(3000, dtype=torch.int64), 0.5, max_kept=10).tolist() == [int(scores.argmax())]
    assert seen == [20, 40, 80, 160, 320, 640, 1280, 2560, 3000]


def test_max_kept_orders_equal_scores_by_index():
    # boxes 0-3 disjoint, all scoring 1; box 4 a near-copy of box 1 scoring 1 too: box 1 comes first
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10], [20, 0, 30, 11]])
    scores = torch.ones(5)
    idxs = torch.zeros(5, dtype=torch.int64)
    assert batched_nms(boxes, scores, idxs, 0.5, max_kept=1).tolist() == [0]
    assert batched_nms(boxes, scores, idxs, 0.5, max_kept=4).tolist() == [0, 1, 2, 3]
    boxes = torch.cat([boxes, boxes + 100]).repeat(300, 1)  # enough boxes for rounds to start below all
    assert batched_nms(boxes, torch.ones(3000), torch.zeros(3000, dtype=torch.int64), 0.5, max_kept=8).tolist() == [0, 1, 2, 3, 5, 6, 7, 8]


def test_negative_max_kept_is_an_error():
    with pytest.raises(ValueError, match="max_kept must be >= 0"):
        batched_nms(torch.zeros(1, 4), torch.zeros(1), torch.zeros(1, dtype=torch.int64), 0.5, max_kept=-1)
