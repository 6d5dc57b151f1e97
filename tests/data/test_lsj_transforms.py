"""ViTDet's large-scale jitter: ResizeScale, FixedSizeCrop and PadTransform on hand-checked sizes."""
import numpy as np
import pytest

from d2mask.data import transforms as T


def test_resize_scale_fits_the_scaled_target_keeping_the_aspect_ratio(monkeypatch):
    image = np.zeros((300, 600, 3), dtype=np.uint8)
    aug = T.ResizeScale(min_scale=0.1, max_scale=2.0, target_height=1024, target_width=1024)
    for scale, expected in ((1.0, (512, 1024)), (0.5, (256, 512)), (2.0, (1024, 2048))):
        # A 1024 x 1024 target scaled by s: the 2:1 image is limited by its width, 600 -> 1024 s.
        monkeypatch.setattr(np.random, "uniform", lambda low, high, s=scale: s)
        tfm = aug.get_transform(image)
        assert tfm.apply_image(image).shape == (*expected, 3)
        assert np.allclose(tfm.apply_coords(np.array([[600.0, 300.0]])), [[expected[1], expected[0]]])
    with pytest.raises(ValueError, match="0 < min_scale <= max_scale, got 2.0 and 1.0"):
        T.ResizeScale(2.0, 1.0, 1024, 1024)


def test_fixed_size_crop_crops_a_larger_image_and_pads_a_smaller_side(monkeypatch):
    image = np.arange(6 * 10, dtype=np.uint8).reshape(6, 10)
    monkeypatch.setattr(np.random, "uniform", lambda low, high: 0.5)
    # Crop 4 x 4 out of 6 x 10: offsets round(0.5 * 2) = 1 row and round(0.5 * 6) = 3 columns.
    tfm = T.FixedSizeCrop((4, 4)).get_transform(image)
    assert np.array_equal(tfm.apply_image(image), image[1:5, 3:7])
    assert np.allclose(tfm.apply_coords(np.array([[3.0, 1.0]])), [[0.0, 0.0]])

    # 8 x 8 out of 6 x 10: all 6 rows and columns 1-8, then 2 rows of padding at the bottom.
    tfm = T.FixedSizeCrop((8, 8), pad_value=128, seg_pad_value=255).get_transform(image)
    out = tfm.apply_image(image)
    assert out.shape == (8, 8)
    assert np.array_equal(out[:6], image[:, 1:9]) and (out[6:] == 128).all()
    assert (tfm.apply_segmentation(np.zeros((6, 10), dtype=np.uint8))[6:] == 255).all()
    # Without padding the smaller side stays as it is.
    assert T.FixedSizeCrop((8, 8), pad=False).get_transform(image).apply_image(image).shape == (6, 8)


def test_pad_transform_shifts_coordinates_by_the_left_and_top_padding():
    tfm = T.PadTransform(2, 1, 3, 0, pad_value=7)
    image = np.ones((2, 2, 3), dtype=np.uint8)
    out = tfm.apply_image(image)
    assert out.shape == (3, 7, 3) and out[0].max() == 7 and (out[1:, 2:4] == 1).all()
    assert np.allclose(tfm.apply_box(np.array([[0.0, 0.0, 2.0, 2.0]])), [[2.0, 1.0, 4.0, 3.0]])
