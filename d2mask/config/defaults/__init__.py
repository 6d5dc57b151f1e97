"""The default config, assembled from the defaults of each area."""
from fvcore.common.config import CfgNode

from ..key_docs import define
from .data import add_data_defaults
from .heads import add_retinanet_defaults, add_roi_heads_defaults, add_rpn_defaults
from .model import add_model_defaults
from .segmentation import add_segmentation_defaults
from .solver import add_solver_defaults
from .test import add_test_defaults

__all__ = ["build_defaults"]


def build_defaults() -> CfgNode:
    """A new CfgNode with every default key of d2mask."""
    cfg = CfgNode()
    define(cfg, "VERSION", 2, "Config format version (Detectron2's current one).")
    add_model_defaults(cfg)
    add_rpn_defaults(cfg)
    add_roi_heads_defaults(cfg)
    add_retinanet_defaults(cfg)
    add_segmentation_defaults(cfg)
    add_data_defaults(cfg)
    add_solver_defaults(cfg)
    add_test_defaults(cfg)
    define(cfg, "OUTPUT_DIR", "./output", "Directory for logs, metrics, checkpoints and evaluation results.")
    define(cfg, "SEED", -1, "Random seed; < 0 draws one and logs it.")
    define(cfg, "CUDNN_BENCHMARK", False, "Let cuDNN pick the fastest kernels (non-deterministic).")
    define(cfg, "VIS_PERIOD", 0, "Every this many iterations, draw a training image with its GT boxes and proposals (and the first predicted masks beside their GT), to TensorBoard (or as PNG files in OUTPUT_DIR/vis without it); 0 disables.")
    define(cfg, "DDP.FIND_UNUSED_PARAMETERS", False, "Let DistributedDataParallel handle parameters that get no gradient in a step (slower).")
    define(cfg, "IMPORTS", [], "Python modules imported before anything is built (e.g. a project's module that registers a matcher).")
    return cfg
