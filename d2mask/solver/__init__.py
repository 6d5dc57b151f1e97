"""Optimisers, learning-rate schedules and schedule rewrites (world-size scaling, epochs)."""
from .build import build_lr_scheduler, build_optimizer, get_default_optimizer_params, maybe_add_gradient_clipping
from .lr_scheduler import (
    LRMultiplier,
    LRScheduler,
    WarmupCosineLR,
    WarmupMultiStepLR,
    WarmupParamScheduler,
    warmup_factor_at_iter,
)
from .schedule import auto_scale_workers, epochs_to_iterations

__all__ = [
    "build_optimizer",
    "build_lr_scheduler",
    "get_default_optimizer_params",
    "maybe_add_gradient_clipping",
    "LRMultiplier",
    "LRScheduler",
    "WarmupMultiStepLR",
    "WarmupCosineLR",
    "WarmupParamScheduler",
    "warmup_factor_at_iter",
    "auto_scale_workers",
    "epochs_to_iterations",
]
