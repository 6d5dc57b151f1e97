"""Checks of a run's OUTPUT_DIR at start-up, before anything is written into it.

A new run into a directory holding another run's checkpoints would overwrite its `model_final.pth`
and append to its `metrics.json`; a `--resume` with a changed model would load weights that no
longer fit; an `--eval-only` without weights would evaluate a random model. Each is refused here
with one line saying what to do instead.
"""
import datetime
import logging
import os
import re
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from ..config import ConfigError

__all__ = [
    "check_output_dir",
    "check_eval_weights",
    "check_resumed_config",
    "config_changes",
    "last_checkpoint",
]

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"model_(\d{7}|final)\.pth")
# Where `--start-over` moves the files of the previous run, inside OUTPUT_DIR.
PREVIOUS_RUN_PREFIX = "previous_run_"


def last_checkpoint(output_dir: str) -> Optional[str]:
    """The file name `output_dir/last_checkpoint` names, else the newest `model_*.pth`, else None."""
    if not os.path.isdir(output_dir):
        return None
    try:
        with open(os.path.join(output_dir, "last_checkpoint"), "r", encoding="utf-8") as f:
            name = f.read().strip()
        if name:
            return name
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    names = sorted(n for n in os.listdir(output_dir) if _CHECKPOINT.fullmatch(n))
    # "final" sorts after the digits: the finished run's file is the newest
    return names[-1] if names else None


def _iteration_of(output_dir: str, name: str) -> Optional[int]:
    match = _CHECKPOINT.fullmatch(name)
    if match and match.group(1) != "final":
        return int(match.group(1))
    try:  # memory-mapped: only the small "iteration" entry is read from disk
        checkpoint = torch.load(os.path.join(output_dir, name), map_location="cpu", weights_only=True, mmap=True)
        return int(checkpoint["iteration"])
    except Exception:  # an unreadable file is reported when it is loaded; here it only lacks a number
        return None


def _check_writable(output_dir: str, key: str) -> None:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConfigError(f"{key} {output_dir} is a file, not a directory; choose another {key}")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{key} {output_dir} cannot be created: {e.strerror}") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} {output_dir} is not writable by this user; choose another {key}")


def check_output_dir(
    output_dir: str, *, resume: bool, start_over: bool = False, key: str = "OUTPUT_DIR"
) -> Optional[str]:
    """Makes sure a training run may write into `output_dir`, creating it if needed.

    Without `resume`, a directory holding checkpoints is another run's: refused, unless
    `start_over`, which moves that run's files into `output_dir/previous_run_<date-time>/` and
    says so.

    Args:
        key: how the directory is named in messages (OUTPUT_DIR, train.output_dir).

    Returns:
        Where `start_over` moved the earlier run's files (the caller logs it, once its log is set
        up), or None.

    Raises:
        ConfigError: `output_dir` is a file, cannot be created or written, or holds another run.
    """
    if not output_dir:
        return None
    _check_writable(output_dir, key)
    name = None if resume else last_checkpoint(output_dir)
    if name is None:
        return None
    if not start_over:
        iteration = _iteration_of(output_dir, name)
        at = f", iteration {iteration}" if iteration is not None else ""
        raise ConfigError(
            f"{key} {output_dir} holds the checkpoints of an earlier run (last: {name}{at}); continue that "
            f"run with --resume, start over with --start-over (moves its files into a subdirectory), or "
            f"choose another {key}"
        )
    moved_to = os.path.join(output_dir, PREVIOUS_RUN_PREFIX + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(moved_to)
    for entry in os.listdir(output_dir):
        if not entry.startswith(PREVIOUS_RUN_PREFIX):
            shutil.move(os.path.join(output_dir, entry), os.path.join(moved_to, entry))
    return moved_to


def check_eval_weights(weights: str, output_dir: str, *, resume: bool, key: str = "MODEL.WEIGHTS") -> None:
    """Refuses an evaluation without weights: it would evaluate a randomly initialised model.

    Raises:
        ConfigError: `weights` is empty and there is no checkpoint to resume from in `output_dir`.
    """
    if weights or (resume and last_checkpoint(output_dir) is not None):
        return
    raise ConfigError(
        f"--eval-only needs weights, but {key} is empty: set {key} to a checkpoint (e.g. "
        f"{os.path.join(output_dir or '.', 'model_final.pth')}), or add --resume to evaluate the last checkpoint "
        f"in {output_dir}"
    )


def config_changes(old: Any, new: Any, prefix: str = "") -> List[Tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs between two nested dicts."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [(prefix.rstrip("."), old, new)]
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        changes += config_changes(old.get(key), new.get(key), f"{prefix}{key}.")
    return changes


def check_resumed_config(
    output_dir: str,
    new: Dict[str, Any],
    *,
    model_keys: str = "MODEL.",
    free_keys: Sequence[str] = ("MODEL.WEIGHTS", "MODEL.DEVICE"),
    weights_key: str = "MODEL.WEIGHTS",
) -> None:
    """Compares the config of a resumed run with the one the run saved (`output_dir/config.yaml`).

    A change of the model (keys starting with `model_keys`, but for `free_keys`) makes the
    checkpoint's weights and optimiser state not fit: refused, naming each changed key. Other
    changes (a longer schedule, ...) are logged.

    Args:
        new: the new config as plain nested dicts, as it would be saved.
        weights_key: the key that loads weights into a new run, for the message.

    Raises:
        ConfigError: a model key changed.
    """
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path) or last_checkpoint(output_dir) is None:
        return
    try:
        with open(path, "r", encoding="utf-8") as f:
            old = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        logger.warning(f"Cannot compare the config with the resumed run's {path}: {e}")
        return
    changes = config_changes(old, new)
    listed = "; ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in changes)
    model = [(k, o, n) for k, o, n in changes if k.startswith(model_keys) and k not in free_keys]
    if model:
        raise ConfigError(
            f"--resume: the model of the run in {output_dir} differs from this config's ("
            + "; ".join(f"{k}: {o!r} in {path}, now {n!r}" for k, o, n in model)
            + "), so its checkpoint cannot be continued. Resume with the run's model settings, or start a new "
            f"run that loads the checkpoint as {weights_key}"
        )
    if changes:
        logger.info(f"Resuming with config changes since the run's {path}: {listed}")
