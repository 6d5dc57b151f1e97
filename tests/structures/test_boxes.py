import numpy as np
import pytest
import torch

from d2mask.structures import (
    Boxes,
    BoxMode,
    iter_pairwise_iou_chunks,
    matched_boxlist_iou,
    matched_pairwise_iou,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
)

# Rows: [0,0,2,2] (area 4) and [0,0,4,4] (area 16). Columns: [1,1,3,3] (area 4), [0,0,2,2] (area 4),
# [5,5,6,6] (area 1, disjoint from both rows).
ROWS = Boxes([[0, 0, 2, 2], [0, 0, 4, 4]])
COLS = Boxes([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])


def random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    wh = torch.rand(n, 2, generator=g) * 20
    return Boxes(torch.cat([xy, xy + wh], dim=1))


def test_iou_of_two_overlapping_squares_is_one_seventh():
    iou = pairwise_iou(Boxes([[0, 0, 2, 2]]), Boxes([[1, 1, 3, 3]]))
    # Intersection 1, union 4 + 4 - 1 = 7.
    assert iou.shape == (1, 1)
    assert iou.item() == pytest.approx(1 / 7)


def test_pairwise_measures_on_hand_computed_matrix():
    inter = torch.tensor([[1.0, 4.0, 0.0], [4.0, 4.0, 0.0]])
    torch.testing.assert_close(pairwise_intersection(ROWS, COLS), inter)
    torch.testing.assert_close(pairwise_iou(ROWS, COLS), torch.tensor([[1 / 7, 1.0, 0.0], [0.25, 0.25, 0.0]]))
    # IoA divides by the area of the column box.
    torch.testing.assert_close(pairwise_ioa(ROWS, COLS), torch.tensor([[0.25, 1.0, 0.0], [1.0, 1.0, 0.0]]))


def test_iou_of_empty_boxes_is_zero_not_nan():
    empty = Boxes([[1, 1, 1, 1], [2, 2, 2, 5]])
    iou = pairwise_iou(empty, empty)
    assert torch.equal(iou, torch.zeros(2, 2))
    assert torch.equal(pairwise_ioa(empty, empty), torch.zeros(2, 2))


@pytest.mark.parametrize("max_elements", [1, 7, 20, 100])
def test_chunked_results_equal_unchunked_exactly(max_elements):
    a, b = random_boxes(7, seed=0), random_boxes(53, seed=1)
    assert torch.equal(pairwise_iou(a, b, max_elements=max_elements), pairwise_iou(a, b))
    assert torch.equal(pairwise_ioa(a, b, max_elements=max_elements), pairwise_ioa(a, b))
    assert torch.equal(pairwise_intersection(a, b, max_elements=max_elements), pairwise_intersection(a, b))
    # The random sets do overlap, so the comparison is not between two zero matrices.
    assert (pairwise_iou(a, b) > 0).sum() > 10


def test_iou_chunks_cover_every_column_once_in_order_and_stay_bounded():
    a, b = random_boxes(6, seed=2), random_boxes(40, seed=3)
    full = pairwise_iou(a, b)
    chunks = list(iter_pairwise_iou_chunks(a, b, max_elements=30))
    # 30 // 6 rows = 5 columns per chunk.
    assert [(s, e) for s, e, _ in chunks] == [(s, s + 5) for s in range(0, 40, 5)]
    for start, end, iou in chunks:
        assert iou.shape == (6, end - start)
        assert iou.numel() <= 30
        assert torch.equal(iou, full[:, start:end])


def test_iou_chunks_take_one_column_when_rows_exceed_the_bound():
    a, b = random_boxes(10, seed=4), random_boxes(3, seed=5)
    spans = [(s, e) for s, e, _ in iter_pairwise_iou_chunks(a, b, max_elements=4)]
    assert spans == [(0, 1), (1, 2), (2, 3)]


def test_iou_chunks_reduce_to_per_column_and_per_row_max():
    a, b = random_boxes(5, seed=6), random_boxes(31, seed=7)
    full = pairwise_iou(a, b)
    col_max, row_max = [], torch.zeros(5)
    for _, _, iou in iter_pairwise_iou_chunks(a, b, max_elements=12):
        col_max.append(iou.max(dim=0).values)
        row_max = torch.maximum(row_max, iou.max(dim=1).values)
    assert torch.equal(torch.cat(col_max), full.max(dim=0).values)
    assert torch.equal(row_max, full.max(dim=1).values)


def test_pairwise_with_no_boxes_gives_empty_matrices():
    none, some = Boxes(torch.zeros(0, 4)), random_boxes(3, seed=8)
    assert pairwise_iou(none, some).shape == (0, 3)
    assert pairwise_iou(some, none, max_elements=1).shape == (3, 0)
    assert list(iter_pairwise_iou_chunks(some, none)) == []


def test_invalid_max_elements_is_rejected():
    with pytest.raises(ValueError, match="max_elements"):
        pairwise_iou(ROWS, COLS, max_elements=0)


