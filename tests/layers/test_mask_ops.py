import torch
import torch.nn.functional as F

from d2mask.layers import mask_ops
from d2mask.layers.mask_ops import paste_masks_in_image
from d2mask.structures import Boxes


def _known_mask():
    """A 28 x 28 mask holding an L shape and a single pixel."""
    mask = torch.zeros(28, 28)
    mask[3:25, 4:9] = 1
    mask[20:25, 4:20] = 1
    mask[10, 15] = 1
    return mask


def test_paste_into_box_of_the_mask_size_copies_it():
    mask = _known_mask()
    out = paste_masks_in_image(mask[None], Boxes(torch.tensor([[10.0, 20.0, 38.0, 48.0]])), (60, 50))
    expected = torch.zeros(60, 50, dtype=torch.bool)
    expected[20:48, 10:38] = mask.bool()
    assert out.dtype == torch.bool and out.shape == (1, 60, 50)
    assert torch.equal(out[0], expected)


def test_paste_into_twice_larger_box_doubles_each_cell():
    mask = _known_mask()
    out = paste_masks_in_image(mask[None], torch.tensor([[4.0, 2.0, 60.0, 58.0]]), (64, 64))
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[2:58, 4:60] = mask.bool().repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(out[0], expected)


def _grid_sample_paste(masks, boxes, height, width):
    """Independent reference: sample each mask at every image pixel centre with grid_sample."""
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    out = []
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
        gy = (ys - y0) / (y1 - y0) * 2 - 1
        gx = (xs - x0) / (x1 - x0) * 2 - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]  # (1, H, W, 2) as (x, y)
        out.append(F.grid_sample(mask[None, None], grid, align_corners=False)[0, 0])
    return torch.stack(out)


def test_matches_bilinear_grid_sample_for_fractional_boxes_and_chunks():
    torch.manual_seed(0)
    masks = torch.rand(7, 14, 14)
    boxes = torch.tensor(
        [[3.3, 4.7, 20.2, 30.9], [-5.0, -2.5, 10.0, 12.0], [25.0, 10.0, 47.5, 18.2], [0.0, 0.0, 48.0, 40.0],
         [30.1, 30.2, 33.4, 35.9], [40.0, 35.0, 70.0, 60.0], [10.0, 10.0, 11.0, 11.0]]
    )
    reference = _grid_sample_paste(masks, boxes, 40, 48) >= 0.5
    out = paste_masks_in_image(masks, boxes, (40, 48))
    assert (out != reference).float().mean() < 1e-3  # only float rounding at exactly 0.5 may differ
    # The whole-image path (accelerators), in chunks of a single mask, gives the same result.
    whole_image = torch.zeros_like(out)
    mask_ops._paste_in_chunks(masks, boxes, whole_image, 0.5, chunk=1)
    assert (whole_image != out).float().mean() < 1e-4


def test_cpu_windows_paste_what_the_whole_image_path_pastes():
    """The CPU path resamples each mask only near its box; the whole-image path everywhere."""
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(60, 28, 28, generator=g)
    corners = torch.rand(60, 2, 2, generator=g) * torch.tensor([90.0, 70.0]) - 10  # some beyond the image
    boxes = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
    boxes[:5, 2:] = boxes[:5, :2] + torch.rand(5, 2, generator=g)  # smaller than a pixel
    for threshold, dtype in ((0.5, torch.bool), (-1.0, torch.uint8)):
        windows, whole_image = (torch.zeros(60, 64, 80, dtype=dtype) for _ in range(2))
        mask_ops._paste_in_windows(masks, boxes, windows, threshold)
        mask_ops._paste_in_chunks(masks, boxes, whole_image, threshold, chunk=7)
        assert whole_image.any()
        assert ((windows.int() - whole_image.int()).abs() > int(threshold < 0)).float().mean() < 1e-4


def test_threshold_and_empty_input():
    mask = torch.full((1, 4, 4), 0.6)
    box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    assert paste_masks_in_image(mask, box, (4, 4)).all()
    assert not paste_masks_in_image(mask, box, (4, 4), threshold=0.7).any()
    empty = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (10, 12))
    assert empty.shape == (0, 10, 12) and empty.dtype == torch.bool


def test_negative_threshold_returns_soft_masks_as_uint8():
    """Detectron2's convention: threshold < 0 keeps the resampled probabilities, times 255, truncated."""
    mask = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])
    # A box of the mask's own size: each image pixel is one mask cell, no interpolation.
    out = paste_masks_in_image(mask, torch.tensor([[1.0, 0.0, 3.0, 2.0]]), (2, 4), threshold=-1)
    assert out.dtype == torch.uint8
    assert out[0].tolist() == [[0, 0, 127, 0], [0, 255, 63, 0]]
    empty = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (10, 12), threshold=-1)
    assert empty.shape == (0, 10, 12) and empty.dtype == torch.uint8
