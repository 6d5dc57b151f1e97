import math

import pytest
import torch
import torch.nn.functional as F

from d2mask.structures import Instances, Keypoints, heatmaps_to_keypoints


def test_to_heatmap_cells_by_hand():
    # box [0, 10] x [0, 10] on a 5 x 5 grid: 2-pixel cells
    keypoints = Keypoints([[[3, 7, 2], [10, 10, 1], [11, 5, 2], [5, 5, 0]]])
    cells, valid = keypoints.to_heatmap(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), 5)
    # (3, 7) -> cell x 1, y 3 -> 3 * 5 + 1; the far corner counts as the last cell; outside and
    # unlabelled keypoints are not valid (and their index is 0)
    assert cells.tolist() == [[16, 24, 0, 0]]
    assert valid.tolist() == [[1, 1, 0, 0]]


def test_indexing_and_cat_keep_the_instances():
    tensor = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    keypoints = Keypoints(tensor)
    assert len(keypoints) == 2 and keypoints[1].tensor.shape == (1, 4, 3)
    assert torch.equal(keypoints[-1].tensor[0], tensor[1])
    assert torch.equal(keypoints[torch.tensor([False, True])].tensor, tensor[1:])
    assert torch.equal(Keypoints.cat([keypoints, keypoints[0]]).tensor, torch.cat([tensor, tensor[:1]]))
    # an Instances field: selected and concatenated with the others
    inst = Instances((10, 10), gt_keypoints=keypoints)
    assert torch.equal(Instances.cat([inst, inst[:1]]).gt_keypoints.tensor, torch.cat([tensor, tensor[:1]]))
    with pytest.raises(ValueError, match=r"\[R, J, 3\]"):
        Keypoints(torch.zeros(2, 4))


def test_heatmaps_to_keypoints_on_a_hand_made_heatmap():
    # A 4 x 4 heatmap on a 4 x 4 pixel box: the resize is the identity, so each keypoint is the centre
    # of its peak cell. Peak logit 2, elsewhere 0: score 1 / (1 + 15 e^-2).
    maps = torch.zeros(1, 2, 4, 4)
    maps[0, 0, 1, 2] = 2.0  # row 1, column 2
    maps[0, 1, 3, 0] = 2.0
    out = heatmaps_to_keypoints(maps, torch.tensor([[10.0, 20.0, 14.0, 24.0]]))
    score = 1 / (1 + 15 * math.exp(-2))
    expected = torch.tensor([[[12.5, 21.5, 2.0, score], [10.5, 23.5, 2.0, score]]])
    torch.testing.assert_close(out, expected)


def _one_region_at_a_time(maps, rois):
    """Detectron2's decoding, region by region with F.interpolate: the reference for the batched one."""
    out = maps.new_zeros(maps.shape[0], maps.shape[1], 4)
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    for i in range(len(rois)):
        size = (int(heights[i].ceil()), int(widths[i].ceil()))
        resized = F.interpolate(maps[i : i + 1], size=size, mode="bicubic", align_corners=False)[0].flatten(1)
        best, cell = resized.max(dim=1)
        out[i, :, 0] = (cell % size[1] + 0.5) * widths[i] / size[1] + rois[i, 0]
        out[i, :, 1] = (cell // size[1] + 0.5) * heights[i] / size[0] + rois[i, 1]
        out[i, :, 2] = best
        out[i, :, 3] = 1 / (maps[i] - best[:, None, None]).exp().sum(dim=(1, 2))
    return out


def test_heatmaps_to_keypoints_decodes_regions_of_different_sizes_at_once():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 3, 8, 8, generator=generator)
    corners = torch.rand(5, 2, generator=generator) * 50
    sizes = torch.tensor([[3.3, 40.0], [17.5, 9.2], [0.5, 0.7], [25.0, 25.0], [60.1, 2.2]])  # incl. under 1 px
    rois = torch.cat([corners, corners + sizes], dim=1)
    torch.testing.assert_close(heatmaps_to_keypoints(maps, rois), _one_region_at_a_time(maps, rois), atol=1e-4, rtol=1e-4)
    assert heatmaps_to_keypoints(maps[:0], rois[:0]).shape == (0, 3, 4)
