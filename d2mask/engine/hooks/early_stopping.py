"""Early stopping: end training when evaluations stop improving a metric."""
import logging
from typing import Optional

from ...utils import comm
from ..train_loop import HookBase
from .evaluation import fresh_metric, is_better, period_ends

__all__ = ["EarlyStopping"]

logger = logging.getLogger(__name__)


class EarlyStopping(HookBase):
    """Stops training after `patience` evaluations in a row without a better `val_metric`.

    Register it after the EvalHook (and BestCheckpointer) it follows, with the same period. The main
    process, which holds the evaluation results, decides; every process then stops at the same
    iteration. The final checkpoint is still written (PeriodicCheckpointer.after_train).
    """

    def __init__(self, eval_period: int, val_metric: str, patience: int, mode: str = "max"):
        """
        Args:
            eval_period: the EvalHook's period (> 0).
            val_metric: name of the metric in the event storage, e.g. "segm/AP".
            patience: evaluations without improvement tolerated (> 0).
            mode: "max" (larger is better) or "min".
        """
        if eval_period <= 0 or patience <= 0:
            raise ValueError(
                f"EarlyStopping needs an evaluation period and a patience > 0, got {eval_period} and {patience}"
            )
        is_better(0.0, None, mode)  # validates mode
        self._period = eval_period
        self._val_metric = val_metric
        self._patience = patience
        self._mode = mode
        self.best_metric: Optional[float] = None
        self.num_bad_evals = 0

    def after_step(self) -> None:
        if not period_ends(self.trainer, self._period):
            return
        value = fresh_metric(self.trainer.storage, self._val_metric, self.trainer.iter)
        if value is not None:
            if is_better(value, self.best_metric, self._mode):
                self.best_metric, self.num_bad_evals = value, 0
            else:
                self.num_bad_evals += 1
        elif comm.is_main_process():
            logger.warning(f"EarlyStopping: no metric '{self._val_metric}' from this evaluation")
        # the main process's view, on every process
        self.best_metric, self.num_bad_evals = comm.all_gather((self.best_metric, self.num_bad_evals))[0]
        if self.num_bad_evals >= self._patience:
            self.trainer.stop_training(
                f"{self._val_metric} did not improve for {self.num_bad_evals} evaluations (best: {self.best_metric})"
            )

    def state_dict(self):
        return {"best_metric": self.best_metric, "num_bad_evals": self.num_bad_evals}

    def load_state_dict(self, state) -> None:
        self.best_metric = state["best_metric"]
        self.num_bad_evals = state["num_bad_evals"]
