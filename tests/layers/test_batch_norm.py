import pytest
import torch
from torch import nn

from d2mask.layers import NORM_NAMES, FrozenBatchNorm2d, get_norm


def random_bn(channels=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=g))
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)
    return bn.eval()


def test_frozen_bn_equals_bn_in_eval_mode():
    bn = random_bn()
    frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d)
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(frozen(x), bn(x))
    # Frozen: training mode changes nothing and there is nothing to optimise.
    frozen.train()
    torch.testing.assert_close(frozen(x), bn(x))
    assert list(frozen.parameters()) == []


def test_fresh_frozen_bn_is_the_identity():
    x = torch.randn(1, 3, 2, 2)
    torch.testing.assert_close(FrozenBatchNorm2d(3)(x), x)


def test_bn_state_dict_loads_into_frozen_bn():
    bn = random_bn(seed=1)
    frozen = FrozenBatchNorm2d(5)
    frozen.load_state_dict(bn.state_dict())  # strict, despite num_batches_tracked
    x = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(frozen(x), bn(x))


def test_convert_replaces_nested_batch_norms():
    model = nn.Sequential(nn.Conv2d(3, 5, 1), random_bn(), nn.Sequential(nn.ReLU(), random_bn(seed=2)))
    model.eval()
    x = torch.randn(1, 3, 4, 4)
    expected = model(x)
    converted = FrozenBatchNorm2d.convert_frozen_batchnorm(model)
    assert converted is model
    assert isinstance(model[1], FrozenBatchNorm2d) and isinstance(model[2][1], FrozenBatchNorm2d)
    torch.testing.assert_close(model(x), expected)
    assert set(model.state_dict()) >= {"1.weight", "1.running_var", "2.1.running_mean"}


def test_get_norm_names():
    assert get_norm("", 8) is None and get_norm(None, 8) is None
    assert isinstance(get_norm("BN", 8), nn.BatchNorm2d)
    assert isinstance(get_norm("SyncBN", 8), nn.SyncBatchNorm)
    assert isinstance(get_norm("FrozenBN", 8), FrozenBatchNorm2d)
    gn = get_norm("GN", 64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32 and gn.num_channels == 64
    assert isinstance(get_norm(lambda c: nn.LayerNorm(c), 8), nn.LayerNorm)
    assert NORM_NAMES == ("", "BN", "SyncBN", "FrozenBN", "GN")


def test_get_norm_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_norm("Frozen_BN", 8)
    message = str(err.value)
    assert "'Frozen_BN'" in message and "Did you mean 'FrozenBN'" in message
    assert all(f"'{name}'" in message for name in ("BN", "SyncBN", "FrozenBN", "GN"))
