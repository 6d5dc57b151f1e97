"""Learning-rate schedules stepped once per iteration: warm-up, then step decay or cosine decay.

Each schedule is a closed-form function of the iteration, so a scheduler restored from a checkpoint
(`last_epoch` is the iteration count) continues exactly where the interrupted run was.
"""
import bisect
import math
from typing import List

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["warmup_factor_at_iter", "WarmupMultiStepLR", "WarmupCosineLR"]


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
