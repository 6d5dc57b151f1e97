import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2mask.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec, cat, nonzero_tuple


def test_conv2d_applies_norm_then_activation():
    torch.manual_seed(0)
    conv = Conv2d(3, 4, kernel_size=3, padding=1, bias=False, norm=nn.BatchNorm2d(4), activation=F.relu)
    conv.eval()
    with torch.no_grad():
        conv.norm.running_mean.fill_(0.5)
    x = torch.randn(2, 3, 5, 5)
    bn = conv.norm
    normalised = F.batch_norm(
        F.conv2d(x, conv.weight, padding=1), bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps
    )
    expected = F.relu(normalised)
    torch.testing.assert_close(conv(x), expected)
    assert (conv(x) >= 0).all() and (conv(x) == 0).any()
    assert {"weight", "norm.weight", "norm.bias", "norm.running_mean"} <= set(conv.state_dict())


@pytest.mark.parametrize("bias", [False, True])
def test_conv2d_folds_frozen_bn_into_the_convolution(bias):
    """Output and gradients equal the convolution followed by the frozen norm; the state dict is
    unchanged by the fold (it happens per call, on copies)."""
    torch.manual_seed(0)
    conv = Conv2d(3, 4, kernel_size=3, padding=1, bias=bias, norm=FrozenBatchNorm2d(4), activation=F.relu)
    norm = conv.norm
    norm.weight.uniform_(0.5, 2)
    norm.bias.uniform_(-1, 1)
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.1, 3)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    # By hand: (conv(x) - mean) / sqrt(var + eps) * gamma + beta, then ReLU.
    y = F.conv2d(x, conv.weight, conv.bias, padding=1)
    std = (norm.running_var + norm.eps).sqrt().view(1, -1, 1, 1)
    expected = F.relu((y - norm.running_mean.view(1, -1, 1, 1)) / std * norm.weight.view(1, -1, 1, 1)
                      + norm.bias.view(1, -1, 1, 1))
    out = conv(x)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    torch.testing.assert_close(torch.autograd.grad(out, params, grad), torch.autograd.grad(expected, params, grad))
    assert conv.state_dict().keys() == before.keys()
    for key, value in conv.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_plain_conv2d_equals_torch_conv():
    conv = Conv2d(2, 3, 1)
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias))


def test_cat_does_not_copy_a_single_tensor():
    t = torch.ones(2, 3)
    assert cat([t], dim=1) is t
    assert cat([t, torch.zeros(2, 1)], dim=1).shape == (2, 4)
    with pytest.raises(ValueError, match="non-empty"):
        cat([])


def test_nonzero_tuple():
    rows, cols = nonzero_tuple(torch.tensor([[0, 1], [1, 1]]))
    assert rows.tolist() == [0, 1, 1] and cols.tolist() == [1, 0, 1]
    (idx,) = nonzero_tuple(torch.tensor([False, True, True]))
    assert idx.tolist() == [1, 2]
    (scalar,) = nonzero_tuple(torch.tensor(3))
    assert scalar.tolist() == [0]


def test_shape_spec_defaults_to_unknown():
    spec = ShapeSpec(channels=256, stride=4)
    assert (spec.channels, spec.height, spec.width, spec.stride) == (256, None, None, 4)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_shapes_to_tensor_from_ints_and_while_tracing():
    from d2mask.layers import shapes_to_tensor

    assert shapes_to_tensor([3, 5]).tolist() == [3, 5]

    def sizes(x):
        return shapes_to_tensor([torch.tensor(x.shape[-2]), torch.tensor(x.shape[-1])])

    # traced on one size, the sizes still follow the input (they are not recorded as constants)
    traced = torch.jit.trace(sizes, torch.zeros(2, 3), check_trace=False)
    assert traced(torch.zeros(4, 7)).tolist() == [4, 7]


def test_new_empty_tensor_op_keeps_the_graph():
    from d2mask.layers.wrappers import _NewEmptyTensorOp

    x = torch.zeros(0, 3, 5, 5, requires_grad=True)
    out = _NewEmptyTensorOp.apply(x, [0, 8, 3, 3])
    assert out.shape == (0, 8, 3, 3) and out.requires_grad
    out.sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
