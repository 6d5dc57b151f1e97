"""PNG plots of a run's metrics.json: loss curves, learning rate, AP over iterations."""
import json
import os
from collections import defaultdict
from typing import Dict, List, Tuple

from .atomic_write import atomic_write

__all__ = ["load_metrics", "plot_metrics"]

_AP_NAMES = ("AP", "AP50", "AP75")


def load_metrics(json_file: str) -> Dict[str, List[Tuple[int, float]]]:
    """Each metric's (iteration, value) series from a metrics.json written by JSONWriter.

    A resumed run appends iterations it may have written before; the later value wins.
    """
    series: Dict[str, Dict[int, float]] = defaultdict(dict)
    with open(json_file, "r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # a run killed mid-write leaves a truncated last line; every complete line still counts
                continue
            if not isinstance(record, dict) or "iteration" not in record:
                raise ValueError(f"{json_file}:{line_no}: expected a JSON object with 'iteration', got {line[:80]!r}")
            itr = int(record.pop("iteration"))
            for name, value in record.items():
                if isinstance(value, (int, float)):
                    series[name][itr] = float(value)
    return {name: sorted(values.items()) for name, values in series.items()}


def _plot(path: str, title: str, ylabel: str, curves: Dict[str, List[Tuple[int, float]]]) -> None:
    # a bare Figure renders with Agg and touches no pyplot/backend state of the calling process
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for name, points in sorted(curves.items()):
        xs, ys = zip(*points)
        # sparse series (validation, evaluation) get markers so single points stay visible
        style = "o--" if len(points) < 50 else "-"
        ax.plot(xs, ys, style, label=name, markersize=4, linewidth=1)
    ax.set_title(title)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def plot_metrics(json_file: str, output_dir: str) -> List[str]:
    """Writes losses.png, lr.png and ap.png (each only if its metrics exist) into `output_dir`.

    Returns:
        The paths written.
    """
    series = load_metrics(json_file)
    groups = {
        "losses.png": ("Losses", "loss", {k: v for k, v in series.items() if "loss" in k}),
        "lr.png": ("Learning rate", "lr", {k: v for k, v in series.items() if k == "lr"}),
        "ap.png": ("Evaluation", "AP", {k: v for k, v in series.items() if k.rsplit("/", 1)[-1] in _AP_NAMES}),
    }
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for filename, (title, ylabel, curves) in groups.items():
        if curves:
            path = os.path.join(output_dir, filename)
            _plot(path, title, ylabel, curves)
            written.append(path)
    return written
