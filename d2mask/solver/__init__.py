"""Optimisers, learning-rate schedules and schedule rewrites (world-size scaling, epochs)."""
from .build import (
    add_gradient_clipping,
    build_lr_scheduler,
    build_optimizer,
    check_solver_names,
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
)
from .lr_scheduler import (
    LRMultiplier,
    LRScheduler,
    WarmupCosineLR,
    WarmupMultiStepLR,
    WarmupParamScheduler,
    warmup_factor_at_iter,
)
from .schedule import Schedule, auto_scale_workers, epochs_to_iterations, scale_schedule, schedule_from_epochs

__all__ = [
    "build_optimizer",
    "build_lr_scheduler",
    "check_solver_names",
    "get_default_optimizer_params",
    "maybe_add_gradient_clipping",
    "LRMultiplier",
    "LRScheduler",
    "add_gradient_clipping",
    "WarmupMultiStepLR",
    "WarmupCosineLR",
    "WarmupParamScheduler",
    "warmup_factor_at_iter",
    "auto_scale_workers",
    "epochs_to_iterations",
    "Schedule",
    "scale_schedule",
    "schedule_from_epochs",
]
