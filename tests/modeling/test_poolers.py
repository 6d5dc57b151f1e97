import pytest
import torch

from d2mask.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format
from d2mask.structures import Boxes


def _square(side, x0=0.0):
    return [x0, 0.0, x0 + side, side]


def test_assign_boxes_to_levels_follows_fpn_equation():
    # floor(4 + log2(side / 224)) clamped to [2, 5], minus 2.
    sides = [224, 112, 111, 448, 1000, 10, 0]
    boxes = Boxes(torch.tensor([_square(s) for s in sides]))
    levels = assign_boxes_to_levels([boxes], 2, 5, 224, 4)
    assert levels.tolist() == [2, 1, 0, 3, 3, 0, 0]
    assert levels.dtype == torch.int64


def test_convert_boxes_to_pooler_format_prefixes_image_index():
    a = Boxes(torch.tensor([[1.0, 2, 3, 4]]))
    b = Boxes(torch.tensor([[5.0, 6, 7, 8], [9.0, 10, 11, 12]]))
    rois = convert_boxes_to_pooler_format([a, Boxes(torch.zeros(0, 4)), b])
    assert rois.tolist() == [[0, 1, 2, 3, 4], [2, 5, 6, 7, 8], [2, 9, 10, 11, 12]]


def test_each_box_is_pooled_from_its_level_and_image_in_input_order():
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    # Level l (0..3) of image n is the constant 10 * n + l, so the pooled value says where a box was read.
    features = [
        torch.stack([torch.full((2, 512 // s, 512 // s), 10.0 * n + level) for n in range(2)])
        for level, s in enumerate([4, 8, 16, 32])
    ]
    pooler = ROIPooler(7, scales, sampling_ratio=2, pooler_type="ROIAlignV2")
    image0 = Boxes(torch.tensor([_square(230), _square(20), _square(120, 10)]))
    image1 = Boxes(torch.tensor([_square(60), _square(460), _square(112)]))
    out = pooler(features, [image0, image1])
    assert out.shape == (6, 2, 7, 7)
    # sides 230, 20, 120 -> P4, P2 (clamped), P3; sides 60, 460, 112 -> P2, P5, P3. Value: 10n + level - 2.
    expected = torch.tensor([2.0, 0, 1, 10, 13, 11])
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), expected)
    assert torch.allclose(out, expected[:, None, None, None].expand_as(out))


def test_pooler_type_selects_aligned_sampling():
    # A horizontal ramp: feature pixel j holds the value j.
    ramp = torch.arange(8, dtype=torch.float32).expand(1, 1, 8, 8).contiguous()
    box = [Boxes(torch.tensor([[0.0, 0.0, 4.0, 4.0]]))]
    # One bin, one sample at the box centre x = 2: ROIAlignV2 samples pixel coordinate 2 - 0.5.
    v2 = ROIPooler(1, [1.0], sampling_ratio=1, pooler_type="ROIAlignV2")([ramp], box)
    legacy = ROIPooler(1, [1.0], sampling_ratio=1, pooler_type="ROIAlign")([ramp], box)
    assert v2.item() == pytest.approx(1.5)
    assert legacy.item() == pytest.approx(2.0)


def test_no_boxes_gives_empty_output():
    features = [torch.rand(1, 3, 16, 16), torch.rand(1, 3, 8, 8)]
    out = ROIPooler(5, [1 / 4, 1 / 8], 0, "ROIAlignV2")(features, [Boxes(torch.zeros(0, 4))])
    assert out.shape == (0, 3, 5, 5)


def test_gradients_flow_to_every_level():
    features = [torch.rand(1, 2, 64, 64, requires_grad=True), torch.rand(1, 2, 32, 32, requires_grad=True)]
    pooler = ROIPooler(2, [1 / 4, 1 / 8], 0, "ROIAlignV2", canonical_box_size=32, canonical_level=3)
    boxes = Boxes(torch.tensor([_square(10), _square(100)]))  # level 2 and level 3
    pooler(features, [boxes]).sum().backward()
    assert features[0].grad.abs().sum() > 0 and features[1].grad.abs().sum() > 0


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="pooler_type must be one of"):
        ROIPooler(7, [1 / 4], 0, "ROIPool")
    with pytest.raises(ValueError, match="powers of 2"):
        ROIPooler(7, [1 / 4, 1 / 6], 0, "ROIAlignV2")
    pooler = ROIPooler(7, [1 / 4, 1 / 8], 0, "ROIAlignV2")
    with pytest.raises(ValueError, match="2 feature levels but got 1"):
        pooler([torch.rand(1, 1, 8, 8)], [Boxes(torch.zeros(0, 4))])
