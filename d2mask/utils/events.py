"""Training metrics: the EventStorage that collects them and the writers that report them.

The trainer opens one `EventStorage` around the training loop; code running inside it (the trainer,
hooks, optionally model code) reaches it through `get_event_storage()`. Writers read the storage
periodically: `CommonMetricPrinter` to the log, `JSONWriter` to metrics.json, `TensorboardXWriter`
to TensorBoard event files.
"""
import datetime
import json
import logging
import os
import resource
import time
from collections import defaultdict
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from fvcore.common.history_buffer import HistoryBuffer

from .atomic_write import atomic_write

__all__ = [
    "EventStorage",
    "get_event_storage",
    "has_event_storage",
    "EventWriter",
    "JSONWriter",
    "CommonMetricPrinter",
    "TensorboardXWriter",
    "ImageWriter",
]

_STORAGE_STACK: List["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    """The innermost active EventStorage.

    Raises:
        RuntimeError: when no `with EventStorage(...)` block is active (e.g. model code called
            outside a trainer); such code should check `has_event_storage()` first.
    """
    if not _STORAGE_STACK:
        raise RuntimeError(
            "get_event_storage() was called with no active EventStorage. Open one with "
            "`with EventStorage(start_iter):` (the trainer does this around training), or check "
            "has_event_storage() before logging."
        )
    return _STORAGE_STACK[-1]


def has_event_storage() -> bool:
    """Whether an EventStorage is active, i.e. whether `get_event_storage()` would succeed."""
    return bool(_STORAGE_STACK)


class EventStorage:
    """Scalars (with full histories), images and the current iteration of a training run.

    A scalar put with `smoothing_hint=True` (losses, timings) is reported by writers as the median of
    its recent values; with `smoothing_hint=False` (learning rate, AP) as its latest value.
    """

    def __init__(self, start_iter: int = 0):
        self._history: Dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: Dict[str, bool] = {}
        self._latest_scalars: Dict[str, Tuple[float, int]] = {}
        self._iter = start_iter
        self._vis_data: List[Tuple[str, np.ndarray, int]] = []

    @property
    def iter(self) -> int:
        """The iteration that scalars put now are recorded at."""
        return self._iter

    @iter.setter
    def iter(self, value: int) -> None:
        self._iter = int(value)

    @property
    def iteration(self) -> int:
        return self._iter

    def step(self) -> None:
        self._iter += 1

    def put_scalar(
        self, name: str, value: Union[float, torch.Tensor], smoothing_hint: bool = True, cur_iter: Optional[int] = None
    ) -> None:
        """Records `value` of the scalar `name` at `cur_iter` (default: the current iteration).

        Raises:
            ValueError: if `name` was put before with a different `smoothing_hint`.
        """
        cur_iter = self._iter if cur_iter is None else int(cur_iter)
        value = float(value)
        self._history[name].update(value, cur_iter)
        self._latest_scalars[name] = (value, cur_iter)
        known = self._smoothing_hints.setdefault(name, smoothing_hint)
        if known != smoothing_hint:
            raise ValueError(f"Scalar '{name}' was put with smoothing_hint={known} before, now {smoothing_hint}")

    def put_scalars(self, *, smoothing_hint: bool = True, cur_iter: Optional[int] = None, **kwargs: float) -> None:
        """`put_scalar` for each keyword argument: `storage.put_scalars(loss_cls=0.3, loss_box_reg=0.1)`."""
        for name, value in kwargs.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    def put_image(self, img_name: str, img_tensor: Union[torch.Tensor, np.ndarray]) -> None:
        """Queues an image for the writers that show images (TensorBoard).

        Args:
            img_name: tag of the image.
            img_tensor: Tensor[3, H, W] RGB, float in [0, 1] or uint8 in [0, 255].
        """
        if isinstance(img_tensor, torch.Tensor):
            img_tensor = img_tensor.detach().cpu().numpy()
        if img_tensor.ndim != 3 or img_tensor.shape[0] != 3:
            raise ValueError(f"put_image('{img_name}') expects an array of shape (3, H, W), got {img_tensor.shape}")
        self._vis_data.append((img_name, img_tensor, self._iter))

    @property
    def images(self) -> List[Tuple[str, np.ndarray, int]]:
        """Queued (name, image, iteration) triples not yet cleared by a writer."""
        return self._vis_data

    def clear_images(self) -> None:
        self._vis_data = []

    def history(self, name: str) -> HistoryBuffer:
        if name not in self._history:
            raise KeyError(f"No scalar '{name}' in the EventStorage; known: {sorted(self._history)}")
        return self._history[name]

    def histories(self) -> Dict[str, HistoryBuffer]:
        return dict(self._history)

    def latest(self) -> Dict[str, Tuple[float, int]]:
        """Each scalar's last value, as {name: (value, iteration)}."""
        return dict(self._latest_scalars)

    def latest_with_smoothing_hint(self, window_size: int = 20) -> Dict[str, Tuple[float, int]]:
        """Like `latest`, but smoothed scalars give the median of their last `window_size` values."""
        out = {}
        for name, (value, itr) in self._latest_scalars.items():
            if self._smoothing_hints[name]:
                value = float(self._history[name].median(window_size))
            out[name] = (value, itr)
        return out

    def smoothing_hints(self) -> Dict[str, bool]:
        return dict(self._smoothing_hints)

    def __enter__(self) -> "EventStorage":
        _STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc) -> None:
        assert _STORAGE_STACK[-1] is self, "EventStorage blocks must be exited in the order they were entered"
        _STORAGE_STACK.pop()


