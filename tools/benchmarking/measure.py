"""Measurement for tools/benchmark.py: medians of timed steps run interleaved, and peak memory."""
import ctypes
import gc
import os
import resource
import statistics
import time
from typing import Callable, Dict, List


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _release_free_memory() -> None:
    """Hands the allocator's free pages back to the OS (glibc), so that what one step freed does not
    count in the next step's starting RSS and hide its growth."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Resets the process's RSS high-water mark (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Meter:
    """Times calls of one function and records its peak memory, on one device."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.times: List[float] = []
        self.cpu_times: List[float] = []  # CPU seconds of the whole process (all threads)
        self.peak: Dict[str, float] = {}
        self.exact = True

    def memory(self, fn: Callable[[], None]) -> None:
        """Runs `fn` once, untimed, keeping the largest peak memory seen over such runs."""
        import torch

        gc.collect()
        self.sync()
        _release_free_memory()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            self.exact = _reset_peak_rss() and self.exact
            base = _current_rss()
        fn()
        self.sync()
        if self.cuda:
            peaks = {
                "peak_extra_mb": (torch.cuda.max_memory_allocated() - base) / 2**20,
                "max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
                "max_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
            }
        else:
            peaks = {"peak_extra_mb": (_peak_rss() - base) / 2**20}
        for key, value in peaks.items():
            self.peak[key] = max(self.peak.get(key, value), value)

    def time(self, fn: Callable[[], None]) -> None:
        self.sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        self.sync()
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)

    def result(self, images_per_iter: int = 0) -> Dict:
        median = statistics.median(self.times)
        result = {"median_s": median, "min_s": min(self.times), "times_s": self.times,
                  "cpu_median_s": statistics.median(self.cpu_times), **self.peak}
        if images_per_iter:
            result["images_per_s"] = images_per_iter / median
        if not self.cuda and not self.exact:
            result["note"] = "peak RSS not resettable here: per-step memory is an upper bound"
        return result


def run_interleaved(steps: Dict[str, Callable[[], None]], device, iters: int, warmup: int) -> Dict[str, Meter]:
    """Runs the steps in turn `warmup + iters` times, the order reversed every other round so that no
    step always follows the same one; the warm-up rounds measure memory, the others time."""
    meters = {name: Meter(device) for name in steps}
    names = list(steps)
    for i in range(warmup + iters):
        for name in names if i % 2 == 0 else names[::-1]:
            (meters[name].memory if i < warmup else meters[name].time)(steps[name])
    return meters


def process_memory(device) -> Dict[str, float]:
    import torch

    if device.type == "cuda":
        return {"max_reserved_mb": torch.cuda.max_memory_reserved() / 2**20}
    return {"peak_rss_mb": _peak_rss() / 2**20}
