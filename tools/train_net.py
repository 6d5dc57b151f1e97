#!/usr/bin/env python
"""Trains or evaluates a model described by a config, on one or several processes.

    python tools/train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file CFG --resume           # continue an interrupted run
    python tools/train_net.py --config-file CFG --num-gpus 8 SOLVER.IMS_PER_BATCH 16
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS W TEST.AUG.ENABLED True

Writes into OUTPUT_DIR: config.yaml, log.txt, metrics.json, checkpoints and last_checkpoint,
inference/ (predictions), PNG plots of losses, learning rate and AP. See docs/training.md. With
TEST.AUG.ENABLED, the final evaluation (and --eval-only's) is also run with test-time augmentation:
results under "<task>_TTA" (e.g. "bbox_TTA/AP" in metrics.json), predictions in inference_TTA/.

A mistake in the input (config, flags, IMPORTS, dataset, weights: d2mask.engine.USER_ERRORS) ends
the run with its one-line message and exit status 2; see docs/reliability.md.
"""
import datetime
import logging
import os
import sys
from collections import OrderedDict

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.config import load_config
from d2mask.engine import (
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    hooks,
    launch,
    report_user_errors,
    validate_config,
)
from d2mask.evaluation import verify_results
from d2mask.modeling import GeneralizedRCNNWithTTA
from d2mask.solver import check_solver_names
from d2mask.utils import comm

# This repository's configs import its projects (`IMPORTS: [projects.DenseText.atss_matcher]`). d2mask
# never adds a directory to the import path (not even the current one); its tools add the repository root.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


logger = logging.getLogger("d2mask")


class Trainer(DefaultTrainer):
    """DefaultTrainer with Detectron2's `test_with_TTA`: with TEST.AUG.ENABLED, training ends with an
    evaluation with test-time augmentation after the plain one."""

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluates `model` with test-time augmentation (GeneralizedRCNNWithTTA, TEST.AUG.*) on each of
        DATASETS.TEST, writing its predictions into OUTPUT_DIR/inference_TTA.

        Returns:
            `test`'s results with "_TTA" appended to each key, e.g. {"bbox_TTA": {"AP": ...}, "segm_TTA": {...}}.
        """
        logger.info("Running inference with test-time augmentation ...")
        model = GeneralizedRCNNWithTTA(cfg, model)
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
        evaluators = [cls.build_evaluator(cfg, name, output_folder=output_folder) for name in cfg.DATASETS.TEST]
        results = cls.test(cfg, model, evaluators)
        return OrderedDict((f"{key}_TTA", value) for key, value in results.items())

    def build_hooks(self):
        ret = super().build_hooks()
        if self.cfg.TEST.AUG.ENABLED:
            # after the plain evaluation and before the writers, so that metrics.json records both
            plain = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
            ret.insert(plain + 1, hooks.EvalHook(0, self._test_with_TTA_and_save))
        return ret

    def _test_with_TTA_and_save(self):
        results = self.test_with_TTA(self.cfg, self.model)
        # `train` returns and verifies (TEST.EXPECTED_RESULTS) both evaluations
        self._last_eval_results = {**(self._last_eval_results or {}), **results}
        return results


def setup(args):
    """The merged, frozen config of the command line, with the process set up for it."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def launch_main(args) -> None:
    # The config is read once before launching, so a mistake in it is one line, not a traceback
    # from every process; and before default_setup writes into OUTPUT_DIR. This script's Trainer
    # builds the optimizer and schedule with d2mask's builders, whose names are checked here too.
    cfg = load_config(args.config_file, args.opts)
    validate_config(cfg)
    check_solver_names(cfg)
    logging.getLogger("d2mask").info(f"Command line arguments: {args}")
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        join_timeout=datetime.timedelta(seconds=args.join_timeout),
        args=(args,),
    )


if __name__ == "__main__":
    report_user_errors(launch_main, default_argument_parser().parse_args())
