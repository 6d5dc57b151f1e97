#!/usr/bin/env python
"""Trains or evaluates a model described by a Python config (LazyConfig), on one or several processes.

    python tools/lazyconfig_train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.py
    python tools/lazyconfig_train_net.py --config-file CFG --eval-only train.init_checkpoint=output/model_final.pth
    python tools/lazyconfig_train_net.py --config-file CFG --resume         # continue an interrupted run
    python tools/lazyconfig_train_net.py --config-file CFG --num-gpus 8 dataloader.train.total_batch_size=64

The config has the keys `model`, `optimizer`, a schedule, `dataloader` (`train`, `test`,
`evaluator`) and `train` (see configs/common/train.py). The schedule is d2mask's `lr_scheduler` (a
torch scheduler in iterations, configs/common/schedules.py) or Detectron2's `lr_multiplier` (an fvcore
ParamScheduler over training progress, configs/common/coco_schedule.py). The run is assembled by the same functions
of d2mask.engine as tools/train_net.py's (`default_setup`, `build_step_trainer`,
`build_default_hooks`, `resume_training`), so it has the same features: validation loss, best
checkpoint, early stopping, schedules in epochs, rescaling to the number of processes, TensorBoard.
The overrides are `key.path=VALUE` items (docs/configs.md). Writes into `train.output_dir`:
config.yaml, log.txt, metrics.json, checkpoints and last_checkpoint, inference/ and PNG plots.
"""
import copy
import datetime
import logging
import os
import sys

import torch
import yaml
from omegaconf import DictConfig

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.config import ConfigError, LazyConfig, instantiate
from d2mask.config.instantiate import locate
from d2mask.engine import (
    build_default_hooks,
    build_default_writers,
    build_step_trainer,
    check_model_fits_loader,
    create_ddp_model,
    create_training_ddp_model,
    default_argument_parser,
    default_setup,
    launch,
    report_user_errors,
    resume_training,
)
from d2mask.evaluation import inference_on_dataset
from d2mask.solver import Schedule, add_gradient_clipping, scale_schedule, schedule_from_epochs
from d2mask.utils import comm

# This repository's configs import its projects (`IMPORTS: [projects.DenseText.atss_matcher]`). d2mask
# never adds a directory to the import path (not even the current one); its tools add the repository root.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("d2mask.lazyconfig_train_net")

# --help's examples: Python configs take `key.path=VALUE` overrides, not YAML's `KEY VALUE`
EXAMPLES = """Examples:

Train (GPU if available, else CPU), with overrides:
    $ tools/lazyconfig_train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.py train.max_iter=500 optimizer.lr=0.01

Evaluate a trained model:
    $ tools/lazyconfig_train_net.py --config-file CFG.py --eval-only train.init_checkpoint=/path/to/model_final.pth

Resume an interrupted run from train.output_dir/last_checkpoint:
    $ tools/lazyconfig_train_net.py --config-file CFG.py --resume

Eight GPUs, 64 images per batch:
    $ tools/lazyconfig_train_net.py --config-file CFG.py --num-gpus 8 dataloader.train.total_batch_size=64
"""


def load_config(args) -> DictConfig:
    """The config file with the command line's overrides applied."""
    if not args.config_file:
        raise ConfigError("--config-file is required, e.g. configs/Shapes/mask_rcnn_R_18_FPN_shapes.py")
    return LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)


def setup(args) -> DictConfig:
    """The config of the command line, with this process set up for it by `default_setup`."""
    cfg = load_config(args)
    default_setup(cfg, args)
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


def _schedule(cfg: DictConfig) -> Schedule:
    # Detectron2's `lr_multiplier` is a function of training progress: it has no iteration counts.
    scheduler, train = cfg.get("lr_scheduler") or {}, cfg.train
    return Schedule(
        ims_per_batch=cfg.dataloader.train.total_batch_size,
        base_lr=cfg.optimizer.lr,
        max_iter=train.max_iter,
        steps=tuple(scheduler.get("milestones", ())),
        warmup_iters=scheduler.get("warmup_iters", 0),
        checkpoint_period=train.checkpointer.period,
        eval_period=train.eval_period,
        val_loss_period=train.val_loss_period,
    )


def check_lr_schedule(cfg: DictConfig) -> None:
    """Raises ConfigError unless the config has exactly one schedule: d2mask's `lr_scheduler` (a torch
    scheduler, counted in iterations) or Detectron2's `lr_multiplier` (an fvcore ParamScheduler over
    training progress, which `train.steps_epochs` cannot set)."""
    given = [key for key in ("lr_scheduler", "lr_multiplier") if cfg.get(key) is not None]
    if len(given) != 1:
        raise ConfigError(
            f"The config must have one learning-rate schedule, `lr_scheduler` (iterations) or `lr_multiplier` "
            f"(Detectron2's, progress in [0, 1]); it has {' and '.join(given) if given else 'neither'}"
        )
    if given == ["lr_multiplier"] and cfg.train.get("steps_epochs"):
        raise ConfigError(
            "train.steps_epochs sets lr_scheduler.milestones; an `lr_multiplier` schedule is given over "
            "training progress, so its milestones follow train.max_epochs without it: remove train.steps_epochs"
        )


