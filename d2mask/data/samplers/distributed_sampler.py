"""Index samplers that split a dataset between the processes of a (possibly distributed) job.

Each process builds the same sampler with its own `rank`; the ranks then see disjoint indices.
"""
import math
from typing import Dict, Iterator, List, Optional

import torch
from torch.utils.data.sampler import Sampler

from ...utils import comm
from ..detection_utils import category_image_counts

__all__ = ["TrainingSampler", "RepeatFactorTrainingSampler", "InferenceSampler"]


def _rank_and_world_size(rank: Optional[int], world_size: Optional[int]) -> tuple:
    rank = comm.get_rank() if rank is None else rank
    world_size = comm.get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"Sampler rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


class TrainingSampler(Sampler):
    """An endless stream of indices in [0, size): epoch after epoch, a fresh permutation (or, with
    shuffle=False, the identity) of which rank r takes the positions r, r + world_size, ...

    All ranks use the same seed, so within every epoch their indices are disjoint and together cover
    the dataset.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None, *,
                 rank: Optional[int] = None, world_size: Optional[int] = None):
        """
        Args:
            size: dataset length.
            shuffle: permute each epoch.
            seed: seed of the permutations; None draws one, shared by all ranks.
            rank, world_size: this process's shard; None reads them from the process group.
        """
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"TrainingSampler needs a dataset size > 0, got {size!r}")
        self._size = size
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = _rank_and_world_size(rank, world_size)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self._seed)
        while True:
            epoch = torch.randperm(self._size, generator=generator) if self._shuffle else torch.arange(self._size)
            yield from epoch[self._rank::self._world_size].tolist()


class RepeatFactorTrainingSampler(Sampler):
    """Like `TrainingSampler`, but image i appears on average `repeat_factors[i]` times per epoch
    (class-aware resampling of LVIS, Gupta et al. 2019). A fractional factor is rounded up or down at
    random each epoch, so the expectation is exact."""

    def __init__(self, repeat_factors: torch.Tensor, *, shuffle: bool = True, seed: Optional[int] = None,
                 rank: Optional[int] = None, world_size: Optional[int] = None):
        """
        Args:
            repeat_factors: `Tensor[N]` float, each >= 0.
            shuffle, seed, rank, world_size: as in `TrainingSampler`.
        """
        self._int_part = torch.trunc(repeat_factors)
        self._frac_part = repeat_factors - self._int_part
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = _rank_and_world_size(rank, world_size)

    @staticmethod
    def repeat_factors_from_category_frequency(dataset_dicts: List[Dict], repeat_thresh: float) -> torch.Tensor:
        """Per-image repeat factors max over its categories c of max(1, sqrt(t / f(c))), where f(c) is
        the fraction of images containing category c and t = `repeat_thresh`.

        Returns:
            `Tensor[N]` float32.
        """
        num_images = len(dataset_dicts)
        category_factor = {
            c: max(1.0, math.sqrt(repeat_thresh / (n / num_images)))
            for c, n in category_image_counts(dataset_dicts).items()
        }
        factors = [
            max((category_factor[ann["category_id"]] for ann in record["annotations"]), default=1.0)
            for record in dataset_dicts
        ]
        return torch.tensor(factors, dtype=torch.float32)

    def _epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        rounded = self._int_part + (torch.rand(len(self._frac_part), generator=generator) < self._frac_part)
        return torch.repeat_interleave(torch.arange(len(rounded)), rounded.to(torch.int64))

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self._seed)
        while True:
            indices = self._epoch_indices(generator)
            if self._shuffle:
                indices = indices[torch.randperm(len(indices), generator=generator)]
            yield from indices[self._rank::self._world_size].tolist()


class InferenceSampler(Sampler):
    """Each index in [0, size) exactly once over all ranks: rank r gets the r-th of `world_size`
    contiguous blocks whose lengths differ by at most one."""

    def __init__(self, size: int, *, rank: Optional[int] = None, world_size: Optional[int] = None):
        if size < 0:
            raise ValueError(f"InferenceSampler needs a size >= 0, got {size}")
        self._size = size
        self._rank, self._world_size = _rank_and_world_size(rank, world_size)
        base, extra = divmod(size, self._world_size)
        shard_sizes = [base + (r < extra) for r in range(self._world_size)]
        begin = sum(shard_sizes[:self._rank])
        self._local_indices = range(begin, begin + shard_sizes[self._rank])

    def __iter__(self) -> Iterator[int]:
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)
