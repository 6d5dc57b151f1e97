"""Hooks that measure the model during training: evaluation (AP) and the loss on held-out data."""
import logging
from collections import defaultdict
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ...utils import comm
from ...utils.env import get_rng_state, set_rng_state
from ...utils.events import EventStorage
from ..train_loop import HookBase

__all__ = ["EvalHook", "ValidationLoss", "flatten_results_dict", "fresh_metric", "is_better"]

logger = logging.getLogger(__name__)


def flatten_results_dict(results: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{"bbox": {"AP": 50.1}} -> {"bbox/AP": 50.1}; nested dicts of any depth."""
    flat = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_results_dict(value, prefix=name + "/"))
        else:
            flat[name] = value
    return flat


def fresh_metric(storage: EventStorage, name: str, iteration: int) -> Optional[float]:
    """The value of scalar `name` if it was recorded at `iteration` (i.e. by this iteration's
    evaluation), else None."""
    value, itr = storage.latest().get(name, (None, None))
    return value if itr == iteration else None


def is_better(value: float, best: Optional[float], mode: str) -> bool:
    """Whether `value` improves on `best` (None: nothing yet) when `mode` is "max" or "min"."""
    if mode not in ("max", "min"):
        raise ValueError(f"Metric mode must be 'max' or 'min', got '{mode}' (TEST.BEST_METRIC_MODE)")
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def period_ends(trainer, period: int) -> bool:
    """Whether the periodic work of `period` runs after this iteration; the last iteration is left
    to `after_train`, so that it never runs twice."""
    next_iter = trainer.iter + 1
    return period > 0 and next_iter % period == 0 and next_iter != trainer.max_iter


class EvalHook(HookBase):
    """Runs `eval_function` every `eval_period` iterations and after training, and records its
    results (a possibly nested dict of numbers) as scalars: {"bbox": {"AP": x}} -> "bbox/AP"."""

    def __init__(self, eval_period: int, eval_function: Callable[[], Optional[Mapping]], eval_after_train: bool = True):
        """
        Args:
            eval_period: evaluate after every this many iterations; 0 only after training.
            eval_function: runs the evaluation on every process; returns results (they may be
                empty on all but the main process).
            eval_after_train: evaluate once more when training finishes.
        """
        self._period = eval_period
        self._func = eval_function
        self._eval_after_train = eval_after_train

    def _do_eval(self) -> None:
        # evaluation may draw random numbers (starting its data loader does); training's own random
        # stream must not depend on whether, or how often, it evaluated
        rng = get_rng_state()
        try:
            results = self._func()
        finally:
            set_rng_state(rng)
        if results:
            flat = flatten_results_dict(results)
            for name, value in flat.items():
                try:
                    flat[name] = float(value)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"EvalHook: the evaluation function returned a non-number for '{name}': {value!r}. "
                        f"It must return a (nested) dict of numbers."
                    ) from None
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
        # processes may finish evaluating at different times; realign before training goes on
        comm.synchronize()

    def after_step(self) -> None:
        if period_ends(self.trainer, self._period):
            self._do_eval()

    def after_train(self) -> None:
        # only a completed run (not one that raised or stopped early, which evaluated just before)
        if self._eval_after_train and self.trainer.iter >= self.trainer.max_iter:
            self._do_eval()
        # the evaluation function may hold data loaders with worker processes; drop them
        del self._func


class ValidationLoss(HookBase):
    """Records the model's losses on a held-out loader every `period` iterations and at the last one.

    The model runs in training mode (so that it returns losses) under no_grad, with its batch-norm
    layers in eval mode: they normalise with their running statistics, which held-out data must not
    change, and a SyncBatchNorm then needs no collective call. Random draws (e.g. proposal sampling)
    happen between saving and restoring the random generators, so training's own sequence of
    random numbers is the same with and without this hook.

    Records "val_total_loss" and "val_<loss name>": averages over all batches of all processes.
    """

    def __init__(self, period: int, model: nn.Module, data_loader: Iterable):
        """
        Args:
            period: compute every this many iterations.
            model: the model being trained (a DistributedDataParallel wrapper is unwrapped).
            data_loader: a finite loader of batches with annotations, split across processes.
        """
        self._period = period
        self._model = model.module if isinstance(model, DistributedDataParallel) else model
        self._data_loader = data_loader

    def _compute(self) -> None:
        norms = [m for m in self._model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        rng = get_rng_state()
        totals: Dict[str, float] = defaultdict(float)
        num_batches = 0
        try:
            for m in norms:
                m.eval()
            with torch.no_grad():
                for batch in self._data_loader:
                    loss_dict = self._model(batch)
                    names = list(loss_dict)
                    values = torch.stack([loss_dict[k].float() for k in names]).cpu().tolist()
                    for name, value in zip(names, values):
                        totals[name] += value
                    num_batches += 1
        finally:
            for m in norms:
                m.train()
            set_rng_state(rng)
        gathered = comm.all_gather((dict(totals), num_batches))
        count = sum(n for _, n in gathered)
        if count == 0:
            logger.warning("ValidationLoss: the validation loader yielded no batch")
            return
        sums: Dict[str, float] = defaultdict(float)
        for rank_totals, _ in gathered:
            for name, value in rank_totals.items():
                sums[name] += value
        means = {f"val_{k}": v / count for k, v in sums.items()}
        means["val_total_loss"] = sum(means.values())
        self.trainer.storage.put_scalars(**means, smoothing_hint=False)
        logger.info(
            f"Validation losses at iteration {self.trainer.iter} over {count} batches: "
            + ", ".join(f"{k}={v:.4f}" for k, v in sorted(means.items()))
        )

    def after_step(self) -> None:
        if period_ends(self.trainer, self._period) or self.trainer.iter == self.trainer.max_iter - 1:
            self._compute()
