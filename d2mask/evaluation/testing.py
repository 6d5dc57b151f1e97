"""`verify_results`: checks evaluation results against the expected ones of a config (a regression
test of a training recipe), as Detectron2's `detectron2.evaluation.testing`."""
import logging
import math
import sys
from typing import Any, Dict

__all__ = ["verify_results"]

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
