"""Defaults of evaluation."""
from ..key_docs import define


def add_test_defaults(cfg) -> None:
    define(cfg, "TEST.EVAL_PERIOD", 0, "Evaluate every this many iterations (and at the end); 0 only at the end.")
    define(cfg, "TEST.DETECTIONS_PER_IMAGE", 100, "Most detections returned per image.")
