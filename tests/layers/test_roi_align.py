import pytest
import torch

from d2mask.layers import ROIAlign


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
