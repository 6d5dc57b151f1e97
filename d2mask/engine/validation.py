"""Start-up validation of a YAML config: every value checked before anything is built.

A wrong value found here costs one line before the first iteration; found by the code that uses it,
it costs a traceback, sometimes hours into a run, or nothing at all (a silently wrong run). The
check collects every violation, so that one run of the command reports all of them.

    validate_config(cfg)   # ConfigError: 2 invalid config values: SOLVER.BASE_LR = -0.1 (...); ...

The model's values are checked where they are used, by the constructors of the modules they reach
(`@configurable` makes their refusal a one-line ConfigError naming the key): validate_config builds
the model on the meta device, which runs every one of those checks in a few hundredths of a second,
also those of a project's modules. What stays here, in `_RULES` and `_cross_key_problems`, is what no
constructor sees: the data, solver, checkpoint and evaluation keys, values that must agree across
parts (the model's channels and the data's INPUT.FORMAT), and the device. The names of the optimizer
and the schedule (SOLVER.OPTIMIZER, SOLVER.LR_SCHEDULER_NAME) are not checked here either: their
builders check them, which a project's Trainer may override to read names of its own (Detectron2's
DeepLab adds "WarmupPolyLR"); DefaultTrainer builds both before it loads any data, and
tools/train_net.py checks them with `d2mask.solver.check_solver_names` before it writes anything.
"""
import math
import signal
from typing import Any, Callable, List, Sequence, Tuple

import torch
from omegaconf import ListConfig, OmegaConf

from ..config import CfgNode, ConfigError
from ..modeling import META_ARCH_REGISTRY
from ..modeling.test_time_augmentation import GeneralizedRCNNWithTTA

__all__ = ["validate_config", "validate_lazy_config", "check_device"]

# Channels of the images the model receives, per INPUT.FORMAT (d2mask.data.SUPPORTED_IMAGE_FORMATS).
_CHANNELS = {"BGR": 3, "RGB": 3, "L": 1}
# Signals a process can handle (not SIGKILL, SIGSTOP), for SOLVER.CHECKPOINT_SIGNALS.
_SIGNALS = tuple(s for s in signal.Signals.__members__ if s not in ("SIGKILL", "SIGSTOP"))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive(v: Any) -> bool:
    return _number(v) and v > 0


def non_negative(v: Any) -> bool:
    return _number(v) and v >= 0


def positive_int(v: Any) -> bool:
    return _int(v) and v > 0


def non_negative_int(v: Any) -> bool:
    return _int(v) and v >= 0


def fraction(v: Any) -> bool:
    return _number(v) and 0 <= v <= 1


def one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: v in choices


def each(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple)) and all(check(x) for x in v)


