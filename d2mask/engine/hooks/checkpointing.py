"""Hooks that save checkpoints: periodically (keeping the newest few), of the best model, and when
the job is told to stop."""
import logging
import os
import re
import signal
import threading
from typing import Dict, Optional, Sequence

from fvcore.common.checkpoint import Checkpointer

from ...utils import comm
from ...utils.env import get_rng_state
from ..errors import TrainingInterrupted
from ..train_loop import HookBase
from .evaluation import fresh_metric, is_better, period_ends

__all__ = ["PeriodicCheckpointer", "BestCheckpointer", "SignalCheckpointer"]

logger = logging.getLogger(__name__)


class PeriodicCheckpointer(HookBase):
    """Saves `<prefix>_<iteration:07d>.pth` every `period` iterations and `<prefix>_final.pth` when
    training ends (at `max_iter`, or earlier when a hook stopped it).

    Each checkpoint also holds every process's random-generator states ("rng_states"), so that a
    resumed run draws the same random numbers as an uninterrupted one. Register it on every process
    (gathering the states is collective); only the checkpointer's main process writes.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        period: int,
        max_iter: Optional[int] = None,
        max_to_keep: Optional[int] = None,
        file_prefix: str = "model",
    ):
        """
        Args:
            checkpointer: saves the model and its checkpointables (optimizer, trainer state, ...).
            period: save every this many iterations (> 0).
            max_iter: the last iteration + 1 (default: the trainer's).
            max_to_keep: keep only the newest this many periodic checkpoints (None or 0: all).
            file_prefix: file name prefix.
        """
        if period <= 0:
            raise ValueError(f"PeriodicCheckpointer needs a period > 0 (SOLVER.CHECKPOINT_PERIOD), got {period}")
        self.checkpointer = checkpointer
        self.period = period
        self.max_iter = max_iter
        self.max_to_keep = max_to_keep or None
        self.file_prefix = file_prefix
        self._final_saved = False

    def before_train(self) -> None:
        if self.max_iter is None:
            self.max_iter = self.trainer.max_iter
        self._final_saved = False

    def save(self, name: str, iteration: int) -> None:
        """Saves a checkpoint named `name` now, with the trainer at `iteration` (collective)."""
        rng_states = comm.all_gather(get_rng_state())
        self.checkpointer.save(name, iteration=iteration, rng_states=rng_states)

    def after_step(self) -> None:
        iteration = self.trainer.iter
        if (iteration + 1) % self.period == 0 and iteration < self.max_iter - 1:
            self.save(f"{self.file_prefix}_{iteration:07d}", iteration)
            self._remove_old(iteration)
        if iteration >= self.max_iter - 1:
            self.save(f"{self.file_prefix}_final", iteration)
            self._final_saved = True

    def after_train(self) -> None:
        if self.trainer.stopped_early and not self._final_saved:
            self.save(f"{self.file_prefix}_final", self.trainer.iter - 1)

    def _remove_old(self, iteration: int) -> None:
        save_dir = self.checkpointer.save_dir
        if self.max_to_keep is None or not save_dir or not comm.is_main_process():
            return
        # Files on disk, not only this run's, so that a resumed run also prunes the earlier run's;
        # but none of a later iteration: those are another run's (a run started afresh in an old
        # OUTPUT_DIR), and counting them would delete the checkpoint just saved.
        pattern = re.compile(re.escape(self.file_prefix) + r"_(\d{7})\.pth")
        periodic = sorted(
            f for f in os.listdir(save_dir) if (m := pattern.fullmatch(f)) and int(m.group(1)) <= iteration
        )
        for name in periodic[: -self.max_to_keep]:
            os.remove(os.path.join(save_dir, name))
            logger.info(f"Removed old checkpoint {name} (keeping the newest {self.max_to_keep})")


class BestCheckpointer(HookBase):
    """Saves `<file_prefix>.pth` whenever an evaluation gives a better `val_metric` than before.

    Register it after the EvalHook whose results it reads (e.g. "bbox/AP" or "segm/AP").
    """

    def __init__(
        self,
        eval_period: int,
        checkpointer: Checkpointer,
        val_metric: str,
        mode: str = "max",
        file_prefix: str = "model_best",
    ):
        """
        Args:
            eval_period: the EvalHook's period.
            checkpointer: saves the model.
            val_metric: name of the metric in the event storage.
            mode: "max" (larger is better) or "min".
            file_prefix: file name of the best checkpoint, without ".pth".
        """
        is_better(0.0, None, mode)  # validates mode
        self._period = eval_period
        self._checkpointer = checkpointer
        self._val_metric = val_metric
        self._mode = mode
        self._file_prefix = file_prefix
        self.best_metric: Optional[float] = None
        self.best_iter: Optional[int] = None
        self._warned = False

    def _check(self) -> None:
        iteration = self.trainer.iter
        value = fresh_metric(self.trainer.storage, self._val_metric, iteration)
        if value is None:
            if comm.is_main_process() and not self._warned:
                known = sorted(k for k in self.trainer.storage.latest() if "/" in k)
                logger.warning(f"BestCheckpointer: no metric '{self._val_metric}' after evaluation; metrics: {known}")
                self._warned = True
            return
        if is_better(value, self.best_metric, self._mode):
            previous = self.best_metric
            self.best_metric, self.best_iter = value, iteration
            logger.info(
                f"{self._val_metric} = {value:.4f} at iteration {iteration} is the best so far "
                f"(previous: {previous}); saving {self._file_prefix}.pth"
            )
            self._checkpointer.save(self._file_prefix, iteration=iteration)

    def after_step(self) -> None:
        if period_ends(self.trainer, self._period):
            self._check()

    def after_train(self) -> None:
        if self.trainer.iter >= self.trainer.max_iter:
            self._check()

    def state_dict(self):
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state) -> None:
        self.best_metric = state["best_metric"]
        self.best_iter = state["best_iter"]


class SignalCheckpointer(HookBase):
    """Ends training cleanly when the process receives one of `signals`: what SLURM and Kubernetes
    send before preempting a job (SIGTERM), Ctrl-C (SIGINT), or a cluster's requeue signal (e.g.
    SIGUSR1, sent by `sbatch --signal`).

    The current iteration is finished (with its hooks: an evaluation that is running completes),
    then a checkpoint of it is saved atomically, one line logged, and `TrainingInterrupted` raised:
    the process exits with status 128 + the signal's number and `--resume` continues exactly where
    it stopped. A save in progress when the signal arrives completes, so no temporary file is left.
    A second SIGINT abandons the iteration at once (KeyboardInterrupt), without a checkpoint.

    Register it last (after the writers), on every process: the processes agree on stopping at the
    same iteration. The handlers are installed for the steps of training only (from `before_train`
    to the last iteration). The loaders of `d2mask.data` start their workers ignoring these signals,
    so that a signal sent to every process of the job does not kill them mid-step.
    """

    def __init__(self, periodic_checkpointer: PeriodicCheckpointer, signals: Sequence[str] = ("SIGTERM", "SIGINT")):
        """
        Args:
            periodic_checkpointer: saves the checkpoint (with every process's random states), under
                the name of a periodic one, `<prefix>_<iteration:07d>`.
            signals: signal names, e.g. ("SIGTERM", "SIGINT", "SIGUSR1").
        """
        unknown = [s for s in signals if s not in signal.Signals.__members__ or s in ("SIGKILL", "SIGSTOP")]
        if unknown:
            raise ValueError(f"SignalCheckpointer: {unknown} cannot be handled; signals are names such as 'SIGUSR1'")
        self._checkpointer = periodic_checkpointer
        self._signals = [signal.Signals[s] for s in signals]
        self._previous: Dict[signal.Signals, object] = {}
        self._received: Optional[int] = None

    def _handle(self, signum: int, frame) -> None:
        if self._received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        # SIGTERM may arrive twice (a cluster signals every process, and the launcher forwards it)
        self._received = signum

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def before_train(self) -> None:
        self._received = None
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Training runs outside the main thread, where signals cannot be handled: a SIGTERM "
                           "ends it without a checkpoint")
            return
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def after_step(self) -> None:
        iteration = self.trainer.iter
        received = self._received
        if comm.get_world_size() > 1:  # every process stops at the same iteration
            received = max((r for r in comm.all_gather(received) if r is not None), default=None)
        if iteration >= self.trainer.max_iter - 1:
            self._restore()  # the run is complete: nothing left to save for
            return
        if received is None:
            return
        name = f"{self._checkpointer.file_prefix}_{iteration:07d}"
        self._checkpointer.save(name, iteration)
        comm.synchronize()  # no process exits while the main one is still writing
        save_dir = self._checkpointer.checkpointer.save_dir
        logger.warning(
            f"Stopped by {signal.Signals(received).name} after iteration {iteration}: saved "
            f"{os.path.join(save_dir, name + '.pth')}; continue with --resume"
        )
        raise TrainingInterrupted(received)

    def after_train(self) -> None:
        self._restore()
