import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from d2mask.structures import (
    BitMasks,
    PolygonMasks,
    polygon_area,
    polygons_to_bitmask,
    rle_to_bitmask,
)

SQUARE = [10.0, 10.0, 20.0, 10.0, 20.0, 20.0, 10.0, 20.0]  # the square [10, 20] x [10, 20]


def test_polygon_equal_to_its_box_gives_an_all_ones_target():
    masks = PolygonMasks([[SQUARE]])
    target = masks.crop_and_resize(torch.tensor([[10.0, 10.0, 20.0, 20.0]]), 28)
    assert target.shape == (1, 28, 28) and target.dtype == torch.bool
    assert target.all()


def test_polygon_in_a_box_twice_as_wide_fills_the_left_half():
    masks = PolygonMasks([[SQUARE]])
    target = masks.crop_and_resize(torch.tensor([[10.0, 10.0, 30.0, 20.0]]), 28)[0]
    assert target[:, :14].all() and not target[:, 14:].any()


def test_bitmask_crop_and_resize_matches_the_polygon_case():
    # A 56-pixel square: 2 pixels per target cell, so every sample lands on a full pixel.
    bitmap = torch.zeros(1, 64, 64, dtype=torch.bool)
    bitmap[0, 4:60, 4:60] = True
    masks = BitMasks(bitmap)
    assert masks.crop_and_resize(torch.tensor([[4.0, 4.0, 60.0, 60.0]]), 28).all()
    wide = masks.crop_and_resize(torch.tensor([[4.0, 4.0, 116.0, 60.0]]), 28)[0]
    assert wide[:, :14].all() and not wide[:, 14:].any()
    with pytest.raises(ValueError, match="2 boxes for 1 masks"):
        masks.crop_and_resize(torch.zeros(2, 4), 28)


def test_crop_and_resize_takes_each_box_for_its_own_instance():
    other = [0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0]
    masks = PolygonMasks([[SQUARE], [other]])
    # Instance 1's box is around instance 0's square, which instance 1 does not cover.
    target = masks.crop_and_resize(torch.tensor([[10.0, 10.0, 20.0, 20.0], [10.0, 10.0, 20.0, 20.0]]), 7)
    assert target[0].all() and not target[1].any()
    assert masks[:0].crop_and_resize(torch.zeros(0, 4), 7).shape == (0, 7, 7)


def test_polygon_validation_names_the_instance():
    with pytest.raises(ValueError, match="polygon 0 of instance 1 has 4 coordinates"):
        PolygonMasks([[SQUARE], [[0, 0, 1, 1]]])
    with pytest.raises(ValueError, match="instance 0 has 7"):
        PolygonMasks([[[0, 0, 1, 1, 2, 2, 3]]])
    with pytest.raises(TypeError, match="instance 0 is a list of numbers"):
        PolygonMasks([SQUARE])
    with pytest.raises(TypeError, match="one entry per instance"):
        PolygonMasks(np.zeros((1, 8)))


def test_polygons_stored_as_flat_float64_arrays():
    masks = PolygonMasks([[np.array([[0, 0], [4, 0], [0, 3]]), torch.tensor(SQUARE)]])
    assert all(p.dtype == np.float64 and p.ndim == 1 for p in masks.polygons[0])
    np.testing.assert_array_equal(masks.polygons[0][0], [0, 0, 4, 0, 0, 3])


def test_polygon_bounding_boxes_and_area():
    triangle = [0.0, 0.0, 4.0, 0.0, 0.0, 3.0]
    masks = PolygonMasks([[triangle, SQUARE], [SQUARE], []])
    boxes = masks.get_bounding_boxes().tensor
    assert boxes.tolist() == [[0, 0, 20, 20], [10, 10, 20, 20], [0, 0, 0, 0]]
    # Triangle 4 * 3 / 2 = 6, square 100.
    assert masks.area().tolist() == [106.0, 100.0, 0.0]
    assert polygon_area(np.array(triangle)) == 6.0
    assert masks.nonempty().tolist() == [True, True, False]


