"""Training: the loop and its hooks, the config-driven DefaultTrainer, and multi-process launch."""
from . import hooks
from .defaults import DefaultTrainer, create_ddp_model, default_argument_parser, default_setup
from .launch import launch
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "hooks",
    "launch",
    "HookBase",
    "TrainerBase",
    "SimpleTrainer",
    "AMPTrainer",
    "DefaultTrainer",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
]
