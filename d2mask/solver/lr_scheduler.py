"""Learning-rate schedules stepped once per iteration: warm-up, then step decay or cosine decay;
and Detectron2's `LRMultiplier` / `WarmupParamScheduler` on fvcore's parameter schedulers.

Each schedule is a closed-form function of the iteration, so a scheduler restored from a checkpoint
(`last_epoch` is the iteration count) continues exactly where the interrupted run was.
"""
import bisect
import math
from typing import Any, Dict, List

from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "LRMultiplier",
    "LRScheduler",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "WarmupParamScheduler",
    "warmup_factor_at_iter",
]


def warmup_factor_at_iter(method: str, iteration: int, warmup_iters: int, warmup_factor: float) -> float:
    """The multiplier of the learning rate at `iteration` during warm-up (1.0 after it).

    Args:
        method: "linear" rises from `warmup_factor` to 1 over `warmup_iters`; "constant" holds
            `warmup_factor` until `warmup_iters`.
        iteration: the iteration, from 0.
        warmup_iters: length of the warm-up.
        warmup_factor: the multiplier at iteration 0.
    """
    if iteration >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = iteration / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ValueError(f"Unknown warm-up method '{method}'; expected 'linear' or 'constant' (SOLVER.WARMUP_METHOD)")


# Detectron2's private name, which projects' own schedulers (DeepLab's WarmupPolyLR) import.
_get_warmup_factor_at_iter = warmup_factor_at_iter


class WarmupParamScheduler(CompositeParamScheduler):
    """An fvcore parameter schedule (a function of training progress in [0, 1)) preceded by a warm-up,
    as Detectron2's Python configs write their learning-rate multipliers."""

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str = "linear",
        rescale_interval: bool = False,
    ):
        """
        Args:
            scheduler: the schedule after warm-up.
            warmup_factor: the value at progress 0, as a factor of `scheduler(0)`.
            warmup_length: the share of training spent warming up, in [0, 1].
            warmup_method: "linear" rises to where `scheduler` is when warm-up ends; "constant" holds
                the starting value.
            rescale_interval: run the whole of `scheduler` after the warm-up (its progress rescaled to
                the remaining training) instead of its part from `warmup_length` on.
        """
        start = warmup_factor * scheduler(0.0)
        end = scheduler(0.0) if rescale_interval else scheduler(warmup_length)
        if warmup_method == "linear":
            warmup = LinearParamScheduler(start, end)
        elif warmup_method == "constant":
            warmup = ConstantParamScheduler(start)
        else:
            raise ValueError(f"WarmupParamScheduler warmup_method must be 'linear' or 'constant', got {warmup_method!r}")
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "rescaled" if rescale_interval else "fixed"],
            lengths=[warmup_length, 1 - warmup_length],
        )


class LRMultiplier(LRScheduler):
    """Every parameter group's learning rate is its initial one times `multiplier(iteration / max_iter)`,
    an fvcore `ParamScheduler` (Detectron2's scheduler for Python configs' `lr_multiplier`)."""

    def __init__(self, optimizer: Optimizer, multiplier: ParamScheduler, max_iter: int, last_iter: int = -1):
        """
        Args:
            optimizer: the optimiser whose groups' rates are scaled.
            multiplier: the factor as a function of training progress in [0, 1).
            max_iter: the iterations of the whole training.
            last_iter: torch's `last_epoch`, the iteration to resume after.
        """
        if not isinstance(multiplier, ParamScheduler):
            raise ValueError(f"LRMultiplier multiplier must be an fvcore ParamScheduler, got {type(multiplier).__name__}")
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> Dict[str, Any]:
        # fvcore's schedulers hold no state; the multiplier comes from the config again on resume.
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch, "_last_lr": self._last_lr}

    def get_lr(self) -> List[float]:
        factor = self._multiplier(self.last_epoch / self._max_iter)
        return [base_lr * factor for base_lr in self.base_lrs]


class _WarmupLR(LRScheduler):
    """Base of the schedules: lr = base_lr * warm-up factor * `_decay(iteration)`."""

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        warmup_factor: float,
        warmup_iters: int,
        warmup_method: str,
        last_epoch: int = -1,
    ):
        warmup_factor_at_iter(warmup_method, 0, 1, warmup_factor)  # validates the method now, not at step 1
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def _decay(self, iteration: int, base_lr: float) -> float:
        raise NotImplementedError

    def get_lr(self) -> List[float]:
        warmup = warmup_factor_at_iter(self.warmup_method, self.last_epoch, self.warmup_iters, self.warmup_factor)
        return [warmup * self._decay(self.last_epoch, base_lr) for base_lr in self.base_lrs]

    _get_closed_form_lr = get_lr


class WarmupMultiStepLR(_WarmupLR):
    """Warm-up, then the rate times `gamma` at each milestone: base_lr * gamma ** (milestones passed)."""

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: List[int],
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ):
        if list(milestones) != sorted(milestones):
            raise ValueError(f"Milestones (SOLVER.STEPS) must be increasing, got {list(milestones)}")
        self.milestones = list(milestones)
        self.gamma = gamma
        super().__init__(
            optimizer,
            warmup_factor=warmup_factor,
            warmup_iters=warmup_iters,
            warmup_method=warmup_method,
            last_epoch=last_epoch,
        )

    def _decay(self, iteration: int, base_lr: float) -> float:
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, iteration)


class WarmupCosineLR(_WarmupLR):
    """Warm-up, then a half cosine from base_lr at iteration 0 down to base_lr * `end_factor` at
    `max_iters` (a factor, so that param groups with their own base rates keep their ratios)."""

    def __init__(
        self,
        optimizer: Optimizer,
        max_iters: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        end_factor: float = 0.0,
        last_epoch: int = -1,
    ):
        self.max_iters = max_iters
        self.end_factor = end_factor
        super().__init__(
            optimizer,
            warmup_factor=warmup_factor,
            warmup_iters=warmup_iters,
            warmup_method=warmup_method,
            last_epoch=last_epoch,
        )

    def _decay(self, iteration: int, base_lr: float) -> float:
        progress = min(iteration, self.max_iters) / self.max_iters
        end_lr = base_lr * self.end_factor
        return end_lr + 0.5 * (base_lr - end_lr) * (1.0 + math.cos(math.pi * progress))
