"""DefaultAnchorGenerator: hand-computed anchors, their order, buffers and config handling."""
import pytest
import torch

from d2mask.config import ConfigError, get_cfg
from d2mask.layers import ShapeSpec
from d2mask.modeling import DefaultAnchorGenerator, build_anchor_generator


def feature(h, w):
    return torch.zeros(1, 1, h, w)


def test_single_anchor_grid_by_hand():
    gen = DefaultAnchorGenerator(sizes=[[8]], aspect_ratios=[[1.0]], strides=[4], offset=0.0)
    (anchors,) = gen([feature(2, 3)])
    # Centres (0, 0), (4, 0), (8, 0), then the next row (0, 4), ...: row-major locations.
    expected = torch.tensor([
        [-4, -4, 4, 4], [0, -4, 8, 4], [4, -4, 12, 4],
        [-4, 0, 4, 8], [0, 0, 8, 8], [4, 0, 12, 8],
    ], dtype=torch.float32)
    assert torch.equal(anchors.tensor, expected)


def test_sizes_and_aspect_ratios_by_hand():
    # Size 16 (area 256); ratio h / w = 0.25 -> w 32, h 8; ratio 4 -> w 8, h 32. Sizes outer, ratios inner.
    gen = DefaultAnchorGenerator(sizes=[[16, 32]], aspect_ratios=[[0.25, 4.0]], strides=[8], offset=0.5)
    (anchors,) = gen([feature(1, 2)])
    expected = torch.tensor([
        # location (4, 4)
        [-12, 0, 20, 8], [0, -12, 8, 20], [-28, -4, 36, 12], [-4, -28, 12, 36],
        # location (12, 4)
        [-4, 0, 28, 8], [8, -12, 16, 20], [-20, -4, 44, 12], [4, -28, 20, 36],
    ], dtype=torch.float32)
    torch.testing.assert_close(anchors.tensor, expected)
    assert gen.num_anchors == [4]


def test_levels_are_separate_and_in_order():
    gen = DefaultAnchorGenerator(sizes=[[4], [8]], aspect_ratios=[[1.0], [1.0]], strides=[2, 4], offset=0.0)
    fine, coarse = gen([feature(2, 2), feature(1, 1)])
    assert len(fine) == 4 and len(coarse) == 1
    assert torch.equal(coarse.tensor, torch.tensor([[-4.0, -4.0, 4.0, 4.0]]))
    assert torch.equal(fine.tensor[3], torch.tensor([0.0, 0.0, 4.0, 4.0]))


def test_cell_anchors_follow_the_module_but_stay_out_of_the_state_dict():
    gen = DefaultAnchorGenerator(sizes=[[8], [16]], aspect_ratios=[[1.0], [1.0]], strides=[4, 8])
    assert list(gen.state_dict()) == []
    assert len(list(gen.buffers())) == 2
    gen.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in gen.cell_anchors)


def test_from_config_broadcasts_one_list_to_every_level():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64]]",
                         "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0, 2.0]]"])
    gen = build_anchor_generator(cfg, [ShapeSpec(stride=4), ShapeSpec(stride=8)])
    assert gen.num_anchors == [3, 3]
    assert gen.strides == [4, 8]
    assert gen.offset == 0.0  # MODEL.ANCHOR_GENERATOR.OFFSET's default
    a4, a8 = gen([feature(1, 1), feature(1, 1)])
    # size 32, ratio 1 is a 32 x 32 square around (0, 0); size 64 on the second level.
    assert torch.equal(a4.tensor[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    assert torch.equal(a8.tensor[1], torch.tensor([-32.0, -32.0, 32.0, 32.0]))


def test_from_config_rejects_a_wrong_number_of_levels():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64], [128]]"])
    with pytest.raises(ConfigError, match=r"MODEL.ANCHOR_GENERATOR.SIZES\) has 3 lists for 2 feature levels"):
        build_anchor_generator(cfg, [ShapeSpec(stride=4), ShapeSpec(stride=8)])


def test_forward_rejects_a_wrong_number_of_feature_maps():
    gen = DefaultAnchorGenerator(sizes=[[8]], aspect_ratios=[[1.0]], strides=[4])
    with pytest.raises(ValueError, match="built for 1 levels, got 2"):
        gen([feature(1, 1), feature(1, 1)])


def test_constructor_broadcasts_flat_lists_as_detectron2():
    """Detectron2's lazy configs write DefaultAnchorGenerator(sizes=[32, 64], aspect_ratios=[0.5, 1, 2], strides=[4])."""
    gen = DefaultAnchorGenerator(sizes=[32, 64], aspect_ratios=[0.5, 1, 2], strides=[4, 8])
    assert gen.num_anchors == gen.num_cell_anchors == [6, 6]
    level0, level1 = gen.cell_anchors
    assert torch.equal(level0, level1)
    # sizes outer, ratios inner: size 32 ratio 1 is the second, size 64 ratio 1 the fifth
    assert level0[1].tolist() == [-16.0, -16.0, 16.0, 16.0]
    assert level0[4].tolist() == [-32.0, -32.0, 32.0, 32.0]
    # one list per level stays per level
    per_level = DefaultAnchorGenerator(sizes=[[32], [64]], aspect_ratios=[1.0], strides=[4, 8])
    assert [c.tolist() for c in per_level.cell_anchors] == [[[-16.0, -16.0, 16.0, 16.0]], [[-32.0, -32.0, 32.0, 32.0]]]


@pytest.mark.parametrize("sizes, message", [([], "non-empty"), ([[8], [16], [32]], "3 lists for 2 feature levels")])
def test_constructor_rejects_bad_sizes(sizes, message):
    with pytest.raises(ValueError, match=message):
        DefaultAnchorGenerator(sizes=sizes, aspect_ratios=[1.0], strides=[4, 8])