def test_polygon_indexing_and_cat():
    masks = PolygonMasks([[SQUARE], [[0, 0, 1, 0, 0, 1]], [[0, 0, 2, 0, 0, 2]]])
    first_x = lambda m: [ps[0][2] for ps in m.polygons]  # noqa: E731 - x of each instance's 2nd point
    assert first_x(masks[1]) == [1.0]
    assert first_x(masks[-1]) == [2.0]
    assert first_x(masks[1:]) == [1.0, 2.0]
    assert first_x(masks[[2, 0]]) == [2.0, 20.0]
    assert first_x(masks[torch.tensor([2, 1])]) == [2.0, 1.0]
    assert first_x(masks[torch.tensor([True, False, True])]) == [20.0, 2.0]
    with pytest.raises(IndexError):
        masks[torch.tensor([True, False])]
    joined = PolygonMasks.cat([masks, masks[0]])
    assert len(joined) == 4 and first_x(joined)[3] == 20.0
    assert masks.to("cpu") is masks and len(list(masks)) == 3


def test_polygons_to_bitmask_hand_case():
    # The rectangle [0, 4] x [0, 3] covers pixels with x in 0..3 and y in 0..2.
    bitmap = polygons_to_bitmask([np.array([0.0, 0.0, 4.0, 0.0, 4.0, 3.0, 0.0, 3.0])], 5, 6)
    expected = np.zeros((5, 6), dtype=bool)
    expected[:3, :4] = True
    assert bitmap.dtype == bool
    np.testing.assert_array_equal(bitmap, expected)
    assert not polygons_to_bitmask([], 2, 3).any()


def test_rle_decoding_uncompressed_and_compressed():
    # Uncompressed COCO RLE runs down the columns: 3 zeros, 4 ones, 13 zeros.
    expected = np.zeros((4, 5), dtype=bool)
    expected[3, 0] = True
    expected[:3, 1] = True
    np.testing.assert_array_equal(rle_to_bitmask({"size": [4, 5], "counts": [3, 4, 13]}), expected)
    compressed = mask_util.encode(np.asfortranarray(expected.astype(np.uint8)))
    np.testing.assert_array_equal(rle_to_bitmask(compressed), expected)
    as_text = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    np.testing.assert_array_equal(rle_to_bitmask(as_text), expected)
    with pytest.raises(ValueError, match="'size' and 'counts'"):
        rle_to_bitmask({"counts": [1]})


def test_bitmasks_from_polygons_boxes_area_nonempty():
    masks = BitMasks.from_polygon_masks([[[1.0, 2.0, 4.0, 2.0, 4.0, 5.0, 1.0, 5.0]], []], 8, 9)
    assert masks.tensor.shape == (2, 8, 9) and masks.image_size == (8, 9)
    # Pixels x in 1..3, y in 2..4: 9 pixels, box (1, 2, 4, 5).
    assert masks.area().tolist() == [9, 0]
    assert masks.nonempty().tolist() == [True, False]
    assert masks.get_bounding_boxes().tensor.tolist() == [[1, 2, 4, 5], [0, 0, 0, 0]]


def test_bitmask_bounding_box_of_scattered_pixels():
    bitmap = torch.zeros(1, 10, 12, dtype=torch.bool)
    bitmap[0, 2, 7] = bitmap[0, 6, 3] = True
    assert BitMasks(bitmap).get_bounding_boxes().tensor.tolist() == [[3, 2, 8, 7]]
    assert len(BitMasks(torch.zeros(0, 4, 4)).get_bounding_boxes()) == 0


def test_bitmasks_indexing_cat_to():
    masks = BitMasks(torch.arange(3).view(3, 1, 1).expand(3, 2, 2))
    assert masks.tensor.dtype == torch.bool
    assert masks[0].tensor.shape == (1, 2, 2) and not masks[0].tensor.any()
    assert len(masks[torch.tensor([True, False, True])]) == 2
    assert len(masks[1:]) == 2 and len(masks[torch.tensor([2, 1, 0])]) == 3
    assert len(BitMasks.cat([masks, masks[1]])) == 4
    assert masks.to("cpu").device == torch.device("cpu")
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        BitMasks(torch.zeros(2, 2))