def test_matched_iou_pairs_rows_with_rows():
    a = Boxes([[0, 0, 2, 2], [0, 0, 4, 4], [0, 0, 1, 1]])
    b = Boxes([[1, 1, 3, 3], [0, 0, 2, 2], [3, 3, 4, 4]])
    torch.testing.assert_close(matched_pairwise_iou(a, b), torch.tensor([1 / 7, 0.25, 0.0]))
    assert matched_boxlist_iou is matched_pairwise_iou
    with pytest.raises(ValueError, match="equal length"):
        matched_pairwise_iou(a, b[:2])


def test_box_mode_convert_list_array_tensor():
    assert BoxMode.convert([1, 2, 3, 4], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) == [1, 2, 4, 6]
    assert BoxMode.convert((1, 2, 4, 6), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS) == (1, 2, 3, 4)
    arr = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 10.0, 5.0]])
    out = BoxMode.convert(arr, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [[1, 2, 4, 6], [0, 0, 10, 5]])
    np.testing.assert_array_equal(arr[0], [1, 2, 3, 4])  # the input is left as it was
    t = torch.tensor([[1.0, 2.0, 4.0, 6.0]])
    converted = BoxMode.convert(t, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    assert torch.equal(converted, torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert torch.equal(t, torch.tensor([[1.0, 2.0, 4.0, 6.0]]))
    assert BoxMode.convert([1, 2, 3, 4], 1, 1) == [1, 2, 3, 4]
    assert int(BoxMode.XYWH_REL) == 3


def test_box_mode_convert_rejects_relative_modes():
    with pytest.raises(NotImplementedError, match="XYXY_REL"):
        BoxMode.convert([0, 0, 1, 1], BoxMode.XYXY_REL, BoxMode.XYXY_ABS)


def test_boxes_construction_and_shape_errors():
    assert Boxes([]).tensor.shape == (0, 4)
    assert Boxes(torch.tensor([[1, 2, 3, 4]])).tensor.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        Boxes(torch.zeros(3, 5))


def test_boxes_clip_area_centers_scale():
    boxes = Boxes([[-5, -3, 50, 20], [2, 4, 6, 8]])
    boxes.clip((10, 30))  # (height, width)
    assert torch.equal(boxes.tensor, torch.tensor([[0.0, 0.0, 30.0, 10.0], [2.0, 4.0, 6.0, 8.0]]))
    assert torch.equal(boxes.area(), torch.tensor([300.0, 16.0]))
    assert torch.equal(boxes.get_centers(), torch.tensor([[15.0, 5.0], [4.0, 6.0]]))
    boxes.scale(2.0, 0.5)
    assert torch.equal(boxes.tensor, torch.tensor([[0.0, 0.0, 60.0, 5.0], [4.0, 2.0, 12.0, 4.0]]))


def test_boxes_nonempty_and_inside_box():
    boxes = Boxes([[0, 0, 2, 2], [0, 0, 0, 5], [0, 0, 2, 0.5]])
    assert boxes.nonempty().tolist() == [True, False, True]
    assert boxes.nonempty(threshold=1.0).tolist() == [True, False, False]
    image = (10, 20)  # (height, width)
    boxes = Boxes([[0, 0, 19, 9], [-1, 0, 5, 5], [0, 0, 20, 5]])
    assert boxes.inside_box(image).tolist() == [True, False, False]
    assert boxes.inside_box(image, boundary_threshold=1).tolist() == [True, True, True]


def test_boxes_indexing_cat_len_iter():
    boxes = Boxes([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]])
    one = boxes[1]
    assert isinstance(one, Boxes) and one.tensor.tolist() == [[1, 1, 2, 2]]
    assert boxes[-1].tensor.tolist() == [[2, 2, 3, 3]]
    assert boxes[1:].tensor[:, 0].tolist() == [1, 2]
    assert boxes[torch.tensor([True, False, True])].tensor[:, 0].tolist() == [0, 2]
    assert boxes[torch.tensor([2, 0])].tensor[:, 0].tolist() == [2, 0]
    assert len(boxes) == 3 and [b.tolist() for b in boxes][2] == [2, 2, 3, 3]
    joined = Boxes.cat([boxes, boxes[0]])
    assert len(joined) == 4 and joined.tensor[3].tolist() == [0, 0, 1, 1]
    assert len(Boxes.cat([])) == 0
    assert boxes.clone().tensor.data_ptr() != boxes.tensor.data_ptr()
    assert boxes.to("cpu").device == torch.device("cpu")


def test_chunked_iou_passes_the_same_gradient():
    a, b = random_boxes(4, seed=9), random_boxes(9, seed=10)
    grads = []
    for max_elements in (4, 1000):
        t = a.tensor.clone().requires_grad_(True)
        pairwise_iou(Boxes(t), b, max_elements=max_elements).sum().backward()
        grads.append(t.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])
