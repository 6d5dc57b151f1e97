"""`verify_results`: checks evaluation results against the expected ones of a config (a regression
test of a training recipe), and `print_csv_format`: logs them as comma-separated lines; as Detectron2's
`detectron2.evaluation.testing`."""
import logging
import math
import sys
from collections.abc import Mapping
from typing import Any, Dict

__all__ = ["print_csv_format", "verify_results"]

logger = logging.getLogger(__name__)


def verify_results(cfg, results: Dict[str, Dict[str, float]]) -> bool:
    """Compares `results` with `cfg.TEST.EXPECTED_RESULTS`, a list of [task, metric, expected,
    tolerance] (e.g. ["bbox", "AP", 38.5, 0.2]).

    Args:
        cfg: the config.
        results: {task: {metric: value}}, as `DefaultTrainer.test` returns.

    Returns:
        True when nothing is expected or every metric is within its tolerance. Otherwise, as in
        Detectron2, each mismatch is logged and the process exits with status 1.
    """
    expected_results = cfg.TEST.EXPECTED_RESULTS
    if not expected_results:
        return True
    failures = []
    for task, metric, expected, tolerance in expected_results:
        actual: Any = results.get(task, {}).get(metric)
        if actual is None or not math.isfinite(actual) or abs(actual - expected) > tolerance:
            failures.append(f"{task}/{metric} = {actual}, expected {expected} +- {tolerance}")
    if failures:
        logger.error(f"Result verification (TEST.EXPECTED_RESULTS) failed: {'; '.join(failures)}")
        sys.exit(1)
    logger.info("Result verification (TEST.EXPECTED_RESULTS) passed.")
    return True


def print_csv_format(results: Mapping) -> None:
    """Logs each task's metrics as three "copypaste:" lines, ready to paste into a spreadsheet: the
    task, the metric names and the values with 4 decimals, comma-separated. Per-category metrics
    (names with a "-", e.g. "AP-person") are left out; a task whose result is not a mapping is logged
    as "task=value".

    Args:
        results: {task: {metric: value}} (e.g. {"bbox": {"AP": 37.9, ...}}), as evaluators return.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"print_csv_format takes {{task: {{metric: value}}}}, got {type(results).__name__}")
    for task, metrics in results.items():
        if not isinstance(metrics, Mapping):
            logger.info(f"copypaste: {task}={metrics}")
            continue
        main = {name: value for name, value in metrics.items() if "-" not in name}
        logger.info(f"copypaste: Task: {task}")
        logger.info("copypaste: " + ",".join(main))
        logger.info("copypaste: " + ",".join(f"{float(value):.4f}" for value in main.values()))
