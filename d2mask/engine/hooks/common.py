"""Hooks every training run has: callbacks, timing, the learning-rate schedule, metric writers, plots."""
import datetime
import logging
import os
import time
from typing import Callable, List, Optional

import torch

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
    """Steps a learning-rate scheduler after every iteration and records "lr"."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler):
        self._optimizer = optimizer
        self.scheduler = scheduler
        # the group holding most parameters (not the biases' group) stands for the model's lr
        sizes = [sum(p.numel() for p in g["params"]) for g in optimizer.param_groups]
        self._group = max(range(len(sizes)), key=sizes.__getitem__)

    def after_step(self) -> None:
        lr = self._optimizer.param_groups[self._group]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()

    def state_dict(self):
        return self.scheduler.state_dict()

    def load_state_dict(self, state) -> None:
        self.scheduler.load_state_dict(state)
        # the optimiser's rates must follow the restored schedule before the next step, not after it
        for group, lr in zip(self._optimizer.param_groups, self.scheduler.get_last_lr()):
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
