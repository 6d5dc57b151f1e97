"""Data loaders for training and inference, assembled from registered datasets and a mapper.

The train loader is infinite and yields `list[dict]` batches of SOLVER.IMS_PER_BATCH // world_size
mapped dicts per process; the test loader yields this process's shard of a dataset, one image at a time.
"""
import itertools
import logging
import signal
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.utils.data as torchdata
from tabulate import tabulate

from ..config import ConfigError, configurable
from ..utils import comm
from ..utils.env import seed_all_rng
from .catalog import DatasetCatalog, DatasetError, MetadataCatalog, check_dataset_names
from .common import AspectRatioGroupedDataset, DatasetFromList, MapDataset, ToIterableDataset
from .dataset_mapper import DatasetMapper
from .detection_utils import check_metadata_consistency
from .samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler

__all__ = [
    "get_detection_dataset_dicts",
    "check_instance_masks",
    "build_batch_data_loader",
    "build_detection_train_loader",
    "build_detection_test_loader",
]

logger = logging.getLogger(__name__)

_TRAIN_SAMPLERS = ("TrainingSampler", "RepeatFactorTrainingSampler")


def _has_instances(record: Dict[str, Any]) -> bool:
    return any(ann.get("iscrowd", 0) == 0 for ann in record.get("annotations", []))


def _labelled_keypoints(record: Dict[str, Any]) -> int:
    # COCO's flat [x1, y1, v1, x2, ...]: the visibilities are every third number
    return sum(
        int((np.asarray(ann["keypoints"], dtype=np.float64)[2::3] > 0).sum())
        for ann in record.get("annotations", [])
        if "keypoints" in ann
    )


def get_detection_dataset_dicts(
    names: Union[str, Sequence[str]], filter_empty: bool = True, min_keypoints: int = 0, check_consistency: bool = True
) -> List[Dict]:
    """The dataset dicts of several registered datasets, concatenated.

    Args:
        names: a registered dataset name, or several (a tuple or list), as in Detectron2, whose
            Python configs give one name as a string.
        filter_empty: drop images without non-crowd annotations.
        min_keypoints: drop images with fewer labelled keypoints (MODEL.ROI_KEYPOINT_HEAD.
            MIN_KEYPOINTS_PER_IMAGE for a keypoint model); 0 keeps all.
        check_consistency: require the datasets to agree on their thing_classes.
    """
    names = [names] if isinstance(names, str) else check_dataset_names(names)
    if not names:
        raise ConfigError("No dataset names given; set DATASETS.TRAIN / DATASETS.TEST to registered dataset names")
    per_dataset = [DatasetCatalog.get(name) for name in names]
    for name, dicts in zip(names, per_dataset):
        if not dicts:
            raise DatasetError(f"Dataset '{name}' is empty: its registered function returned no images")
    dataset_dicts = list(itertools.chain.from_iterable(per_dataset))
    has_annotations = "annotations" in dataset_dicts[0]

    if filter_empty and has_annotations:
        before = len(dataset_dicts)
        dataset_dicts = [d for d in dataset_dicts if _has_instances(d)]
        logger.info(f"Removed {before - len(dataset_dicts)} of {before} images without (non-crowd) annotations")
        if not dataset_dicts:
            raise DatasetError(
                f"Datasets {names} are empty after filtering out the {before} images without (non-crowd) "
                f"annotations; check the annotations, or set DATALOADER.FILTER_EMPTY_ANNOTATIONS False"
            )
    if min_keypoints > 0 and has_annotations:
        before = len(dataset_dicts)
        dataset_dicts = [d for d in dataset_dicts if _labelled_keypoints(d) >= min_keypoints]
        logger.info(f"Removed {before - len(dataset_dicts)} of {before} images with fewer than {min_keypoints} keypoints")
        if not dataset_dicts:
            raise DatasetError(
                f"Datasets {names} have no image with at least {min_keypoints} labelled keypoints; do their "
                f"annotations have 'keypoints'? (MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE)"
            )
    if check_consistency and has_annotations:
        check_metadata_consistency("thing_classes", names)
        _log_instance_counts(dataset_dicts, MetadataCatalog.get(names[0]).get("thing_classes"))
    return dataset_dicts


