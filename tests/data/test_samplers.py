import itertools

import pytest
import torch

from d2mask.data.samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_training_sampler_ranks_split_every_epoch():
    size = 11
    streams = [take(TrainingSampler(size, seed=3, rank=r, world_size=2), 30) for r in range(2)]
    # Per epoch, rank 0 takes 6 indices and rank 1 takes 5: disjoint, together the whole dataset.
    for epoch in range(3):
        shard0 = streams[0][6 * epoch:6 * (epoch + 1)]
        shard1 = streams[1][5 * epoch:5 * (epoch + 1)]
        assert not set(shard0) & set(shard1)
        assert sorted(shard0 + shard1) == list(range(size))
    # Epochs differ from each other, and the stream is a function of the seed.
    assert streams[0][:6] != streams[0][6:12]
    assert take(TrainingSampler(size, seed=3, rank=0, world_size=2), 30) == streams[0]
    assert take(TrainingSampler(size, seed=4, rank=0, world_size=2), 30) != streams[0]


def test_training_sampler_without_shuffle_is_in_order():
    assert take(TrainingSampler(4, shuffle=False, seed=0, rank=1, world_size=2), 4) == [1, 3, 1, 3]


def test_training_sampler_argument_errors():
    with pytest.raises(ValueError, match="size > 0"):
        TrainingSampler(0, seed=0)
    with pytest.raises(ValueError, match="rank 2"):
        TrainingSampler(4, seed=0, rank=2, world_size=2)


def test_inference_sampler_contiguous_shards():
    shards = [list(InferenceSampler(5, rank=r, world_size=2)) for r in range(2)]
    assert shards == [[0, 1, 2], [3, 4]]
    assert len(InferenceSampler(5, rank=1, world_size=2)) == 2
    assert list(InferenceSampler(1, rank=1, world_size=3)) == []


def test_repeat_factors_from_category_frequency():
    dicts = [{"annotations": [{"category_id": 0}]} for _ in range(3)]
    dicts.append({"annotations": [{"category_id": 0}, {"category_id": 1}]})
    dicts.append({"annotations": []})
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 0.4)
    # f(1) = 1/5 -> sqrt(0.4 / 0.2) = sqrt(2); f(0) = 4/5 -> max(1, sqrt(0.5)) = 1.
    torch.testing.assert_close(factors, torch.tensor([1, 1, 1, 2 ** 0.5, 1]))


def test_repeat_factor_sampler_repeats_in_expectation_and_shards():
    factors = torch.tensor([1.0, 3.0, 0.5])
    streams = [take(RepeatFactorTrainingSampler(factors, seed=0, rank=r, world_size=2), 3000) for r in range(2)]
    counts = torch.bincount(torch.tensor(streams[0] + streams[1]), minlength=3).float()
    ratios = counts / counts[0]
    assert abs(ratios[1] - 3.0) < 0.3 and abs(ratios[2] - 0.5) < 0.1


def test_repeat_factor_sampler_ranks_split_each_epoch():
    # Integer factors repeat exactly: an epoch is 0, 1, 1, 1, 2, 2, dealt out to the ranks in turn.
    factors = torch.tensor([1.0, 3.0, 2.0])
    ordered = [take(RepeatFactorTrainingSampler(factors, shuffle=False, seed=0, rank=r, world_size=2), 6) for r in range(2)]
    assert ordered == [[0, 1, 2, 0, 1, 2], [1, 1, 2, 1, 1, 2]]
    streams = [take(RepeatFactorTrainingSampler(factors, seed=5, rank=r, world_size=2), 30) for r in range(2)]
    for epoch in range(10):
        together = streams[0][3 * epoch:3 * (epoch + 1)] + streams[1][3 * epoch:3 * (epoch + 1)]
        assert sorted(together) == [0, 1, 1, 1, 2, 2]
    assert streams[0][:3] != streams[0][3:6] or streams[0][3:6] != streams[0][6:9]  # shuffled per epoch
