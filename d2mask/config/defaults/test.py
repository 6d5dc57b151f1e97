"""Defaults of evaluation."""
from ..key_docs import define


def add_test_defaults(cfg) -> None:
    define(cfg, "TEST.EVAL_PERIOD", 0, "Evaluate every this many iterations (and at the end); 0 only at the end.")
    define(cfg, "TEST.DETECTIONS_PER_IMAGE", 100, "Most detections returned per image.")
    define(cfg, "TEST.KEYPOINT_OKS_SIGMAS", [], "Per-keypoint sigmas of COCO's keypoint similarity (OKS) in the keypoint evaluation, one per MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS; empty: COCO's 17 person sigmas.")
    define(cfg, "TEST.EXPECTED_RESULTS", [], "[[task, metric, expected, tolerance], ...], e.g. [['bbox', 'AP', 38.5, 0.2]]: after training (and with --eval-only) the run exits with status 1 when a result is further off (verify_results).")
    define(cfg, "TEST.EVAL_PERIOD_EPOCHS", 0.0, "With SOLVER.MAX_EPOCHS, > 0: the evaluation period in epochs, replacing EVAL_PERIOD.")
    define(cfg, "TEST.VAL_LOSS_PERIOD", 0, "Compute the losses on the first of DATASETS.TEST (no gradients, model in training mode) every this many iterations and at the end; 0 never.")
    define(cfg, "TEST.VAL_LOSS_PERIOD_EPOCHS", 0.0, "With SOLVER.MAX_EPOCHS, > 0: VAL_LOSS_PERIOD in epochs.")
    define(cfg, "TEST.BEST_METRIC", "", "Evaluation metric (e.g. segm/AP) that picks model_best.pth and drives early stopping; empty: neither.")
    define(cfg, "TEST.BEST_METRIC_MODE", "max", "Whether a larger (max) or smaller (min) TEST.BEST_METRIC is better.")
    define(cfg, "TEST.EARLY_STOP_PATIENCE", 0, "Stop training after this many evaluations in a row without a better TEST.BEST_METRIC; 0 never stops.")
    define(cfg, "TEST.AUG.ENABLED", False, "Evaluate also with test-time augmentation (GeneralizedRCNNWithTTA; tools/train_net.py, after training and with --eval-only): results under '<task>_TTA' and in OUTPUT_DIR/inference_TTA. R-CNN models without keypoints.")
    define(cfg, "TEST.AUG.MIN_SIZES", (400, 500, 600, 700, 800, 900, 1000, 1100, 1200), "Shortest-edge sizes the test image is resized to, one detection pass each (DatasetMapperTTA).")
    define(cfg, "TEST.AUG.MAX_SIZE", 4000, "Longest side allowed after each TEST.AUG.MIN_SIZES resize.")
    define(cfg, "TEST.AUG.FLIP", True, "Also detect on the horizontally flipped image at each size (twice the passes).")
