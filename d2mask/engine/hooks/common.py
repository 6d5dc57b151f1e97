"""Hooks every training run has: callbacks, timing, the learning-rate schedule, metric writers, plots."""
import datetime
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional

import torch
from fvcore.common.param_scheduler import ParamScheduler
from torch.optim.lr_scheduler import LRScheduler as TorchLRScheduler

from ...solver import LRMultiplier
from ...utils import comm
from ...utils.events import EventWriter
from ...utils.plotting import plot_metrics
from ..train_loop import HookBase

__all__ = ["CallbackHook", "IterationTimer", "LRScheduler", "PeriodicWriter", "MetricsPlotter"]

logger = logging.getLogger(__name__)

_Callback = Optional[Callable[["object"], None]]


class CallbackHook(HookBase):
    """A hook made of functions, each called with the trainer: `CallbackHook(after_step=fn)`."""

    def __init__(
        self,
        *,
        before_train: _Callback = None,
        after_train: _Callback = None,
        before_step: _Callback = None,
        after_backward: _Callback = None,
        after_step: _Callback = None,
    ):
        self._callbacks = {
            "before_train": before_train,
            "after_train": after_train,
            "before_step": before_step,
            "after_backward": after_backward,
            "after_step": after_step,
        }

    def _call(self, stage: str) -> None:
        fn = self._callbacks[stage]
        if fn is not None:
            fn(self.trainer)

    def before_train(self) -> None:
        self._call("before_train")

    def after_train(self) -> None:
        self._call("after_train")

    def before_step(self) -> None:
        self._call("before_step")

    def after_backward(self) -> None:
        self._call("after_backward")

    def after_step(self) -> None:
        self._call("after_step")


class IterationTimer(HookBase):
    """Records "time" (seconds of each iteration's step) and logs the training speed at the end.

    Register it first: its `before_step` then runs before the others', its `after_step` before the
    others' periodic work (writing, checkpoints, evaluation), which "time" leaves out. The first
    `warmup_iter` iterations (start-up, caches) are left out of the summary.
    """

    def __init__(self, warmup_iter: int = 3):
        self._warmup_iter = warmup_iter
        self._step_start = 0.0
        self._train_start = 0.0
        self._timed_time = 0.0
        self._timed_iters = 0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()
        self._timed_time = 0.0
        self._timed_iters = 0

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        elapsed = time.perf_counter() - self._step_start
        if self.trainer.iter - self.trainer.start_iter >= self._warmup_iter:
            self._timed_time += elapsed
            self._timed_iters += 1
        self.trainer.storage.put_scalars(time=elapsed)

    def after_train(self) -> None:
        total = time.perf_counter() - self._train_start
        if self._timed_iters > 0:
            logger.info(
                f"Overall training speed: {self._timed_iters} iterations in "
                f"{datetime.timedelta(seconds=int(self._timed_time))} ({self._timed_time / self._timed_iters:.4f} s / it)"
            )
        logger.info(f"Total training time: {datetime.timedelta(seconds=int(total))}")


class LRScheduler(HookBase):
    """Steps a learning-rate scheduler after every iteration and records "lr".

    The scheduler is a torch one, or an fvcore `ParamScheduler` (a Python config's `lr_multiplier`)
    that multiplies every group's initial rate as a function of training progress; the hook wraps
    the latter into `LRMultiplier` over the trainer's `max_iter` when training starts. Either
    argument left out is taken from the trainer (`trainer.optimizer`, `trainer.scheduler`).
    """

    def __init__(self, optimizer: Optional[torch.optim.Optimizer] = None, scheduler=None):
        """
        Args:
            optimizer: the optimiser whose rates the schedule sets.
            scheduler: a `torch.optim.lr_scheduler.LRScheduler` or an fvcore `ParamScheduler`.
        """
        if scheduler is not None and not isinstance(scheduler, (TorchLRScheduler, ParamScheduler)):
            raise TypeError(
                "LRScheduler's scheduler must be a torch LRScheduler or an fvcore ParamScheduler, "
                f"got {type(scheduler).__name__}"
            )
        self._optimizer = optimizer
        self._scheduler = scheduler
        # a state loaded before training starts, for a scheduler built only then
        self._pending_state: Optional[Dict[str, Any]] = None

    @property
    def scheduler(self):
        if self._scheduler is not None:
            return self._scheduler
        if getattr(self.trainer, "scheduler", None) is None:
            raise ValueError(
                f"hooks.LRScheduler was given no scheduler and its trainer ({self.trainer.__class__.__name__}) has none; "
                f"pass scheduler= (a torch LRScheduler or an fvcore ParamScheduler)"
            )
        return self.trainer.scheduler

    def before_train(self) -> None:
        if self._optimizer is None:
            self._optimizer = self.trainer.optimizer
        if isinstance(self.scheduler, ParamScheduler):
            # trainer.iter is the iteration to start at: a resumed run continues the schedule there
            self._scheduler = LRMultiplier(
                self._optimizer, self.scheduler, self.trainer.max_iter, last_iter=self.trainer.iter - 1
            )
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)
            self._pending_state = None
        self._group = self.get_best_param_group_id(self._optimizer)

    @staticmethod
    def get_best_param_group_id(optimizer: torch.optim.Optimizer) -> int:
        """The group whose rate stands for the model's: the one holding most parameters (not the
        biases' group)."""
        sizes = [sum(p.numel() for p in g["params"]) for g in optimizer.param_groups]
        return max(range(len(sizes)), key=sizes.__getitem__)

    def after_step(self) -> None:
        lr = self._optimizer.param_groups[self._group]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()

    def state_dict(self) -> Dict[str, Any]:
        scheduler = self._scheduler
        return scheduler.state_dict() if isinstance(scheduler, TorchLRScheduler) else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        scheduler = self._scheduler
        if not isinstance(scheduler, TorchLRScheduler) or self._optimizer is None:
            self._pending_state = state  # applied once before_train has built the scheduler
            return
        scheduler.load_state_dict(state)
        # the optimiser's rates must follow the restored schedule before the next step, not after it
        for group, lr in zip(self._optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr


class PeriodicWriter(HookBase):
    """Calls each EventWriter every `period` iterations, at the last one and after training."""

    def __init__(self, writers: List[EventWriter], period: int = 20):
        for w in writers:
            if not isinstance(w, EventWriter):
                raise TypeError(f"PeriodicWriter takes EventWriter instances, got {type(w).__name__}")
        self._writers = writers
        self._period = period

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1:
            for w in self._writers:
                w.write()

    def after_train(self) -> None:
        # once more: evaluations run in after_train put their results after the last step's write
        for w in self._writers:
            w.write()
            w.close()


class MetricsPlotter(HookBase):
    """After training, plots metrics.json (losses, lr, AP) as PNG files in `output_dir`.

    Register it after the PeriodicWriter that writes the JSON file, so the file is complete.
    """

    def __init__(self, metrics_file: str, output_dir: str):
        self._metrics_file = metrics_file
        self._output_dir = output_dir

    def after_train(self) -> None:
        if not comm.is_main_process() or not os.path.isfile(self._metrics_file):
            return
        try:
            written = plot_metrics(self._metrics_file, self._output_dir)
        except Exception as e:  # a plot must never turn a finished training into a failed one
            logger.warning(f"Could not plot {self._metrics_file}: {type(e).__name__}: {e}")
            return
        logger.info(f"Wrote plots: {', '.join(written)}")
