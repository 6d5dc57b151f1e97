"""Rewrites of a config's schedule: to another number of processes, and from epochs to iterations."""
import logging
import math

from ..config import ConfigError

__all__ = ["auto_scale_workers", "epochs_to_iterations"]

logger = logging.getLogger(__name__)


def auto_scale_workers(cfg, num_workers: int):
    """The config rescaled from SOLVER.REFERENCE_WORLD_SIZE processes to `num_workers`.

    The per-process batch stays the same, so the total batch scales by k = num_workers / reference;
    the learning rate scales by k (linear scaling rule) and every iteration count (MAX_ITER, STEPS,
    WARMUP_ITERS, CHECKPOINT_PERIOD, TEST.EVAL_PERIOD, TEST.VAL_LOSS_PERIOD) by 1/k, so that the
    run sees the same number of images in the same schedule. Unchanged when the reference is 0 or
    already equal to `num_workers`.

    Returns:
        A new config (frozen if `cfg` was), with REFERENCE_WORLD_SIZE = num_workers.
    """
    old_world_size = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if old_world_size == 0 or old_world_size == num_workers:
        return cfg
    if cfg.SOLVER.IMS_PER_BATCH % old_world_size != 0:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} must be divisible by "
            f"SOLVER.REFERENCE_WORLD_SIZE={old_world_size}"
        )
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    scale = num_workers / old_world_size
    solver = cfg.SOLVER
    solver.IMS_PER_BATCH = round(solver.IMS_PER_BATCH * scale)
    solver.BASE_LR = solver.BASE_LR * scale
    solver.MAX_ITER = int(round(solver.MAX_ITER / scale))
    solver.WARMUP_ITERS = int(round(solver.WARMUP_ITERS / scale))
    solver.STEPS = tuple(int(round(s / scale)) for s in solver.STEPS)
    solver.CHECKPOINT_PERIOD = int(round(solver.CHECKPOINT_PERIOD / scale))
    cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
    cfg.TEST.VAL_LOSS_PERIOD = int(round(cfg.TEST.VAL_LOSS_PERIOD / scale))
    solver.REFERENCE_WORLD_SIZE = num_workers
    logger.info(
        f"Rescaled the schedule from {old_world_size} to {num_workers} processes: IMS_PER_BATCH="
        f"{solver.IMS_PER_BATCH}, BASE_LR={solver.BASE_LR}, MAX_ITER={solver.MAX_ITER}, STEPS={solver.STEPS}, "
        f"WARMUP_ITERS={solver.WARMUP_ITERS}"
    )
    if frozen:
        cfg.freeze()
    return cfg


def _iters(epochs: float, iters_per_epoch: float) -> int:
    return max(1, int(round(epochs * iters_per_epoch)))


def epochs_to_iterations(cfg, num_images: int):
    """The config with the schedule given in epochs converted to iterations.

    One epoch is `num_images / SOLVER.IMS_PER_BATCH` iterations (the total batch over all processes).
    When SOLVER.MAX_EPOCHS > 0: MAX_ITER = ceil(MAX_EPOCHS * iterations per epoch); each of
    SOLVER.STEPS_EPOCHS (if given) becomes a step of SOLVER.STEPS; SOLVER.CHECKPOINT_PERIOD_EPOCHS,
    TEST.EVAL_PERIOD_EPOCHS and TEST.VAL_LOSS_PERIOD_EPOCHS (if > 0) replace the periods in
    iterations. Each converted count is rounded to the nearest iteration, at least 1.

    Args:
        cfg: the config (after `auto_scale_workers`, so IMS_PER_BATCH is the actual total batch).
        num_images: images in one pass over the training set(s).

    Returns:
        `cfg` itself when MAX_EPOCHS is 0, else a new config (frozen if `cfg` was).
    """
    solver = cfg.SOLVER
    if solver.MAX_EPOCHS <= 0:
        epoch_keys = [k for k in ("STEPS_EPOCHS", "CHECKPOINT_PERIOD_EPOCHS") if solver[k]]
        epoch_keys += [f"TEST.{k}" for k in ("EVAL_PERIOD_EPOCHS", "VAL_LOSS_PERIOD_EPOCHS") if cfg.TEST[k]]
        if epoch_keys:
            raise ConfigError(f"{', '.join(epoch_keys)} given in epochs, but SOLVER.MAX_EPOCHS is not set (> 0)")
        return cfg
    if num_images <= 0:
        raise ConfigError(f"SOLVER.MAX_EPOCHS={solver.MAX_EPOCHS} needs a non-empty training set, got {num_images} images")
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    solver = cfg.SOLVER
    iters_per_epoch = num_images / solver.IMS_PER_BATCH
    solver.MAX_ITER = max(1, math.ceil(solver.MAX_EPOCHS * iters_per_epoch))
    if solver.STEPS_EPOCHS:
        solver.STEPS = tuple(_iters(e, iters_per_epoch) for e in solver.STEPS_EPOCHS)
    if solver.CHECKPOINT_PERIOD_EPOCHS > 0:
        solver.CHECKPOINT_PERIOD = _iters(solver.CHECKPOINT_PERIOD_EPOCHS, iters_per_epoch)
    if cfg.TEST.EVAL_PERIOD_EPOCHS > 0:
        cfg.TEST.EVAL_PERIOD = _iters(cfg.TEST.EVAL_PERIOD_EPOCHS, iters_per_epoch)
    if cfg.TEST.VAL_LOSS_PERIOD_EPOCHS > 0:
        cfg.TEST.VAL_LOSS_PERIOD = _iters(cfg.TEST.VAL_LOSS_PERIOD_EPOCHS, iters_per_epoch)
    logger.info(
        f"{solver.MAX_EPOCHS} epochs of {num_images} images at {solver.IMS_PER_BATCH} images per iteration: "
        f"MAX_ITER={solver.MAX_ITER}, STEPS={solver.STEPS}, CHECKPOINT_PERIOD={solver.CHECKPOINT_PERIOD}, "
        f"TEST.EVAL_PERIOD={cfg.TEST.EVAL_PERIOD}"
    )
    if frozen:
        cfg.freeze()
    return cfg
