#!/usr/bin/env python
"""Trains or evaluates a model described by a Python config (LazyConfig), on one or several processes.

    python tools/lazyconfig_train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.py
    python tools/lazyconfig_train_net.py --config-file CFG --eval-only train.init_checkpoint=output/model_final.pth
    python tools/lazyconfig_train_net.py --config-file CFG --resume         # continue an interrupted run
    python tools/lazyconfig_train_net.py --config-file CFG --num-gpus 8 dataloader.train.total_batch_size=64

The config has the keys `model`, `optimizer`, `lr_scheduler`, `dataloader` (`train`, `test`,
`evaluator`) and `train` (see configs/common/). Training uses the trainer, hooks, checkpointer and
launch of tools/train_net.py; the overrides are `key.path=VALUE` items (docs/configs.md). Writes into
`train.output_dir`: config.yaml, log.txt, metrics.json, checkpoints and last_checkpoint, inference/
and PNG plots.
"""
import logging
import os

import torch
import yaml
from omegaconf import DictConfig

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.config import CfgNode, ConfigError, LazyConfig, instantiate
from d2mask.config.instantiate import locate
from d2mask.engine import (
    AMPTrainer,
    SimpleTrainer,
    check_run_request,
    default_argument_parser,
    hooks,
    launch,
    report_user_errors,
)
from d2mask.engine.default_trainer import _NO_BUFFER_SYNC, _fast_forward_sampler, create_ddp_model
from d2mask.evaluation import inference_on_dataset
from d2mask.solver import maybe_add_gradient_clipping
from d2mask.utils import comm
from d2mask.utils.env import seed_all_rng, set_rng_state
from d2mask.utils.events import CommonMetricPrinter, JSONWriter
from d2mask.utils.logger import setup_logger

logger = logging.getLogger("d2mask.lazyconfig_train_net")

_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def load_config(args) -> DictConfig:
    """The config file with the command line's overrides applied."""
    if not args.config_file:
        raise ConfigError("--config-file is required, e.g. configs/Shapes/mask_rcnn_R_18_FPN_shapes.py")
    return LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)


def setup(args) -> DictConfig:
    """The config of the command line, with this process set up for it (as `default_setup` does for
    a YAML config): output dir, logging, the config saved as YAML, seeds."""
    cfg = load_config(args)
    output_dir = cfg.train.output_dir
    rank = comm.get_rank()
    moved = None
    if comm.is_main_process():
        try:
            saved = yaml.safe_load(LazyConfig.to_yaml(cfg))
        except ConfigError:  # not saved either (below): nothing to compare a resumed run with
            saved = {}
        moved = check_run_request(cfg.train.init_checkpoint, output_dir, args, saved, lazy=True)
        os.makedirs(output_dir, exist_ok=True)
    for name in ("d2mask", "fvcore", "projects"):
        setup_logger(output_dir, distributed_rank=rank, name=name)
    if moved:
        logger.warning(moved)
    logger.info(f"Rank of this process: {rank}. World size: {comm.get_world_size()}. PyTorch {torch.__version__}")
    logger.info(f"Command line arguments: {args}")
    if comm.is_main_process():
        path = os.path.join(output_dir, "config.yaml")
        try:
            LazyConfig.save(cfg, path)
            logger.info(f"Full config saved to {path}")
        except ConfigError as e:  # the run itself does not need the dump
            logger.warning(f"The config cannot be saved as YAML, so {path} is not written: {e}")
    seed_all_rng(None if cfg.train.seed < 0 else cfg.train.seed + rank)
    torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    return cfg


def do_test(cfg: DictConfig, model: torch.nn.Module):
    """Evaluates `model` on `dataloader.test` with `dataloader.evaluator`; {} when that is None
    (`dataloader.evaluator=None` trains without evaluating)."""
    if cfg.dataloader.get("evaluator") is None:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        for task, metrics in results.items():
            if isinstance(metrics, dict):
                logger.info(f"Evaluation, {task}: " + "  ".join(f"{k} {float(v):.2f}" for k, v in metrics.items()))
    return results


