"""DeformConv / ModulatedDeformConv on hand-made offsets: the offset layout Detectron2's weights expect."""
import pytest
import torch
import torch.nn.functional as F

from d2mask.layers import DeformConv, ModulatedDeformConv


def test_zero_offsets_are_a_plain_convolution_and_the_mask_scales_it():
    torch.manual_seed(0)
    conv = DeformConv(4, 6, kernel_size=3, padding=1, groups=2)
    assert [n for n, _ in conv.named_parameters()] == ["weight"] and conv.weight.shape == (6, 2, 3, 3)
    x = torch.randn(2, 4, 7, 9)
    offset = torch.zeros(2, 18, 7, 9)
    torch.testing.assert_close(conv(x, offset), F.conv2d(x, conv.weight, padding=1, groups=2), rtol=1e-4, atol=1e-4)
    modulated = ModulatedDeformConv(4, 6, kernel_size=3, padding=1, bias=False)
    mask = torch.full((2, 9, 7, 9), 0.5)
    torch.testing.assert_close(modulated(x, offset, mask), 0.5 * F.conv2d(x, modulated.weight, padding=1), rtol=1e-4, atol=1e-4)


def test_offsets_are_dy_dx_pairs_per_kernel_tap():
    """An offset of (dy, dx) = (0, 1) at every tap samples one pixel to the right: the plain
    convolution of the image shifted left by one (away from the borders, where padding differs)."""
    torch.manual_seed(0)
    conv = DeformConv(1, 1, kernel_size=3, padding=1)
    x = torch.randn(1, 1, 6, 8)
    offset = torch.zeros(1, 18, 6, 8)
    offset[:, 1::2] = 1.0  # the dx of each of the 9 taps
    shifted = torch.cat([x[..., 1:], torch.zeros(1, 1, 6, 1)], dim=-1)
    out = conv(x, offset)
    expected = F.conv2d(shifted, conv.weight, padding=1)
    torch.testing.assert_close(out[..., 1:-2], expected[..., 1:-2], rtol=1e-4, atol=1e-4)


def test_empty_batch_and_bad_arguments():
    conv = DeformConv(4, 4, kernel_size=3, padding=1)
    assert conv(torch.zeros(0, 4, 5, 5), torch.zeros(0, 18, 5, 5)).shape == (0, 4, 5, 5)
    with pytest.raises(ValueError, match="no bias"):
        DeformConv(4, 4, 3, bias=True)
    with pytest.raises(ValueError, match="divisible by groups 3"):
        DeformConv(4, 6, 3, groups=3)
