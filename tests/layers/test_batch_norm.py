import pytest
import torch
from torch import nn

from d2mask.engine import launch
from d2mask.layers import NORM_NAMES, CycleBatchNormList, FrozenBatchNorm2d, LayerNorm, NaiveSyncBatchNorm, get_norm


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
    ln = get_norm("LN", 8)
    assert isinstance(ln, LayerNorm) and ln.weight.shape == (8,) and ln.eps == 1e-6
    assert isinstance(get_norm("nnSyncBN", 8), nn.SyncBatchNorm)
    assert type(get_norm("naiveSyncBN", 8)) is NaiveSyncBatchNorm and get_norm("naiveSyncBN", 8)._stats_mode == ""
    assert get_norm("naiveSyncBN_N", 8)._stats_mode == "N"
    assert NORM_NAMES == ("", "BN", "SyncBN", "FrozenBN", "GN", "LN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N")


def test_get_norm_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_norm("Frozen_BN", 8)
    message = str(err.value)
    assert "'Frozen_BN'" in message and "Did you mean 'FrozenBN'" in message
    assert all(f"'{name}'" in message for name in ("BN", "SyncBN", "FrozenBN", "GN"))


def test_layer_norm_normalises_each_position_over_channels():
    x = torch.tensor([[1.0, 3.0], [2.0, 2.0], [6.0, 4.0]]).view(1, 3, 1, 2)  # channels (1, 2, 6) and (3, 2, 4)
    y = LayerNorm(3, eps=0.0)(x)
    # position 0: mean 3, variance (4 + 1 + 9) / 3; position 1: mean 3, variance (0 + 1 + 1) / 3
    expected0 = torch.tensor([-2.0, -1.0, 3.0]) / (14 / 3) ** 0.5
    expected1 = torch.tensor([0.0, -1.0, 1.0]) / (2 / 3) ** 0.5
    assert torch.allclose(y[0, :, 0, 0], expected0) and torch.allclose(y[0, :, 0, 1], expected1)
    # the per-channel affine transform after it
    ln = LayerNorm(3, eps=0.0)
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        ln.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(ln(x)[0, :, 0, 1], expected1 * torch.tensor([1.0, 2.0, 3.0]) + torch.tensor([0.0, 1.0, 0.0]))


def test_cycle_batch_norm_keeps_statistics_per_position_in_the_cycle():
    norm = CycleBatchNormList(2, num_features=3)
    assert [n for n, _ in norm.named_parameters()] == ["weight", "bias"]  # one shared affine transform
    a, b = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2) * 5 + 10
    norm(a), norm(b), norm(a)
    # the first norm saw a twice, the second b once (momentum 0.1 from mean 0)
    expected_first = 0.1 * a.mean(dim=(0, 2, 3)) * (1 + 0.9)
    torch.testing.assert_close(norm[0].running_mean, expected_first)
    torch.testing.assert_close(norm[1].running_mean, 0.1 * b.mean(dim=(0, 2, 3)))
    norm.eval()
    with torch.no_grad():
        norm.weight.fill_(2.0)
    # the next call is the second norm's (three calls so far): b's statistics, then the affine transform
    out = norm(b)
    bn1 = norm[1]
    expected = (b - bn1.running_mean.view(1, -1, 1, 1)) / (bn1.running_var.view(1, -1, 1, 1) + bn1.eps).sqrt() * 2.0
    torch.testing.assert_close(out, expected)


def test_naive_sync_bn_in_one_process_is_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    naive, bn = NaiveSyncBatchNorm(3), nn.BatchNorm2d(3)
    torch.testing.assert_close(naive(x), bn(x))
    torch.testing.assert_close(naive.running_var, bn.running_var)
    with pytest.raises(ValueError, match="stats_mode must be '' or 'N'"):
        NaiveSyncBatchNorm(3, stats_mode="X")


SYNC_CASES = [("", [3, 3]), ("N", [4, 2]), ("N", [6, 0])]


def _naive_sync_bn_rank(out_dir):
    from d2mask.utils import comm

    rank = comm.get_rank()
    for case, (stats_mode, sizes) in enumerate(SYNC_CASES):
        torch.manual_seed(0)
        full = torch.randn(sum(sizes), 3, 4, 4)
        start = sum(sizes[:rank])
        x = full[start:start + sizes[rank]].clone().requires_grad_(True)
        norm = NaiveSyncBatchNorm(3, stats_mode=stats_mode)
        out = norm(x)
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
        torch.save({"out": out.detach(), "grad": x.grad, "running_var": norm.running_var}, f"{out_dir}/{case}-{rank}.pt")


def test_naive_sync_bn_across_two_processes_is_batch_norm_of_the_whole_batch(tmp_path):
    """With equal batches (or stats_mode "N", also with an empty one), two processes normalise as one
    BatchNorm over both batches, forward and backward."""
    launch(_naive_sync_bn_rank, 2, dist_url="auto", args=(str(tmp_path),))
    for case, (_, sizes) in enumerate(SYNC_CASES):
        results = [torch.load(tmp_path / f"{case}-{r}.pt") for r in range(2)]
        torch.manual_seed(0)
        full = torch.randn(sum(sizes), 3, 4, 4).requires_grad_(True)
        bn = nn.BatchNorm2d(3)
        out = bn(full)
        weights = torch.cat([torch.arange(n * 48).view(n, 3, 4, 4) for n in sizes])
        (out * weights).sum().backward()
        torch.testing.assert_close(torch.cat([r["out"] for r in results]), out.detach(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.cat([r["grad"] for r in results]), full.grad, rtol=1e-3, atol=1e-3)
        # the running variance: BatchNorm's is unbiased, the synchronised one the batch variance
        n = sum(sizes) * 16
        expected_var = 0.9 + (bn.running_var - 0.9) * (n - 1) / n
        torch.testing.assert_close(results[0]["running_var"], expected_var, rtol=1e-3, atol=1e-4)