def apply_schedule(cfg: DictConfig) -> None:
    """Rescales the schedule in place from `train.reference_world_size` processes to the actual
    number, then converts the counts given in epochs (`train.max_epochs` > 0) to iterations, as
    `DefaultTrainer` does for a YAML config. An `lr_multiplier` follows `train.max_iter` by itself."""
    check_lr_schedule(cfg)
    train = cfg.train
    schedule = scale_schedule(_schedule(cfg), train.reference_world_size, comm.get_world_size())
    # the training set is only loaded here when the schedule is given in epochs
    num_images = len(instantiate(cfg.dataloader.train.dataset)) if train.max_epochs > 0 else 0
    schedule = schedule_from_epochs(
        schedule,
        num_images,
        train.max_epochs,
        steps_epochs=train.steps_epochs,
        checkpoint_period_epochs=train.checkpoint_period_epochs,
        eval_period_epochs=train.eval_period_epochs,
        val_loss_period_epochs=train.val_loss_period_epochs,
    )
    cfg.dataloader.train.total_batch_size = schedule.ims_per_batch
    cfg.optimizer.lr = schedule.base_lr
    train.max_iter = schedule.max_iter
    scheduler = cfg.get("lr_scheduler") or {}
    if "milestones" in scheduler:
        scheduler.milestones = list(schedule.steps)
    if "warmup_iters" in scheduler:
        scheduler.warmup_iters = schedule.warmup_iters
    train.checkpointer.period = schedule.checkpoint_period
    train.eval_period = schedule.eval_period
    train.val_loss_period = schedule.val_loss_period
    if train.reference_world_size:
        train.reference_world_size = comm.get_world_size()


def _build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    """`lr_scheduler` over `optimizer`, or `lr_multiplier`'s ParamScheduler, which the LRScheduler
    hook wraps over `train.max_iter` as Detectron2's does."""
    if cfg.get("lr_multiplier") is not None:
        return instantiate(cfg.lr_multiplier)
    cfg.lr_scheduler.optimizer = optimizer
    return instantiate(cfg.lr_scheduler)


def _build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """`cfg.optimizer` over `model`'s parameters, clipping gradients as `train.clip_gradients` says."""
    # Like Detectron2's lazy training script, the run fills in what only it knows: the model.
    cfg.optimizer.params.model = model
    clip = cfg.train.clip_gradients
    if clip.enabled:
        target = cfg.optimizer._target_
        optimizer_cls = locate(target) if isinstance(target, str) else target
        cfg.optimizer._target_ = add_gradient_clipping(optimizer_cls, clip.clip_type, clip.clip_value, clip.norm_type)
    return instantiate(cfg.optimizer)


def _build_validation_loader(cfg: DictConfig):
    """`dataloader.test` with annotations (as the training mapper keeps them) and its inference-time
    resizing, for the validation loss."""
    loader = copy.deepcopy(cfg.dataloader.test)
    train_mapper = cfg.dataloader.train.mapper
    loader.mapper.is_train = True
    loader.mapper.use_instance_mask = train_mapper.get("use_instance_mask", False)
    loader.mapper.instance_mask_format = train_mapper.get("instance_mask_format", "polygon")
    loader.mapper.recompute_boxes = False
    return instantiate(loader)


def do_train(args, cfg: DictConfig):
    """Builds model, optimiser, data and schedule in the order DefaultTrainer does (so that a seed
    gives the same run as the YAML twin of the config), then trains with the engine's hooks."""
    apply_schedule(cfg)
    train = cfg.train
    model = instantiate(cfg.model).to(train.device)
    logger.info(f"Model:\n{model}")
    optimizer = _build_optimizer(cfg, model)
    train_loader = instantiate(cfg.dataloader.train)
    check_model_fits_loader(model, train_loader, cfg.dataloader.train.dataset.get("names", ()))
    model = create_training_ddp_model(
        model, find_unused_parameters=train.ddp.find_unused_parameters, fp16_compression=train.ddp.fp16_compression
    )
    trainer = build_step_trainer(
        model,
        train_loader,
        optimizer,
        amp_enabled=train.amp.enabled,
        amp_precision=train.amp.precision,
        max_nonfinite_skips=train.max_nonfinite_skips,
    )
    scheduler = _build_scheduler(cfg, optimizer)
    output_dir = train.output_dir
    checkpointer = DetectionCheckpointer(model, output_dir, trainer=trainer)
    hooks = build_default_hooks(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        checkpointer=checkpointer,
        checkpoint_period=train.checkpointer.period,
        checkpoints_to_keep=train.checkpointer.max_to_keep,
        checkpoint_signals=train.checkpoint_signals,
        eval_period=train.eval_period,
        test_function=lambda: do_test(cfg, model),
        val_loss_period=train.val_loss_period,
        val_loader=_build_validation_loader(cfg) if train.val_loss_period > 0 else None,
        best_metric=train.best_metric,
        best_metric_mode=train.best_metric_mode,
        early_stop_patience=train.early_stop_patience,
        writers=(
            build_default_writers(output_dir, train.max_iter, device=next(model.parameters()).device)
            if comm.is_main_process() else None
        ),
        writer_period=train.log_period,
        output_dir=output_dir,
    )
    trainer.register_hooks(hooks)
    start_iter = resume_training(
        checkpointer, trainer, train_loader, train.init_checkpoint, args.resume, cfg.dataloader.train.total_batch_size
    )
    trainer.train(start_iter, train.max_iter)


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
        join_timeout=datetime.timedelta(seconds=args.join_timeout),
        args=(args,),
    )


if __name__ == "__main__":
    parser = default_argument_parser(epilog=EXAMPLES)
    report_user_errors(launch_main, parser.parse_args())  # docs/reliability.md
