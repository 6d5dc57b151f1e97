"""The pieces of a training run, from explicit arguments: the check that the model fits its data,
the step trainer, the default hooks and writers, and resuming. `DefaultTrainer` calls them with
values read from a YAML config and tools/lazyconfig_train_net.py with values from a Python config,
so both have every feature.

Errors about a value name both of its keys: the YAML one and the Python config's.
"""
import inspect
import itertools
import logging
import os
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import CheckpointError, DetectionCheckpointer
from ..config import ConfigError
from ..data import DatasetFromList, MetadataCatalog
from ..utils import comm
from ..utils.env import set_rng_state
from ..utils.events import CommonMetricPrinter, EventWriter, ImageWriter, JSONWriter, TensorboardXWriter
from . import hooks
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

__all__ = [
    "create_ddp_model",
    "create_training_ddp_model",
    "check_model_fits_data",
    "check_model_fits_loader",
    "build_step_trainer",
    "build_default_writers",
    "build_default_hooks",
    "resume_training",
]

logger = logging.getLogger(__name__)

# Mixed-precision dtypes by name (SOLVER.AMP.PRECISION / train.amp.precision).
PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}
# Batch-norm statistics stay per process, as in Detectron2; newer PyTorch renamed the switch.
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


def create_ddp_model(model: nn.Module, *, fp16_compression: bool = False, **kwargs) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when there are several processes, else `model`.

    Args:
        fp16_compression: exchange the gradients in float16 (torch's `fp16_compress_hook`): half the
            communication, for a small loss of gradient precision.
        kwargs: DistributedDataParallel's arguments (e.g. find_unused_parameters).
    """
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    if device.type == "cuda":
        # the model's GPU, not the local rank: a process may see only its own GPU, as cuda:0
        kwargs.setdefault("device_ids", [device])
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        ddp.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)
    return ddp


def create_training_ddp_model(
    model: nn.Module, find_unused_parameters: bool = False, fp16_compression: bool = False
) -> nn.Module:
    """`create_ddp_model` as training uses it: batch-norm buffers are not synchronised."""
    return create_ddp_model(
        model, fp16_compression=fp16_compression, find_unused_parameters=find_unused_parameters, **_NO_BUFFER_SYNC
    )


def _classes_and_masks_to_fit(model: nn.Module) -> Optional[Tuple[int, bool, str, str]]:
    """(K, whether it predicts masks, K's YAML key, K's Python-config key) of a detector with R-CNN
    ROI heads or of a RetinaNet; None for a model without classes (ProposalNetwork) or of another kind."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    roi_heads = getattr(model, "roi_heads", None)
    if isinstance(getattr(roi_heads, "num_classes", None), int):
        return roi_heads.num_classes, bool(getattr(roi_heads, "mask_on", False)), \
            "MODEL.ROI_HEADS.NUM_CLASSES", "model.roi_heads.num_classes"
    if isinstance(getattr(model, "num_classes", None), int):
        return model.num_classes, False, "MODEL.RETINANET.NUM_CLASSES", "model.num_classes"
    return None


def _check_semantic_classes(model: nn.Module, dataset_names: Sequence[str]) -> None:
    """A ConfigError when the model's semantic head (SemanticSegmentor, PanopticFPN) predicts fewer
    classes than the first training dataset's `stuff_classes`."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    model_classes = getattr(getattr(model, "sem_seg_head", None), "num_classes", None)
    classes = (MetadataCatalog.get(dataset_names[0]).get("stuff_classes") if dataset_names else None) or []
    if isinstance(model_classes, int) and len(classes) > model_classes:
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {model_classes} but the training set {tuple(dataset_names)} has "
            f"{len(classes)} stuff_classes ({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''}); "
            f"set MODEL.SEM_SEG_HEAD.NUM_CLASSES {len(classes)} (in a Python config: "
            f"model.sem_seg_head.num_classes={len(classes)})"
        )


def check_model_fits_data(model: nn.Module, dataset_dicts: Iterable[Dict], dataset_names: Sequence[str]) -> None:
    """Raises ConfigError when `model` cannot learn the annotations of its training set: it predicts
    fewer classes (or semantic classes) than the datasets have, or it predicts masks and no annotation
    has one. Checked before training, so that the mistake is not found at the first step (an index
    out of range deep in a loss) or never (a mask head that learns nothing).

    Args:
        model: the built model (or its DistributedDataParallel); R-CNN (`roi_heads.num_classes`,
            `roi_heads.mask_on`), RetinaNet (`num_classes`) and semantic heads (`sem_seg_head.num_classes`)
            are checked, other models are not.
        dataset_dicts: the training set's dicts, read once.
        dataset_names: the registered datasets they come from, for their `thing_classes`.
    """
    _check_semantic_classes(model, dataset_names)
    fit = _classes_and_masks_to_fit(model)
    if fit is None:
        return
    model_classes, mask_on, yaml_key, python_key = fit
    classes = (MetadataCatalog.get(dataset_names[0]).get("thing_classes") if dataset_names else None) or []
    num_classes, num_annotations, has_mask, keypoint_counts = len(classes), 0, False, set()
    for record in dataset_dicts:
        for ann in record.get("annotations", []):
            num_annotations += 1
            num_classes = max(num_classes, int(ann["category_id"]) + 1)
            has_mask = has_mask or "segmentation" in ann
            if "keypoints" in ann:
                keypoint_counts.add(len(ann["keypoints"]) // 3)
    names = tuple(dataset_names)
    if num_classes > model_classes:
        listed = f" ({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''})" if classes else ""
        raise ConfigError(
            f"{yaml_key} is {model_classes} but the training set {names} has {num_classes} classes{listed}; "
            f"set {yaml_key} {num_classes} (in a Python config: {python_key}={num_classes})"
        )
    if mask_on and num_annotations and not has_mask:
        raise ConfigError(
            f"MODEL.MASK_ON is True (the model has a mask head) but no annotation of the training set {names} has "
            f"a 'segmentation'; set MODEL.MASK_ON False (in a Python config: model.roi_heads.mask_head=None) to "
            f"train boxes only, or train on a dataset with masks"
        )
    _check_keypoints_fit(model, keypoint_counts, names)


def _check_keypoints_fit(model: nn.Module, keypoint_counts: Set[int], names: Tuple[str, ...]) -> None:
    """Raises ConfigError when a keypoint model's J differs from the keypoints of its training set
    (annotations and metadata keypoint_names), which would otherwise fail inside the loss or the flip."""
    roi_heads = getattr(model.module if isinstance(model, DistributedDataParallel) else model, "roi_heads", None)
    if not getattr(roi_heads, "keypoint_on", False):
        return
    num_keypoints = roi_heads.keypoint_head.num_keypoints
    keypoint_names = MetadataCatalog.get(names[0]).get("keypoint_names") if names else None
    if keypoint_names is not None:
        keypoint_counts = keypoint_counts | {len(keypoint_names)}
    if keypoint_counts and keypoint_counts != {num_keypoints}:
        raise ConfigError(
            f"MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS is {num_keypoints} but the training set {names} has "
            f"{' and '.join(map(str, sorted(keypoint_counts)))} keypoints per instance (annotations and metadata "
            f"keypoint_names); set it to the dataset's (in a Python config: model.roi_heads.keypoint_head.num_keypoints)"
        )


def check_model_fits_loader(model: nn.Module, data_loader, dataset_names: Sequence[str]) -> None:
    """`check_model_fits_data` on the dicts inside a training loader built by
    `build_detection_train_loader` from a list, so that the training set is not loaded a second time;
    a loader of another kind is not checked."""
    dicts = next((obj for obj in _loader_chain(data_loader) if isinstance(obj, DatasetFromList)), None)
    if dicts is None:
        logger.info("The training loader holds no list of dataset dicts; the model is not checked against its data")
        return
    check_model_fits_data(model, (dicts[i] for i in range(len(dicts))), dataset_names)


def build_step_trainer(
    model: nn.Module,
    data_loader,
    optimizer: torch.optim.Optimizer,
    *,
    amp_enabled: bool = False,
    amp_precision: str = "float16",
    max_nonfinite_skips: int = 0,
) -> SimpleTrainer:
    """The object doing one step: SimpleTrainer, or AMPTrainer in `amp_precision` ("float16" or
    "bfloat16") when `amp_enabled`."""
    if not amp_enabled:
        return SimpleTrainer(model, data_loader, optimizer, max_nonfinite_skips=max_nonfinite_skips)
    if amp_precision not in PRECISIONS:
        raise ConfigError(
            f"SOLVER.AMP.PRECISION / train.amp.precision must be one of {sorted(PRECISIONS)}, got '{amp_precision}'"
        )
    return AMPTrainer(
        model, data_loader, optimizer, precision=PRECISIONS[amp_precision], max_nonfinite_skips=max_nonfinite_skips
    )


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def build_default_writers(output_dir: str, max_iter: int, device: Optional[torch.device] = None) -> List[EventWriter]:
    """Console lines, `output_dir`/metrics.json and, if tensorboard is installed, TensorBoard files;
    else the images of VIS_PERIOD as PNG files in `output_dir`/vis. `device` is the model's, whose
    peak memory the console lines show (see CommonMetricPrinter)."""
    writers: List[EventWriter] = [
        CommonMetricPrinter(max_iter, device=device),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
    ]
    if _tensorboard_available():
        writers.append(TensorboardXWriter(output_dir))
    else:
        writers.append(ImageWriter(os.path.join(output_dir, "vis")))
    return writers


def build_default_hooks(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    checkpointer: DetectionCheckpointer,
    checkpoint_period: int,
    checkpoints_to_keep: int = 0,
    checkpoint_signals: Sequence[str] = ("SIGTERM", "SIGINT"),
    eval_period: int = 0,
    test_function: Callable[[], Dict[str, Any]],
    val_loss_period: int = 0,
    val_loader: Optional[Any] = None,
    best_metric: str = "",
    best_metric_mode: str = "max",
    early_stop_patience: int = 0,
    writers: Optional[List[EventWriter]] = None,
    writer_period: int = 20,
    output_dir: str = "",
) -> List[hooks.HookBase]:
    """Timer, LR schedule, checkpoints, validation loss, evaluation, best checkpoint, early stopping,
    writers and plots, and the checkpoint on a stop signal, in the order they must run.

    Args:
        model: the model being trained (for the validation loss).
        optimizer, scheduler: stepped by the LRScheduler hook; `scheduler` is a torch scheduler or an
            fvcore ParamScheduler (a Python config's `lr_multiplier`) over the run's `max_iter`.
        checkpointer: writes periodic, final and best checkpoints.
        checkpoint_period, checkpoints_to_keep: PeriodicCheckpointer's (0 keeps all).
        checkpoint_signals: signals that end training with a checkpoint (SignalCheckpointer).
        eval_period: evaluate every this many iterations and at the end; 0: at the end only.
        test_function: runs the evaluation, returns {task: {metric: value}}.
        val_loss_period: compute the losses on `val_loader` every this many iterations (0: never).
        val_loader: finite loader of annotated batches; needed when `val_loss_period` > 0.
        best_metric: a metric ("segm/AP") whose best value is kept as model_best.pth; "" for none.
        best_metric_mode: "max" or "min", which values of `best_metric` are better.
        early_stop_patience: stop after this many evaluations without a better `best_metric`; 0: never.
        writers: event writers (main process only; None elsewhere), writing every `writer_period`
            iterations (or more often, see below); the PNG plots of their metrics.json are written
            into `output_dir`.
    """
    periodic = hooks.PeriodicCheckpointer(checkpointer, checkpoint_period, max_to_keep=checkpoints_to_keep)
    ret: List[hooks.HookBase] = [
        hooks.IterationTimer(),
        hooks.LRScheduler(optimizer, scheduler),
        periodic,  # before evaluation, so that a failing evaluation still leaves the checkpoint
    ]
    if val_loss_period > 0:
        if val_loader is None:
            raise ConfigError(
                "A validation loss period (TEST.VAL_LOSS_PERIOD / train.val_loss_period) > 0 needs a test "
                "dataset (DATASETS.TEST / dataloader.test)"
            )
        ret.append(hooks.ValidationLoss(val_loss_period, model, val_loader))
    ret.append(hooks.EvalHook(eval_period, test_function))
    if best_metric:
        ret.append(hooks.BestCheckpointer(eval_period, checkpointer, best_metric, mode=best_metric_mode))
    if early_stop_patience > 0:
        if not best_metric or eval_period <= 0:
            raise ConfigError(
                "TEST.EARLY_STOP_PATIENCE / train.early_stop_patience > 0 needs a metric (TEST.BEST_METRIC / "
                "train.best_metric) and an evaluation period (TEST.EVAL_PERIOD / train.eval_period) > 0"
            )
        ret.append(hooks.EarlyStopping(eval_period, best_metric, early_stop_patience, mode=best_metric_mode))
    if writers is not None:
        # Writers record each scalar's latest value: they must write at least as often as
        # evaluations happen, or an evaluation's results are replaced before they are written.
        periods = [p for p in (writer_period, eval_period, val_loss_period) if p > 0]
        # last: they report what the hooks above recorded at this iteration
        ret.append(hooks.PeriodicWriter(writers, period=min(periods)))
        ret.append(hooks.MetricsPlotter(os.path.join(output_dir, "metrics.json"), output_dir))
    # after everything of an iteration, so that the checkpoint it saves is of a complete one
    ret.append(hooks.SignalCheckpointer(periodic, checkpoint_signals))
    return ret


def _check_resumable(checkpointer: DetectionCheckpointer, path: str) -> None:
    """Raises CheckpointError when the model to resume has other tensors than the checkpoint's: its
    optimizer state would not fit either, and training would crash inside the optimizer (or, for
    loading alone, skip the tensors that differ). Checked before anything is loaded."""
    try:  # memory-mapped: shapes only; an unreadable file is reported by the checkpointer's load
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["model"]
    except Exception:
        return
    model = checkpointer.model.state_dict()
    differ = [f"{k}: {tuple(saved[k].shape)} saved, {tuple(v.shape)} now" for k, v in model.items()
              if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    differ += [f"{k}: not in the checkpoint" for k in model if k not in saved]
    if differ:
        raise CheckpointError(
            f"Cannot resume from {path}: the model differs from the one that saved it ({len(differ)} tensors, "
            f"e.g. {'; '.join(differ[:3])}). Resume with the run's model settings (its config.yaml), or start a "
            f"new run that loads the checkpoint as its weights (MODEL.WEIGHTS / train.init_checkpoint)"
        )


def resume_training(
    checkpointer: DetectionCheckpointer,
    trainer: TrainerBase,
    data_loader,
    weights: str,
    resume: bool,
    ims_per_batch: int,
) -> int:
    """Loads `weights`, or with `resume` and a checkpoint in the checkpointer's directory, continues
    from it: model, optimiser, schedule and hook states (the checkpointer's checkpointables), the
    iteration, the random generators and the data position.

    Args:
        trainer: the trainer whose `iter` the checkpoint restores.
        data_loader: the not-yet-started training loader, made to skip the images already trained.
        weights: a path or URL to start from without a checkpoint ("" starts from scratch).
        ims_per_batch: the total batch over all processes.

    Returns:
        The iteration to start at.
    """
    if resume and checkpointer.has_checkpoint():
        _check_resumable(checkpointer, checkpointer.get_checkpoint_file())
    checkpoint = checkpointer.resume_or_load(weights, resume=resume)
    if not (resume and checkpointer.has_checkpoint()):
        return 0
    start_iter = trainer.iter + 1
    per_rank_batch = ims_per_batch // comm.get_world_size()
    if not _fast_forward_sampler(data_loader, start_iter * per_rank_batch):
        logger.warning(
            "Could not find the training loader's sampler to skip the images of iterations "
            f"0-{trainer.iter}; after resuming, the data order differs from the interrupted run's"
        )
    rng_states = checkpoint.get("rng_states")
    if rng_states is not None and len(rng_states) == comm.get_world_size():
        set_rng_state(rng_states[comm.get_rank()])
    else:
        logger.warning(
            "The checkpoint has no random-generator states for this number of processes; "
            "random draws will differ from the interrupted run's"
        )
    return start_iter


class _SkipFirst(torch.utils.data.Sampler):
    """A sampler without the first `num_skipped` indices of another."""

    def __init__(self, sampler, num_skipped: int):
        self.sampler = sampler
        self.num_skipped = num_skipped

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.num_skipped, None)


def _fast_forward_sampler(data_loader, num_indices: int) -> bool:
    """Makes a not-yet-started loader built by `build_detection_train_loader` skip the first
    `num_indices` indices of its sampler: the images of the iterations already trained. Only
    indices are skipped, no image is read, so resuming late in a long schedule costs nothing.

    Returns:
        Whether a sampler was found (an iterable dataset with a `sampler`, inside the loader's
        chain of `.dataset` attributes).
    """
    for obj in _loader_chain(data_loader):
        if isinstance(obj, torch.utils.data.IterableDataset) and hasattr(obj, "sampler"):
            obj.sampler = _SkipFirst(obj.sampler, num_indices)
            return True
    return False


def _loader_chain(data_loader) -> Iterator[Any]:
    """The loader and the datasets inside it, outermost first, following `.dataset` attributes as
    `build_detection_train_loader` nests them: (AspectRatioGroupedDataset,) DataLoader,
    ToIterableDataset, (MapDataset,) DatasetFromList."""
    obj = data_loader
    for _ in range(5):
        if obj is None:
            return
        yield obj
        obj = getattr(obj, "dataset", None)
