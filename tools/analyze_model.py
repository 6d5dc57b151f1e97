#!/usr/bin/env python
"""Prints a model's parameter counts, structure, and its flops and activations on test images.

    python tools/analyze_model.py --tasks parameter structure \
        --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml
    python tools/analyze_model.py --tasks flop activation --num-inputs 10 \
        --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml MODEL.WEIGHTS output/model_final.pth

Flops and activations depend on the image and on the number of detections, so they are averaged
over --num-inputs images of DATASETS.TEST[0] (test.yaml: dataloader.test), with the weights loaded.
"""
import argparse
import logging
import os
import sys
from collections import Counter
from typing import Any, Dict, List, Optional

import numpy as np
from fvcore.nn import flop_count_table

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.config import CfgNode, LazyConfig, instantiate, load_config
from d2mask.data import build_detection_test_loader
from d2mask.data.datasets import set_datasets_root
from d2mask.engine import report_user_errors
from d2mask.modeling import build_model
from d2mask.utils.analysis import FlopCountAnalysis, activation_count_operators, parameter_count_table
from d2mask.utils.logger import setup_logger

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's projects

logger = logging.getLogger("d2mask.analyze_model")
TASKS = ("flop", "activation", "parameter", "structure")


def _load(args) -> Any:
    if args.config_file.endswith(".py"):
        return LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    cfg = load_config(args.config_file, args.opts)
    set_datasets_root(cfg.DATASETS.ROOT)
    return cfg


def _model(cfg: Any, with_weights: bool):
    if isinstance(cfg, CfgNode):
        model, weights = build_model(cfg), cfg.MODEL.WEIGHTS
    else:
        model, weights = instantiate(cfg.model).to(cfg.train.device), cfg.train.init_checkpoint
    if with_weights:
        DetectionCheckpointer(model).load(weights)
    return model.eval()


def _inputs(cfg: Any, num_inputs: int) -> List[List[Dict[str, Any]]]:
    loader = (build_detection_test_loader(cfg, cfg.DATASETS.TEST[0]) if isinstance(cfg, CfgNode)
              else instantiate(cfg.dataloader.test))
    batches = []
    for batch in loader:
        if len(batches) == num_inputs:
            break
        batches.append(batch)
    return batches


def do_flop(cfg: Any, num_inputs: int) -> float:
    model, counts, totals = _model(cfg, True), Counter(), []
    for i, batch in enumerate(_inputs(cfg, num_inputs)):
        flops = FlopCountAnalysis(model, batch)
        if i > 0:
            flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        counts += flops.by_operator()
        totals.append(flops.total())
    logger.info("Flops of the first input:\n" + flop_count_table(FlopCountAnalysis(model, _inputs(cfg, 1)[0])))
    logger.info("Average GFlops per operator: " + str({k: v / len(totals) / 1e9 for k, v in counts.items()}))
    logger.info(f"Total GFlops: {np.mean(totals) / 1e9:.3f}±{np.std(totals) / 1e9:.3f}")
    return float(np.mean(totals))


def do_activation(cfg: Any, num_inputs: int) -> float:
    model, counts, totals = _model(cfg, True), Counter(), []
    for batch in _inputs(cfg, num_inputs):
        count = activation_count_operators(model, batch)
        counts += count
        totals.append(sum(count.values()))
    logger.info("Average million activations per operator: " + str({k: v / len(totals) for k, v in counts.items()}))
    logger.info(f"Total million activations: {np.mean(totals):.3f}±{np.std(totals):.3f}")
    return float(np.mean(totals))


def do_parameter(cfg: Any, num_inputs: int) -> str:
    table = parameter_count_table(_model(cfg, False), max_depth=5)
    logger.info("Parameter count:\n" + table)
    return table


def do_structure(cfg: Any, num_inputs: int) -> str:
    text = str(_model(cfg, False))
    logger.info("Model structure:\n" + text)
    return text


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Returns each task's result: total flops, million activations, the parameter table, the structure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a YAML or Python config")
    parser.add_argument("--tasks", choices=TASKS, required=True, nargs="+", help="what to report")
    parser.add_argument("-n", "--num-inputs", default=100, type=int,
                        help="images to average flops and activations over")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="config overrides: KEY VALUE (YAML) or key=value (Python)")
    args = parser.parse_args(argv)
    setup_logger(name="d2mask")
    cfg = _load(args)
    tasks = {"flop": do_flop, "activation": do_activation, "parameter": do_parameter, "structure": do_structure}
    return {task: tasks[task](cfg, args.num_inputs) for task in args.tasks}


if __name__ == "__main__":
    report_user_errors(main, sys.argv[1:])
