"""Process-wide settings of a run: random seeds and the state of the random generators."""
import logging
import os
import random
import time
from typing import Any, Dict, Optional

import numpy as np
import torch

__all__ = ["seed_all_rng", "get_rng_state", "set_rng_state"]


def seed_all_rng(seed: Optional[int] = None) -> int:
    """Seeds Python's `random`, NumPy's global generator and torch (CPU and every GPU).

    Args:
        seed: the seed; None or a negative value draws one from the OS and logs it, so that an
            unseeded run can still be repeated.

    Returns:
        The seed used.
    """
    if seed is None or seed < 0:
        # pid and time keep processes started in the same instant apart even with a poor urandom
        seed = (os.getpid() + int(time.time() * 1e6) + int.from_bytes(os.urandom(4), "little")) % 2**31
        logging.getLogger(__name__).info(f"Using a randomly drawn seed: {seed} (set SEED={seed} to repeat this run)")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def get_rng_state() -> Dict[str, Any]:
    """The state of every generator `seed_all_rng` seeds (of CUDA's, the current GPU's), as tensors
    and plain Python values (so a checkpoint holding it loads with `torch.load(weights_only=True)`)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gaussian)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # The current GPU's only: this process's. A job may resume seeing fewer GPUs per process
        # (srun --gpus-per-task=1), where the states of all GPUs seen when saving cannot be restored.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restores generators from `get_rng_state()`'s output."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
