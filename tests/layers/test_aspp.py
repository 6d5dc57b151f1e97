"""ASPP and DepthwiseSeparableConv2d: Detectron2's parameter names, by-hand equivalences, errors."""
import pytest
import torch
import torch.nn.functional as F

from d2mask.layers import ASPP, DepthwiseSeparableConv2d


def test_depthwise_separable_is_a_grouped_then_a_pointwise_convolution():
    torch.manual_seed(0)
    conv = DepthwiseSeparableConv2d(4, 6, kernel_size=3, padding=2, dilation=2, norm2="BN", activation2=F.relu)
    shapes = {k: tuple(v.shape) for k, v in conv.named_parameters()}
    assert shapes == {"depthwise.weight": (4, 1, 3, 3), "depthwise.bias": (4,), "pointwise.weight": (6, 4, 1, 1),
                      "pointwise.norm.weight": (6,), "pointwise.norm.bias": (6,)}
    conv.eval()  # the norm with its initial statistics is the identity
    x = torch.randn(2, 4, 7, 7)
    depthwise = F.conv2d(x, conv.depthwise.weight, conv.depthwise.bias, padding=2, dilation=2, groups=4)
    expected = F.relu(F.conv2d(depthwise, conv.pointwise.weight) / (1 + 1e-5) ** 0.5)
    torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-5)


def test_aspp_parameter_names_of_detectron2():
    aspp = ASPP(8, 4, [6, 12, 18], norm="BN", activation=F.relu)
    names = [n for n, _ in aspp.named_parameters()]
    assert names == [
        "convs.0.weight", "convs.0.norm.weight", "convs.0.norm.bias",
        "convs.1.weight", "convs.1.norm.weight", "convs.1.norm.bias",
        "convs.2.weight", "convs.2.norm.weight", "convs.2.norm.bias",
        "convs.3.weight", "convs.3.norm.weight", "convs.3.norm.bias",
        "convs.4.1.weight", "convs.4.1.bias",  # the pooling branch: no norm on its 1x1 input
        "project.weight", "project.norm.weight", "project.norm.bias",
    ]
    separable = ASPP(8, 4, [6, 12, 18], norm="", activation=F.relu, use_depthwise_separable_conv=True)
    assert separable.convs[1].depthwise.weight.shape == (8, 1, 3, 3) and separable.convs[0].bias is not None


def test_aspp_pooling_window_of_the_input_size_is_global_pooling():
    torch.manual_seed(0)
    global_pool = ASPP(8, 4, [1, 2, 3], norm="", activation=F.relu).eval()
    window = ASPP(8, 4, [1, 2, 3], norm="", activation=F.relu, pool_kernel_size=(6, 9)).eval()
    window.load_state_dict(global_pool.state_dict())
    x = torch.randn(2, 8, 6, 9)
    out = global_pool(x)
    assert out.shape == (2, 4, 6, 9)
    torch.testing.assert_close(window(x), out)
    with pytest.raises(ValueError, match=r"not divisible by pool_kernel_size \(6, 9\)"):
        window(torch.randn(1, 8, 6, 10))
    with pytest.raises(ValueError, match="3 dilations"):
        ASPP(8, 4, [1, 2], norm="", activation=F.relu)