def increasing(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(_number(x) for x in v) and all(a < b for a, b in zip(v, v[1:]))


# (key, check, what is allowed); checked in this order, each independently of the others. The model's
# keys are not here: the constructors they reach check them (see _model_problems). Left here are the
# keys no constructor sees: those of the data, solver, checkpoints and evaluation, and the counts of
# layers that from_config expands into lists (a negative count gives an empty list, which the
# constructor cannot tell from a count of 0).
_RULES: Sequence[Tuple[str, Callable[[Any], bool], str]] = [
    ("MODEL.ROI_BOX_HEAD.NUM_FC", non_negative_int, "an int >= 0"),
    ("MODEL.ROI_BOX_HEAD.NUM_CONV", non_negative_int, "an int >= 0"),
    ("MODEL.ROI_MASK_HEAD.NUM_CONV", non_negative_int, "an int >= 0"),
    ("INPUT.FORMAT", one_of(*_CHANNELS), f"one of {list(_CHANNELS)}"),
    ("TEST.EXPECTED_RESULTS", each(lambda e: isinstance(e, (list, tuple)) and len(e) == 4 and isinstance(e[0], str)
                                   and isinstance(e[1], str) and _number(e[2]) and non_negative(e[3])),
     "[[task, metric, expected, tolerance >= 0], ...]"),
    ("INPUT.MASK_FORMAT", one_of("polygon", "bitmask"), "'polygon' or 'bitmask'"),
    ("INPUT.MIN_SIZE_TRAIN", lambda v: len(v) > 0 and each(positive_int)(v), "one or more sizes > 0"),
    ("INPUT.MIN_SIZE_TRAIN_SAMPLING", one_of("choice", "range"), "'choice' or 'range'"),
    ("INPUT.MAX_SIZE_TRAIN", positive_int, "an int > 0"),
    ("INPUT.MIN_SIZE_TEST", non_negative_int, "an int >= 0"),
    ("INPUT.MAX_SIZE_TEST", positive_int, "an int > 0"),
    ("INPUT.MAX_IMAGE_PIXELS", positive_int, "an int > 0"),
    ("INPUT.RANDOM_FLIP", one_of("horizontal", "vertical", "none"), "'horizontal', 'vertical' or 'none'"),
    ("INPUT.CROP.TYPE", one_of("relative", "relative_range", "absolute", "absolute_range"),
     "'relative', 'relative_range', 'absolute' or 'absolute_range'"),
    ("INPUT.CROP.SIZE", lambda v: len(v) == 2 and each(positive)(v), "two sizes (h, w) > 0"),
    ("DATALOADER.NUM_WORKERS", non_negative_int, "an int >= 0"),
    ("DATALOADER.SAMPLER_TRAIN", one_of("TrainingSampler", "RepeatFactorTrainingSampler"),
     "'TrainingSampler' or 'RepeatFactorTrainingSampler'"),
    ("DATALOADER.REPEAT_THRESHOLD", non_negative, "a number >= 0"),
    ("SOLVER.MAX_ITER", non_negative_int, "an int >= 0"),
    ("SOLVER.BASE_LR", non_negative, "a number >= 0"),
    ("SOLVER.BASE_LR_END", non_negative, "a number >= 0"),
    ("SOLVER.MOMENTUM", lambda v: _number(v) and 0 <= v < 1, "in [0, 1)"),
    ("SOLVER.WEIGHT_DECAY", non_negative, "a number >= 0"),
    ("SOLVER.WEIGHT_DECAY_NORM", non_negative, "a number >= 0"),
    ("SOLVER.WEIGHT_DECAY_BIAS", lambda v: v is None or non_negative(v), "None or a number >= 0"),
    ("SOLVER.BIAS_LR_FACTOR", non_negative, "a number >= 0"),
    ("SOLVER.GAMMA", positive, "a number > 0"),
    ("SOLVER.STEPS", lambda v: increasing(v) and each(positive_int)(v), "increasing iterations > 0"),
    ("SOLVER.WARMUP_FACTOR", fraction, "in [0, 1]"),
    ("SOLVER.WARMUP_ITERS", non_negative_int, "an int >= 0"),
    ("SOLVER.WARMUP_METHOD", one_of("linear", "constant"), "'linear' or 'constant'"),
    ("SOLVER.CHECKPOINT_PERIOD", positive_int, "an int > 0"),
    ("SOLVER.CHECKPOINTS_TO_KEEP", non_negative_int, "an int >= 0"),
    ("SOLVER.CHECKPOINT_SIGNALS", each(one_of(*_SIGNALS)), "signal names such as 'SIGTERM' or 'SIGUSR1'"),
    ("SOLVER.MAX_EPOCHS", non_negative, "a number >= 0"),
    ("SOLVER.STEPS_EPOCHS", lambda v: increasing(v) and each(positive)(v), "increasing epochs > 0"),
    ("SOLVER.CHECKPOINT_PERIOD_EPOCHS", non_negative, "a number >= 0"),
    ("SOLVER.MAX_NONFINITE_SKIPS", non_negative_int, "an int >= 0"),
    ("SOLVER.IMS_PER_BATCH", positive_int, "an int > 0"),
    ("SOLVER.REFERENCE_WORLD_SIZE", non_negative_int, "an int >= 0"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", one_of("value", "norm"), "'value' or 'norm'"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", positive, "a number > 0"),
    ("SOLVER.CLIP_GRADIENTS.NORM_TYPE", lambda v: positive(v) or v == float("inf"), "a number > 0 or inf"),
    ("SOLVER.AMP.PRECISION", one_of("float16", "bfloat16"), "'float16' or 'bfloat16'"),
    ("TEST.EVAL_PERIOD", non_negative_int, "an int >= 0"),
    ("TEST.DETECTIONS_PER_IMAGE", positive_int, "an int > 0"),
    ("TEST.EVAL_PERIOD_EPOCHS", non_negative, "a number >= 0"),
    ("TEST.VAL_LOSS_PERIOD", non_negative_int, "an int >= 0"),
    ("TEST.VAL_LOSS_PERIOD_EPOCHS", non_negative, "a number >= 0"),
    ("TEST.BEST_METRIC_MODE", one_of("max", "min"), "'max' or 'min'"),
    ("TEST.EARLY_STOP_PATIENCE", non_negative_int, "an int >= 0"),
    ("VIS_PERIOD", non_negative_int, "an int >= 0"),
]


def _get(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _passes(check: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(check(value))
    except (TypeError, ValueError):  # a value of a type the check does not expect
        return False


def check_device(device: Any, key: str = "MODEL.DEVICE") -> List[str]:
    """Problems (none or one) with running on `device` on this machine: an unknown device name, or
    one this machine does not have."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return [f"{key} = {device!r} (a device such as 'cpu', 'cuda' or 'cuda:1')"]
    if parsed.type == "cpu":
        return []
    backend = getattr(torch, parsed.type, None) if parsed.type != "mps" else getattr(torch.backends, "mps", None)
    available = getattr(backend, "is_available", lambda: False)()
    if not available:
        return [f"{key} = {device!r} (this machine has no {parsed.type.upper()} device; use 'cpu')"]
    count = getattr(backend, "device_count", lambda: 1)()
    if parsed.index is not None and parsed.index >= count:
        return [f"{key} = {device!r} (this machine has {count} {parsed.type} devices, indices 0 to {count - 1})"]
    return []


def _cross_key_problems(cfg: CfgNode) -> List[str]:
    """Problems of values that must agree with each other."""
    problems = []
    channels = _CHANNELS.get(cfg.INPUT.FORMAT)
    # The data gives the model images of INPUT.FORMAT; the model normalises as many channels as it has means.
    for key in ("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD"):
        value = _get(cfg, key)
        if channels is not None and (not isinstance(value, (list, tuple)) or len(value) != channels):
            problems.append(
                f"{key} = {value!r} (one value per channel: {channels} for INPUT.FORMAT {cfg.INPUT.FORMAT})"
            )
    if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range" and _passes(lambda v: len(v) != 2, cfg.INPUT.MIN_SIZE_TRAIN):
        problems.append(
            f"INPUT.MIN_SIZE_TRAIN = {cfg.INPUT.MIN_SIZE_TRAIN!r} (two sizes [min, max] with "
            f"INPUT.MIN_SIZE_TRAIN_SAMPLING 'range')"
        )
    if cfg.SOLVER.MAX_EPOCHS == 0 and cfg.SOLVER.MAX_ITER == 0:
        problems.append("SOLVER.MAX_ITER = 0 (iterations > 0, or a schedule in epochs with SOLVER.MAX_EPOCHS > 0)")
    return problems


# The settings of a Python config that the run reads (configs/common/train.py), as _RULES.
_LAZY_RULES: Sequence[Tuple[str, Callable[[Any], bool], str]] = [
    ("train.output_dir", lambda v: isinstance(v, str), "a directory path"),
    ("train.max_iter", non_negative_int, "an int >= 0"),
    ("train.eval_period", non_negative_int, "an int >= 0"),
    ("train.log_period", positive_int, "an int > 0"),
    ("train.checkpointer.period", positive_int, "an int > 0"),
    ("train.checkpointer.max_to_keep", non_negative_int, "an int >= 0"),
    ("train.checkpoint_signals", each(one_of(*_SIGNALS)), "signal names such as 'SIGTERM' or 'SIGUSR1'"),
    ("train.amp.precision", one_of("float16", "bfloat16"), "'float16' or 'bfloat16'"),
    ("train.max_nonfinite_skips", non_negative_int, "an int >= 0"),
    ("train.seed", _int, "an int"),
    ("dataloader.train.total_batch_size", positive_int, "an int > 0"),
]
_MISSING = object()


def _lookup(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return _MISSING
        node = node[part]
    return OmegaConf.to_container(node) if isinstance(node, ListConfig) else node


def validate_lazy_config(cfg: Any) -> None:
    """`validate_config` for a Python config: the `train` settings and the batch size the run reads,
    and `train.device`. The objects a Python config describes check their own arguments when
    `instantiate` builds them.

    Raises:
        ConfigError: one line listing every missing or invalid value.
    """
    problems = []
    for key, check, allowed in _LAZY_RULES:
        value = _lookup(cfg, key)
        if value is _MISSING:
            where = "; see configs/common/train.py" if key.startswith("train.") else ""
            problems.append(f"{key} is missing ({allowed}{where})")
        elif not _passes(check, value):
            problems.append(f"{key} = {value!r} ({allowed})")
    device = _lookup(cfg, "train.device")
    problems += [f"train.device is missing (a device such as 'cpu' or 'cuda')"] if device is _MISSING else \
        check_device(device, key="train.device")
    if problems:
        noun = "value" if len(problems) == 1 else f"{len(problems)} values"
        raise ConfigError(f"Invalid config {noun}: " + "; ".join(problems))


def _model_problems(cfg: CfgNode) -> List[str]:
    """The problem (none or one) that the constructors of the model find in their arguments, from
    building the model on the meta device: no memory, no weights, and a few hundredths of a second.
    `build_model` would also move the model to MODEL.DEVICE, which the meta device cannot. With
    TEST.AUG.ENABLED, also the test-time augmentation's, which runs after training."""
    try:
        with torch.device("meta"):
            model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
            if cfg.TEST.AUG.ENABLED:
                GeneralizedRCNNWithTTA(cfg, model)
    except ConfigError as e:
        return [str(e)]
    return []


# The config validate_config passed last in this process, as its repr (which, unlike ==, tells 1 from
# 1.0 and True). One run's config is validated by up to three callers, each of which may be used
# alone: tools/train_net.py before launching (one error line rather than one per process),
# default_setup (before anything is written) and DefaultTrainer (for scripts without default_setup).
# In one process they pass equal configs, whose model need not be built on the meta device again.
_last_passed = ""


def validate_config(cfg: CfgNode) -> None:
    """Checks every value of `cfg` that d2mask reads, and the device it asks for: the values that no
    constructor sees by `_RULES`, the model's by building it on the meta device. A config equal to
    the last one that passed in this process has passed already and is not checked again.

    Raises:
        ConfigError: one line listing every invalid value as `KEY = value (what is allowed)`, and the
            first that a constructor of the model refuses.
    """
    global _last_passed
    text = repr(cfg)
    if text == _last_passed:
        return
    problems = [
        f"{key} = {_get(cfg, key)!r} ({allowed})" for key, check, allowed in _RULES if not _passes(check, _get(cfg, key))
    ]
    problems += _cross_key_problems(cfg)
    problems += check_device(cfg.MODEL.DEVICE)
    problems += _model_problems(cfg)
    if problems:
        noun = "value" if len(problems) == 1 else f"{len(problems)} values"
        raise ConfigError(f"Invalid config {noun}: " + "; ".join(problems))
    _last_passed = text
