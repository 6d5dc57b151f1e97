"""Hooks: the pieces of training around the step (`d2mask.engine.hooks.X`, as in Detectron2)."""
from .checkpointing import BestCheckpointer, PeriodicCheckpointer, SignalCheckpointer
from .common import CallbackHook, IterationTimer, LRScheduler, MetricsPlotter, PeriodicWriter
from .early_stopping import EarlyStopping
from .evaluation import EvalHook, ValidationLoss
from ..train_loop import HookBase  # hooks.HookBase, as in Detectron2

__all__ = [
    "HookBase",
    "CallbackHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicWriter",
    "MetricsPlotter",
    "PeriodicCheckpointer",
    "BestCheckpointer",
    "SignalCheckpointer",
    "EvalHook",
    "ValidationLoss",
    "EarlyStopping",
]
