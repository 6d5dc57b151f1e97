#!/usr/bin/env python
"""Training and evaluation in one plain loop, without DefaultTrainer and its hooks: a starting point
to write your own loop from.

    python tools/plain_train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml
    python tools/plain_train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth

It leaves out what tools/train_net.py adds: epochs, AMP, gradient clipping, precise BN, skipping
non-finite steps, validation loss, best-checkpoint and early stopping hooks, and the checkpoint
saved on SIGTERM.
"""
import datetime
import logging
import os
import sys
from typing import Any, Dict

import torch
from fvcore.common.checkpoint import PeriodicCheckpointer

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.config import load_config
from d2mask.data import build_detection_test_loader, build_detection_train_loader
from d2mask.engine import DefaultTrainer, build_default_writers, default_argument_parser, default_setup, launch
from d2mask.engine import check_model_fits_loader, create_ddp_model, report_user_errors
from d2mask.evaluation import inference_on_dataset
from d2mask.modeling import build_model
from d2mask.solver import build_lr_scheduler, build_optimizer, check_solver_names
from d2mask.utils import comm
from d2mask.utils.events import EventStorage

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's projects

logger = logging.getLogger("d2mask.plain_train_net")


def do_test(cfg, model) -> Dict[str, Any]:
    """{dataset name: results} for each of DATASETS.TEST (the results alone for one dataset)."""
    results = {}
    for name in cfg.DATASETS.TEST:
        evaluator = DefaultTrainer.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference", name))
        results[name] = inference_on_dataset(model, build_detection_test_loader(cfg, name), evaluator)
        if comm.is_main_process():
            logger.info(f"Evaluation results for {name}: {results[name]}")
    return next(iter(results.values())) if len(results) == 1 else results


def do_train(cfg, model, resume: bool = False) -> None:
    model.train()
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, optimizer=optimizer, scheduler=scheduler)
    start_iter = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume).get("iteration", -1) + 1
    max_iter = cfg.SOLVER.MAX_ITER
    periodic_checkpointer = PeriodicCheckpointer(checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, max_iter=max_iter)
    writers = build_default_writers(cfg.OUTPUT_DIR, max_iter) if comm.is_main_process() else []
    data_loader = build_detection_train_loader(cfg)
    check_model_fits_loader(model, data_loader, cfg.DATASETS.TRAIN)

    logger.info(f"Starting training from iteration {start_iter}")
    with EventStorage(start_iter) as storage:
        for data, iteration in zip(data_loader, range(start_iter, max_iter)):
            storage.iter = iteration
            loss_dict = model(data)
            losses = sum(loss_dict.values())
            if not torch.isfinite(losses):
                raise FloatingPointError(f"Loss became infinite or NaN at iteration {iteration}: {loss_dict}")
            reduced = {k: v.item() for k, v in comm.reduce_dict(loss_dict).items()}
            if comm.is_main_process():
                storage.put_scalars(total_loss=sum(reduced.values()), **reduced)

            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            storage.put_scalar("lr", optimizer.param_groups[0]["lr"], smoothing_hint=False)
            scheduler.step()

            if cfg.TEST.EVAL_PERIOD > 0 and (iteration + 1) % cfg.TEST.EVAL_PERIOD == 0 and iteration != max_iter - 1:
                do_test(cfg, model)
                comm.synchronize()
            if (iteration + 1) % 20 == 0 or iteration == max_iter - 1:
                for writer in writers:
                    writer.write()
            periodic_checkpointer.step(iteration)


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    model = build_model(cfg)
    logger.info(f"Model:\n{model}")
    if args.eval_only:
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return do_test(cfg, model)
    do_train(cfg, create_ddp_model(model, broadcast_buffers=False), resume=args.resume)
    return do_test(cfg, model)


def launch_main(args) -> None:
    cfg = load_config(args.config_file, args.opts)  # a mistake is one line here, not one traceback per process
    check_solver_names(cfg)  # the names d2mask's builders know, before default_setup writes into OUTPUT_DIR
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, join_timeout=datetime.timedelta(seconds=args.join_timeout), args=(args,))


if __name__ == "__main__":
    report_user_errors(launch_main, default_argument_parser().parse_args())