def _build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """`cfg.optimizer` over `model`'s parameters, clipping gradients as `train.clip_gradients` says
    (with the same optimizer subclass that SOLVER.CLIP_GRADIENTS gives a YAML config)."""
    # Like Detectron2's lazy training script, the run fills in what only it knows: the model.
    cfg.optimizer.params.model = model
    clip = cfg.train.clip_gradients
    if clip.enabled:
        target = cfg.optimizer._target_
        clip_cfg = CfgNode({"SOLVER": {"CLIP_GRADIENTS": {k.upper(): v for k, v in clip.items()}}})
        optimizer_cls = locate(target) if isinstance(target, str) else target
        cfg.optimizer._target_ = maybe_add_gradient_clipping(clip_cfg, optimizer_cls)
    return instantiate(cfg.optimizer)


def do_train(args, cfg: DictConfig):
    """Builds model, optimiser, data and schedule in the order DefaultTrainer does (so that a seed
    gives the same run as the YAML twin of the config), then trains with the engine's hooks."""
    model = instantiate(cfg.model).to(cfg.train.device)
    logger.info(f"Model:\n{model}")
    optimizer = _build_optimizer(cfg, model)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, find_unused_parameters=cfg.train.ddp.find_unused_parameters, **_NO_BUFFER_SYNC)
    step_kwargs = {"max_nonfinite_skips": cfg.train.max_nonfinite_skips}
    if cfg.train.amp.enabled:
        precision = cfg.train.amp.precision
        if precision not in _PRECISIONS:
            raise ConfigError(f"train.amp.precision must be one of {sorted(_PRECISIONS)}, got '{precision}'")
        trainer = AMPTrainer(model, train_loader, optimizer, precision=_PRECISIONS[precision], **step_kwargs)
    else:
        trainer = SimpleTrainer(model, train_loader, optimizer, **step_kwargs)
    cfg.lr_scheduler.optimizer = optimizer
    scheduler = instantiate(cfg.lr_scheduler)
    output_dir = cfg.train.output_dir
    checkpointer = DetectionCheckpointer(model, output_dir, trainer=trainer)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(optimizer, scheduler),
        # before evaluation, so that a failing evaluation still leaves the checkpoint
        hooks.PeriodicCheckpointer(
            checkpointer, cfg.train.checkpointer.period, max_to_keep=cfg.train.checkpointer.max_to_keep
        ),
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
    ])
    if comm.is_main_process():
        metrics_file = os.path.join(output_dir, "metrics.json")
        writers = [CommonMetricPrinter(cfg.train.max_iter), JSONWriter(metrics_file)]
        trainer.register_hooks([
            hooks.PeriodicWriter(writers, period=cfg.train.log_period),
            hooks.MetricsPlotter(metrics_file, output_dir),
        ])

    checkpoint = checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = 0
    if args.resume and checkpointer.has_checkpoint():
        # as DefaultTrainer.resume_or_load: skip the images already trained on, restore the generators
        start_iter = trainer.iter + 1
        per_rank_batch = cfg.dataloader.train.total_batch_size // comm.get_world_size()
        if not _fast_forward_sampler(train_loader, start_iter * per_rank_batch):
            logger.warning("Could not find the training loader's sampler; the resumed data order differs")
        rng_states = checkpoint.get("rng_states")
        if rng_states is not None and len(rng_states) == comm.get_world_size():
            set_rng_state(rng_states[comm.get_rank()])
    trainer.train(start_iter, cfg.train.max_iter)


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = instantiate(cfg.model).to(cfg.train.device)
        model = create_ddp_model(model)
        DetectionCheckpointer(model, save_dir=cfg.train.output_dir).resume_or_load(
            cfg.train.init_checkpoint, resume=args.resume
        )
        return do_test(cfg, model)
    do_train(args, cfg)
    return None


def launch_main(args) -> None:
    load_config(args)  # once before launching: a mistake is one line, not a traceback per process
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    report_user_errors(launch_main, default_argument_parser().parse_args())  # docs/reliability.md
