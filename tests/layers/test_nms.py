import torch

from d2mask.layers import batched_nms, nms


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
