import pytest
import torch
import torchvision

from d2mask.layers import ROIAlign
from d2mask.layers import roi_align as roi_align_module


def ramp_images():
    """Two 1-channel 8x8 images: image 0 holds its x coordinate, image 1 its y coordinate plus 100."""
    xs = torch.arange(8.0).view(1, 8).expand(8, 8)
    return torch.stack([xs, xs.t() + 100]).unsqueeze(1)


def test_aligned_roi_align_samples_bin_centres():
    pool = ROIAlign((2, 2), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    out = pool(ramp_images(), torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]]))
    # Bin centres at x = 1 and 3 in continuous coordinates are pixel positions 0.5 and 2.5.
    assert out.shape == (1, 1, 2, 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.5, 2.5], [0.5, 2.5]]))


def test_batch_index_picks_the_image_and_scale_maps_coordinates():
    pool = ROIAlign(2, spatial_scale=0.5, sampling_ratio=1, aligned=True)
    # In image coordinates [0, 8] is [0, 4] on this half-resolution map.
    out = pool(ramp_images(), torch.tensor([[1.0, 0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 0.0, 8.0, 8.0]]))
    torch.testing.assert_close(out[0, 0], torch.tensor([[100.5, 100.5], [102.5, 102.5]]))
    torch.testing.assert_close(out[1, 0], torch.tensor([[0.5, 2.5], [0.5, 2.5]]))


def test_unaligned_roi_align_has_the_half_pixel_offset():
    pool = ROIAlign((2, 2), spatial_scale=1.0, sampling_ratio=1, aligned=False)
    out = pool(ramp_images(), torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]]))
    torch.testing.assert_close(out[0, 0], torch.tensor([[1.0, 3.0], [1.0, 3.0]]))
    assert "aligned=False" in repr(pool)


def test_rois_without_batch_index_are_rejected():
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        ROIAlign(2, 1.0, 0)(ramp_images(), torch.zeros(3, 4))


def _random_rois(num, image_size, scale, generator):
    """(image index, x0, y0, x1, y1) rows over 2 images of `image_size` feature pixels, in image
    coordinates (feature pixels / scale), reaching a tenth of the image beyond every side."""
    h, w = image_size
    xs = (torch.rand(num, 2, generator=generator) * 1.2 - 0.1) * w / scale
    ys = (torch.rand(num, 2, generator=generator) * 1.2 - 0.1) * h / scale
    images = torch.randint(2, (num,), generator=generator).double()
    return torch.stack([images, xs.min(1).values, ys.min(1).values, xs.max(1).values, ys.max(1).values], dim=1).double()


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("scale", [1 / 4, 1 / 32])
def test_cpu_embedding_bag_path_equals_torchvision_forward_and_backward(aligned, sampling_ratio, scale):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 20, 24, dtype=torch.float64, generator=g, requires_grad=True)
    rois = _random_rois(40, (20, 24), scale, g)
    rois[0, 1:] = 3 / scale  # an empty box
    rois[1, 1:] = torch.tensor([5.0, 5.0, 3.0, 3.0]) / scale  # corners swapped
    expected = torchvision.ops.roi_align(features, rois, (7, 5), scale, sampling_ratio, aligned)
    got = roi_align_module._roi_align_on_cpu(features, rois, (7, 5), scale, sampling_ratio, aligned)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    grad = torch.randn(expected.shape, dtype=torch.float64, generator=g)
    (expected_grad,) = torch.autograd.grad(expected, features, grad)
    (got_grad,) = torch.autograd.grad(got, features, grad)
    torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=1e-12)


def test_cpu_embedding_bag_path_splits_large_calls_and_leaves_huge_regions_to_torchvision(monkeypatch):
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 20, 24, dtype=torch.float64, generator=g)
    rois = _random_rois(30, (20, 24), 1 / 4, g)
    expected = torchvision.ops.roi_align(features, rois, 7, 1 / 4, 0, True)
    # Three regions of the largest sample grid per call: the 30 regions take several calls.
    grid_h, grid_w = [int(torch.ceil((rois[:, k + 2] - rois[:, k]) / 4 / 7).max()) for k in (2, 1)]
    monkeypatch.setattr(roi_align_module, "_MAX_SAMPLES_PER_CALL", 7 * 7 * grid_h * grid_w * 4 * 3)
    torch.testing.assert_close(roi_align_module._roi_align_on_cpu(features, rois, (7, 7), 1 / 4, 0, True), expected)
    monkeypatch.setattr(roi_align_module, "_MAX_SAMPLES_PER_CALL", 7 * 7 * 4)
    assert roi_align_module._roi_align_on_cpu(features, rois, (7, 7), 1 / 4, 0, True) is None
    torch.testing.assert_close(ROIAlign(7, 1 / 4, 0)(features, rois), expected)


def test_boxes_get_no_gradient_as_with_torchvision():
    features = torch.rand(1, 2, 8, 8, requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]], requires_grad=True)
    ROIAlign(2, 1.0, 2)(features, rois).sum().backward()
    assert features.grad is not None and rois.grad is None