def _log_instance_counts(dataset_dicts: List[Dict], class_names: Optional[List[str]]) -> None:
    counts = Counter(ann["category_id"] for d in dataset_dicts for ann in d["annotations"] if not ann.get("iscrowd", 0))
    rows = [(class_names[c] if class_names and c < len(class_names) else c, n) for c, n in sorted(counts.items())]
    rows.append(("total", sum(counts.values())))
    logger.info("Instances per category:\n" + tabulate(rows, headers=["category", "#instances"], tablefmt="pipe"))


def check_instance_masks(dataset_dicts: List[Dict]) -> None:
    """Raises DatasetError when a mask model would meet an instance without a mask: a non-crowd
    annotation without "segmentation" (crowd annotations are dropped by the mapper). Checked when the
    loader is built, not when the image comes up, which may be hours into the run."""
    lacking = [
        (record, i) for record in dataset_dicts for i, ann in enumerate(record.get("annotations", []))
        if not ann.get("iscrowd", 0) and "segmentation" not in ann
    ]
    if not lacking:
        return
    total = sum(1 for d in dataset_dicts for ann in d.get("annotations", []) if not ann.get("iscrowd", 0))
    record, index = lacking[0]
    raise DatasetError(
        f"The model predicts masks (MODEL.MASK_ON) but {len(lacking)} of the {total} instances of the training "
        f"set have no 'segmentation', e.g. annotation {index} of image {record.get('file_name')} (image_id "
        f"{record.get('image_id')!r}); give them masks, remove them from the dataset, or set MODEL.MASK_ON False"
    )


def _trivial_batch_collator(batch: List[Any]) -> List[Any]:
    return batch


def _identity(item: Any) -> Any:
    return item


def _ignore_stop_signals(worker_id: int) -> None:
    # The training process decides what a SIGTERM/SIGINT/requeue signal does: it finishes its step
    # and saves a checkpoint (engine.hooks.SignalCheckpointer). A cluster signals every process of a
    # job; a worker dying of it would end the run with "DataLoader worker killed" instead. Workers
    # still end with the training process (torch's watchdog).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)


def _worker_init_reset_seed(worker_id: int) -> None:
    _ignore_stop_signals(worker_id)
    # torch gives each worker its own initial seed; numpy and `random` (used by augmentations) must
    # follow it, or all workers would draw the same augmentations.
    seed_all_rng(torch.initial_seed() % 2**31)


def build_batch_data_loader(
    dataset: torchdata.Dataset,
    sampler: torchdata.Sampler,
    total_batch_size: int,
    *,
    aspect_ratio_grouping: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Union[torchdata.DataLoader, AspectRatioGroupedDataset]:
    """An infinite loader of `list[dict]` batches of total_batch_size // world_size items.

    Args:
        dataset: a map-style dataset of mapped dicts.
        sampler: yields this process's indices into `dataset` (e.g. a `TrainingSampler`).
        total_batch_size: the batch summed over all processes.
        aspect_ratio_grouping: batch landscape and portrait images separately.
        num_workers: DataLoader worker processes.
        pin_memory: put the tensors of each item in page-locked memory, from which the model's
            `non_blocking` copies to a GPU are asynchronous (from ordinary memory they are not).
    """
    world_size = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world_size != 0:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH ({total_batch_size}) must be a positive multiple of the number of processes "
            f"({world_size}): each process loads IMS_PER_BATCH / world_size images"
        )
    batch_size = total_batch_size // world_size
    iterable = ToIterableDataset(dataset, sampler)
    if aspect_ratio_grouping:
        loader = torchdata.DataLoader(
            iterable, batch_size=None, num_workers=num_workers, collate_fn=_identity,
            worker_init_fn=_worker_init_reset_seed, pin_memory=pin_memory,
        )
        return AspectRatioGroupedDataset(loader, batch_size)
    return torchdata.DataLoader(
        iterable, batch_size=batch_size, drop_last=True, num_workers=num_workers,
        collate_fn=_trivial_batch_collator, worker_init_fn=_worker_init_reset_seed, pin_memory=pin_memory,
    )


def min_keypoints_of(cfg) -> int:
    """The `min_keypoints` of `get_detection_dataset_dicts` for the training set of `cfg`."""
    return cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0