class EventWriter:
    """Reads the active EventStorage and reports it somewhere; called periodically by the trainer."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _new_scalars(storage: EventStorage, window_size: int, after_iter: int) -> Dict[int, Dict[str, float]]:
    """Smoothed scalars recorded after `after_iter`, grouped by iteration."""
    by_iter: Dict[int, Dict[str, float]] = defaultdict(dict)
    for name, (value, itr) in storage.latest_with_smoothing_hint(window_size).items():
        if itr > after_iter:
            by_iter[itr][name] = value
    return by_iter


def _ends_in_a_cut_line(path: str) -> bool:
    """Whether a file exists, is not empty, and does not end with a newline."""
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:  # absent or empty
        return False


class JSONWriter(EventWriter):
    """Appends one JSON object per iteration to a file: {"iteration": 19, "total_loss": 1.2, ...}.

    Each scalar is written at the iteration it was last recorded at, so values recorded at different
    periods (losses every iteration, AP at evaluations) land in the lines of their own iterations.
    """

    def __init__(self, json_file: str, window_size: int = 20):
        cut = _ends_in_a_cut_line(json_file)
        self._file = open(json_file, "a", encoding="utf-8")
        if cut:
            # a run killed mid-write left half a line: the resumed run's records start on a new one
            self._file.write("\n")
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        by_iter = _new_scalars(get_event_storage(), self._window_size, self._last_write)
        for itr in sorted(by_iter):
            self._file.write(json.dumps({"iteration": itr, **by_iter[itr]}, sort_keys=True) + "\n")
        self._file.flush()
        if by_iter:
            self._last_write = max(by_iter)

    def close(self) -> None:
        self._file.close()


class CommonMetricPrinter(EventWriter):
    """Logs one line per write: ETA, iteration, every loss, time/iter, data time, lr and peak memory."""

    def __init__(self, max_iter: Optional[int] = None, window_size: int = 20, device: Optional[torch.device] = None):
        """
        Args:
            max_iter: the last iteration + 1, for the ETA; None: no ETA.
            window_size: iterations over which losses and times are medians.
            device: the model's device, whose peak memory is logged; None: the current GPU when
                CUDA is in use.
        """
        self.logger = logging.getLogger(__name__)
        self._max_iter = max_iter
        self._window_size = window_size
        self._device = device
        self._last_write: Optional[Tuple[int, float]] = None  # (iteration, wall time) for the ETA fallback

    def _eta(self, storage: EventStorage) -> Optional[str]:
        if self._max_iter is None:
            return None
        remaining = self._max_iter - storage.iter - 1
        try:
            seconds = storage.history("time").median(1000) * remaining
        except KeyError:
            # no timer hook: estimate from the wall time between two writes
            seconds = None
            now = time.perf_counter()
            if self._last_write is not None and storage.iter > self._last_write[0]:
                per_iter = (now - self._last_write[1]) / (storage.iter - self._last_write[0])
                seconds = per_iter * remaining
            self._last_write = (storage.iter, now)
        if seconds is None:
            return None
        storage.put_scalar("eta_seconds", seconds, smoothing_hint=False)
        return str(datetime.timedelta(seconds=int(seconds)))

    def _max_memory_mb(self) -> float:
        """Peak CUDA allocations on the model's GPU since the previous line; on the CPU, the peak
        resident set size of the process over the whole run (which cannot be reset)."""
        device = self._device
        if device is None and torch.cuda.is_available() and torch.cuda.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device())
        if device is None or device.type != "cuda":
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        peak = torch.cuda.max_memory_allocated(device)
        # so that an evaluation's peak shows in one line, not in every later one
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 1024**2

    def _median(self, storage: EventStorage, name: str, window: int) -> Optional[float]:
        try:
            return float(storage.history(name).median(window))
        except KeyError:
            return None

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if self._max_iter is not None and iteration >= self._max_iter:
            return  # after training only evaluation results change; the last line stays the last iteration's
        eta = self._eta(storage)
        data_time = self._median(storage, "data_time", self._window_size)
        iter_time = self._median(storage, "time", self._window_size)
        losses = [
            f"{name}: {buf.median(self._window_size):.4g}"
            for name, buf in storage.histories().items()
            if "loss" in name and not name.startswith("val_")
        ]
        try:
            lr = f"{storage.history('lr').latest():.5g}"
        except KeyError:
            lr = "N/A"
        memory = self._max_memory_mb()
        parts = [f"eta: {eta}" if eta else "", f"iter: {iteration}", "  ".join(losses)]
        parts += [f"time: {iter_time:.4f}" if iter_time is not None else ""]
        parts += [f"data_time: {data_time:.4f}" if data_time is not None else ""]
        parts += [f"lr: {lr}", f"max_mem: {memory:.0f}M"]
        self.logger.info("  ".join(p for p in parts if p))


class ImageWriter(EventWriter):
    """Writes the queued images (`EventStorage.put_image`, e.g. of VIS_PERIOD) as PNG files
    `<iteration:07d>_<name>.png` in `output_dir`: what TensorBoard would show, where it is not
    installed, instead of letting them pile up in memory."""

    def __init__(self, output_dir: str):
        self._output_dir = output_dir

    def write(self) -> None:
        storage = get_event_storage()
        for name, img, itr in storage.images:
            # (3, H, W) RGB, float in [0, 1] or uint8 -> (H, W, 3) uint8 BGR for OpenCV
            hwc = img.transpose(1, 2, 0)
            if hwc.dtype != np.uint8:
                hwc = (np.clip(hwc, 0, 1) * 255).round().astype(np.uint8)
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")[:80]
            path = os.path.join(self._output_dir, f"{itr:07d}_{safe}.png")
            ok, png = cv2.imencode(".png", np.ascontiguousarray(hwc[:, :, ::-1]))
            if ok:
                with atomic_write(path, "wb") as f:
                    f.write(png.tobytes())
        storage.clear_images()


class TensorboardXWriter(EventWriter):
    """Writes scalars and queued images to TensorBoard event files in `log_dir`.

    Needs the `tensorboard` package; `DefaultTrainer` adds this writer only when it is importable.
    """

    def __init__(self, log_dir: str, window_size: int = 20, **kwargs):
        from torch.utils.tensorboard import SummaryWriter

        os.makedirs(log_dir, exist_ok=True)
        self._writer = SummaryWriter(log_dir, **kwargs)
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        by_iter = _new_scalars(storage, self._window_size, self._last_write)
        for itr in sorted(by_iter):
            for name, value in by_iter[itr].items():
                self._writer.add_scalar(name, value, itr)
        if by_iter:
            self._last_write = max(by_iter)
        for name, img, itr in storage.images:
            self._writer.add_image(name, img, itr)
        storage.clear_images()

    def close(self) -> None:
        self._writer.close()
