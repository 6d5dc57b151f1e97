"""Dataset wrappers the loaders are assembled from: a list as a dataset, a mapped dataset, a
sampler-driven iterable dataset, and batching by aspect ratio."""
import logging
import pickle
import random
from typing import Any, Callable, Iterable, Iterator, List, Optional

import numpy as np
import torch.utils.data as data

__all__ = ["DatasetFromList", "MapDataset", "ToIterableDataset", "AspectRatioGroupedDataset"]

logger = logging.getLogger(__name__)


class DatasetFromList(data.Dataset):
    """A list as a map-style dataset.

    With `serialize`, the items are pickled into one numpy buffer: worker processes then share the
    buffer's pages, where a list of dicts would be copied page by page as reference counts change
    (memory grows with workers x dataset size).
    """

    def __init__(self, items: List[Any], *, copy: bool = True, serialize: bool = True):
        """
        Args:
            items: the dataset's items.
            copy: without serialization, return a copy of each item so that a mapper cannot modify
                the list in place.
            serialize: store pickled items in one buffer.
        """
        self._copy = copy
        self._serialize = serialize
        if serialize:
            blobs = [np.frombuffer(pickle.dumps(x, protocol=-1), dtype=np.uint8) for x in items]
            self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
            self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)
        else:
            self._items = items

    def __len__(self) -> int:
        return len(self._ends) if self._serialize else len(self._items)

    def __getitem__(self, index: int) -> Any:
        if self._serialize:
            begin = 0 if index == 0 else int(self._ends[index - 1])
            return pickle.loads(memoryview(self._buffer[begin:int(self._ends[index])]))
        return pickle.loads(pickle.dumps(self._items[index], protocol=-1)) if self._copy else self._items[index]


class MapDataset(data.Dataset):
    """Applies `map_func` to the items of a map-style dataset. If it returns None (e.g. an image
    whose annotations all vanished after a crop), another random item is tried instead."""

    _WARN_AFTER = 3

    def __init__(self, dataset: data.Dataset, map_func: Callable[[Any], Optional[Any]]):
        self._dataset = dataset
        self._map_func = map_func
        self._rng = random.Random(42)

    @property
    def dataset(self) -> data.Dataset:
        """The dataset whose items are mapped."""
        return self._dataset

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> Any:
        for attempt in range(1, len(self._dataset) + 1):
            item = self._map_func(self._dataset[index])
            if item is not None:
                return item
            if attempt == self._WARN_AFTER:
                logger.warning(f"The mapper returned None {attempt} times in a row; last for index {index}")
            index = self._rng.randrange(len(self._dataset))
        raise RuntimeError(f"The mapper returned None for {len(self._dataset)} items in a row")


class ToIterableDataset(data.IterableDataset):
    """A map-style dataset read in the order of a sampler. With several DataLoader workers, worker k
    takes sampler positions k, k + num_workers, ..., so workers never repeat each other's items."""

    def __init__(self, dataset: data.Dataset, sampler: Iterable[int]):
        self.dataset = dataset
        self.sampler = sampler

    def __iter__(self) -> Iterator[Any]:
        worker = data.get_worker_info()
        indices = iter(self.sampler)
        if worker is not None and worker.num_workers > 1:
            indices = _every_nth(indices, worker.id, worker.num_workers)
        for index in indices:
            yield self.dataset[index]


def _every_nth(iterator: Iterator[int], start: int, step: int) -> Iterator[int]:
    for position, value in enumerate(iterator):
        if position % step == start:
            yield value


class AspectRatioGroupedDataset(data.IterableDataset):
    """Batches items so that each batch holds only landscape (w >= h) or only portrait images,
    which wastes less padding when the batch is stacked into one tensor.

    Items are mapped dicts with an "image" `Tensor[C, H, W]`; batches are lists of `batch_size` items.
    """

    def __init__(self, dataset: Iterable[dict], batch_size: int):
        self.dataset = dataset
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[List[dict]]:
        buckets: List[List[dict]] = [[], []]
        for item in self.dataset:
            h, w = item["image"].shape[-2:]
            bucket = buckets[0 if w >= h else 1]
            bucket.append(item)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                bucket.clear()
                yield batch
