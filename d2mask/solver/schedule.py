"""Rewrites of a run's schedule: to another number of processes, and from epochs to iterations.

The arithmetic works on a `Schedule`, so YAML configs (`auto_scale_workers`, `epochs_to_iterations`)
and Python configs (tools/lazyconfig_train_net.py) share it; each reads and writes its own keys.
Errors name both keys: the YAML one and the Python config's.
"""
import dataclasses
import logging
import math
from typing import Sequence, Tuple

from ..config import ConfigError

__all__ = ["Schedule", "scale_schedule", "schedule_from_epochs", "auto_scale_workers", "epochs_to_iterations"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A run's schedule: the total batch over all processes, the base learning rate and every count
    of iterations (0 for a period means "not periodic")."""

    ims_per_batch: int
    base_lr: float
    max_iter: int
    steps: Tuple[int, ...] = ()
    warmup_iters: int = 0
    checkpoint_period: int = 0
    eval_period: int = 0
    val_loss_period: int = 0


def scale_schedule(schedule: Schedule, reference_world_size: int, world_size: int) -> Schedule:
    """`schedule`, written for `reference_world_size` processes, rescaled to `world_size`.

    The per-process batch stays the same, so the total batch scales by k = world_size / reference;
    the learning rate scales by k (linear scaling rule) and every iteration count by 1/k, so that the
    run sees the same number of images in the same schedule. Unchanged when the reference is 0 or
    already equal to `world_size`.
    """
    if reference_world_size == 0 or reference_world_size == world_size:
        return schedule
    if schedule.ims_per_batch % reference_world_size != 0:
        raise ConfigError(
            f"The total batch (SOLVER.IMS_PER_BATCH / dataloader.train.total_batch_size) {schedule.ims_per_batch} "
            f"must be divisible by SOLVER.REFERENCE_WORLD_SIZE / train.reference_world_size={reference_world_size}"
        )
    scale = world_size / reference_world_size

    def iters(n: int) -> int:
        return int(round(n / scale))

    scaled = Schedule(
        ims_per_batch=round(schedule.ims_per_batch * scale),
        base_lr=schedule.base_lr * scale,
        max_iter=iters(schedule.max_iter),
        steps=tuple(iters(s) for s in schedule.steps),
        warmup_iters=iters(schedule.warmup_iters),
        checkpoint_period=iters(schedule.checkpoint_period),
        eval_period=iters(schedule.eval_period),
        val_loss_period=iters(schedule.val_loss_period),
    )
    logger.info(f"Rescaled the schedule from {reference_world_size} to {world_size} processes: {scaled}")
    return scaled


def schedule_from_epochs(
    schedule: Schedule,
    num_images: int,
    max_epochs: float,
    steps_epochs: Sequence[float] = (),
    checkpoint_period_epochs: float = 0,
    eval_period_epochs: float = 0,
    val_loss_period_epochs: float = 0,
) -> Schedule:
    """`schedule` with the counts given in epochs converted to iterations.

    One epoch is `num_images / ims_per_batch` iterations. When `max_epochs` > 0: max_iter =
    ceil(max_epochs * iterations per epoch); `steps_epochs` (if given) become the steps; the periods
    given in epochs (> 0) replace those in iterations. Each converted count is rounded to the nearest
    iteration, at least 1. With `max_epochs` 0, `schedule` itself, and no count may be given in epochs.
    """
    if max_epochs <= 0:
        given = [
            name
            for name, value in (
                ("SOLVER.STEPS_EPOCHS / train.steps_epochs", steps_epochs),
                ("SOLVER.CHECKPOINT_PERIOD_EPOCHS / train.checkpoint_period_epochs", checkpoint_period_epochs),
                ("TEST.EVAL_PERIOD_EPOCHS / train.eval_period_epochs", eval_period_epochs),
                ("TEST.VAL_LOSS_PERIOD_EPOCHS / train.val_loss_period_epochs", val_loss_period_epochs),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} given in epochs, but SOLVER.MAX_EPOCHS / train.max_epochs is not set (> 0)"
            )
        return schedule
    if num_images <= 0:
        raise ConfigError(
            f"SOLVER.MAX_EPOCHS / train.max_epochs={max_epochs} needs a non-empty training set, got {num_images} images"
        )
    per_epoch = num_images / schedule.ims_per_batch

    def iters(epochs: float, default: int) -> int:
        return max(1, int(round(epochs * per_epoch))) if epochs > 0 else default

    converted = dataclasses.replace(
        schedule,
        max_iter=max(1, math.ceil(max_epochs * per_epoch)),
        steps=tuple(iters(e, 0) for e in steps_epochs) if steps_epochs else schedule.steps,
        checkpoint_period=iters(checkpoint_period_epochs, schedule.checkpoint_period),
        eval_period=iters(eval_period_epochs, schedule.eval_period),
        val_loss_period=iters(val_loss_period_epochs, schedule.val_loss_period),
    )
    logger.info(f"{max_epochs} epochs of {num_images} images at {schedule.ims_per_batch} images per iteration: {converted}")
    return converted


def _yaml_schedule(cfg) -> Schedule:
    solver = cfg.SOLVER
    return Schedule(
        ims_per_batch=solver.IMS_PER_BATCH,
        base_lr=solver.BASE_LR,
        max_iter=solver.MAX_ITER,
        steps=tuple(solver.STEPS),
        warmup_iters=solver.WARMUP_ITERS,
        checkpoint_period=solver.CHECKPOINT_PERIOD,
        eval_period=cfg.TEST.EVAL_PERIOD,
        val_loss_period=cfg.TEST.VAL_LOSS_PERIOD,
    )


def _with_yaml_schedule(cfg, schedule: Schedule, **extra):
    """A copy of `cfg` (frozen if `cfg` was) holding `schedule` and the `extra` SOLVER keys."""
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    solver = cfg.SOLVER
    solver.IMS_PER_BATCH = schedule.ims_per_batch
    solver.BASE_LR = schedule.base_lr
    solver.MAX_ITER = schedule.max_iter
    solver.STEPS = tuple(schedule.steps)
    solver.WARMUP_ITERS = schedule.warmup_iters
    solver.CHECKPOINT_PERIOD = schedule.checkpoint_period
    cfg.TEST.EVAL_PERIOD = schedule.eval_period
    cfg.TEST.VAL_LOSS_PERIOD = schedule.val_loss_period
    for key, value in extra.items():
        solver[key] = value
    if frozen:
        cfg.freeze()
    return cfg


def auto_scale_workers(cfg, num_workers: int):
    """The config rescaled from SOLVER.REFERENCE_WORLD_SIZE processes to `num_workers`
    (`scale_schedule` of IMS_PER_BATCH, BASE_LR, MAX_ITER, STEPS, WARMUP_ITERS, CHECKPOINT_PERIOD,
    TEST.EVAL_PERIOD, TEST.VAL_LOSS_PERIOD).

    Returns:
        `cfg` itself when unchanged, else a new config (frozen if `cfg` was), with
        REFERENCE_WORLD_SIZE = num_workers.
    """
    schedule = _yaml_schedule(cfg)
    scaled = scale_schedule(schedule, cfg.SOLVER.REFERENCE_WORLD_SIZE, num_workers)
    if scaled is schedule:
        return cfg
    return _with_yaml_schedule(cfg, scaled, REFERENCE_WORLD_SIZE=num_workers)


def epochs_to_iterations(cfg, num_images: int):
    """The config with the schedule given in epochs (SOLVER.MAX_EPOCHS, STEPS_EPOCHS,
    CHECKPOINT_PERIOD_EPOCHS, TEST.EVAL_PERIOD_EPOCHS, TEST.VAL_LOSS_PERIOD_EPOCHS) converted to
    iterations by `schedule_from_epochs`.

    Args:
        cfg: the config (after `auto_scale_workers`, so IMS_PER_BATCH is the actual total batch).
        num_images: images in one pass over the training set(s).

    Returns:
        `cfg` itself when MAX_EPOCHS is 0, else a new config (frozen if `cfg` was).
    """
    schedule = _yaml_schedule(cfg)
    converted = schedule_from_epochs(
        schedule,
        num_images,
        cfg.SOLVER.MAX_EPOCHS,
        steps_epochs=cfg.SOLVER.STEPS_EPOCHS,
        checkpoint_period_epochs=cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS,
        eval_period_epochs=cfg.TEST.EVAL_PERIOD_EPOCHS,
        val_loss_period_epochs=cfg.TEST.VAL_LOSS_PERIOD_EPOCHS,
    )
    return cfg if converted is schedule else _with_yaml_schedule(cfg, converted)
