"""Training: the loop and its hooks, the config-driven DefaultTrainer, and multi-process launch."""
from . import hooks
from .defaults import (
    DefaultPredictor,
    DefaultTrainer,
    check_run_request,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
)
from .errors import (
    EXIT_USER_ERROR,
    USER_ERRORS,
    LaunchError,
    TrainingInterrupted,
    report_user_errors,
    user_error_message,
)
from .launch import launch
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase
from .training import (
    build_default_hooks,
    build_default_writers,
    build_step_trainer,
    check_model_fits_data,
    check_model_fits_loader,
    create_training_ddp_model,
    resume_training,
)
from .validation import validate_config

__all__ = [
    "hooks",
    "launch",
    "HookBase",
    "TrainerBase",
    "SimpleTrainer",
    "AMPTrainer",
    "DefaultPredictor",
    "DefaultTrainer",
    "create_ddp_model",
    "default_argument_parser",
    "default_writers",
    "default_setup",
    "check_run_request",
    "USER_ERRORS",
    "EXIT_USER_ERROR",
    "LaunchError",
    "TrainingInterrupted",
    "user_error_message",
    "report_user_errors",
    "validate_config",
    "check_model_fits_data",
    "check_model_fits_loader",
    "build_step_trainer",
    "build_default_hooks",
    "build_default_writers",
    "create_training_ddp_model",
    "resume_training",
]