def _pins_memory(cfg) -> bool:
    """Whether a loader feeding the model of `cfg` pins memory: when the model runs on a GPU."""
    return torch.device(cfg.MODEL.DEVICE).type == "cuda"


def _train_loader_from_config(cfg, mapper: Optional[Callable] = None, *, dataset=None, sampler=None) -> Dict[str, Any]:
    names = check_dataset_names(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, min_keypoints=min_keypoints_of(cfg)
        )
    if sampler is None:
        name = cfg.DATALOADER.SAMPLER_TRAIN
        logger.info(f"Using training sampler {name}")
        if name == "TrainingSampler":
            sampler = TrainingSampler(len(dataset))
        elif name == "RepeatFactorTrainingSampler":
            factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                dataset, cfg.DATALOADER.REPEAT_THRESHOLD
            )
            sampler = RepeatFactorTrainingSampler(factors)
        else:
            raise ConfigError(f"Unknown DATALOADER.SAMPLER_TRAIN {name!r}; choose one of {_TRAIN_SAMPLERS}")
    return {
        "dataset": dataset,
        "sampler": sampler,
        "mapper": DatasetMapper(cfg, True) if mapper is None else mapper,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "pin_memory": _pins_memory(cfg),
    }


@configurable(from_config=_train_loader_from_config)
def build_detection_train_loader(
    dataset: Union[List[Dict], torchdata.Dataset],
    *,
    mapper: Optional[Callable],
    sampler: Optional[torchdata.Sampler] = None,
    total_batch_size: int,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    pin_memory: bool = False,
):
    """The training loader: an endless iterable of `list[dict]` batches (see `build_batch_data_loader`).

    Call as `build_detection_train_loader(cfg)` (datasets DATASETS.TRAIN, `DatasetMapper(cfg, True)`,
    sampler DATALOADER.SAMPLER_TRAIN), optionally replacing parts: `(cfg, mapper=my_mapper)`;
    or with explicit arguments and no config. With a mapper that builds masks (`use_instance_mask`),
    dataset dicts are checked to have a mask for every instance (`check_instance_masks`).

    Args:
        dataset: dataset dicts, or a map-style dataset.
        mapper: applied to each item; None uses the items as they are.
        sampler: indices for this process; default a `TrainingSampler` over the dataset.
        total_batch_size, aspect_ratio_grouping, num_workers, pin_memory: see `build_batch_data_loader`;
            from a config, memory is pinned when MODEL.DEVICE is a GPU.
    """
    if isinstance(dataset, list):
        if getattr(mapper, "use_instance_mask", False):
            check_instance_masks(dataset)
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        dataset = MapDataset(dataset, mapper)
    if sampler is None:
        sampler = TrainingSampler(len(dataset))
    return build_batch_data_loader(
        dataset, sampler, total_batch_size, aspect_ratio_grouping=aspect_ratio_grouping, num_workers=num_workers,
        pin_memory=pin_memory,
    )


def _test_loader_from_config(
    cfg, dataset_name: Union[str, Sequence[str]], mapper: Optional[Callable] = None
) -> Dict[str, Any]:
    return {
        "dataset": get_detection_dataset_dicts(dataset_name, filter_empty=False),
        "mapper": DatasetMapper(cfg, False) if mapper is None else mapper,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "pin_memory": _pins_memory(cfg),
    }


@configurable(from_config=_test_loader_from_config)
def build_detection_test_loader(
    dataset: Union[List[Dict], torchdata.Dataset],
    *,
    mapper: Optional[Callable],
    sampler: Optional[torchdata.Sampler] = None,
    batch_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> torchdata.DataLoader:
    """The inference loader: this process's shard of the dataset (an `InferenceSampler`), in order,
    as `list[dict]` batches of `batch_size` (1 by default, as inference benchmarks expect).

    Call as `build_detection_test_loader(cfg, "shapes_val")` or with explicit arguments;
    `pin_memory` as in `build_batch_data_loader`.
    """
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        dataset = MapDataset(dataset, mapper)
    if sampler is None:
        sampler = InferenceSampler(len(dataset))
    return torchdata.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=False, num_workers=num_workers,
        collate_fn=_trivial_batch_collator, worker_init_fn=_ignore_stop_signals, pin_memory=pin_memory,
    )
