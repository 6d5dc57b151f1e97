"""DefaultTrainer: a training run assembled from a config through overridable `build_*` methods.

A project changes one piece by subclassing and overriding one method (e.g. `build_evaluator`,
`build_train_loader`, `build_hooks`); the rest stays as configured.
"""
import logging
import os
import weakref
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from ..checkpoint import DetectionCheckpointer
from ..config import CfgNode, ConfigError
from ..data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from ..data.detection_utils import build_augmentation
from ..data.build import min_keypoints_of
from ..evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    PascalVOCDetectionEvaluator,
    SemSegEvaluator,
    inference_on_dataset,
    verify_results,
)
from ..modeling import build_model
from ..solver import auto_scale_workers, build_lr_scheduler, build_optimizer, epochs_to_iterations
from ..utils import comm
from ..utils.events import EventWriter
from ..utils.logger import setup_logger
from . import hooks
from .train_loop import SimpleTrainer, TrainerBase
from .training import (
    build_default_hooks,
    build_default_writers,
    build_step_trainer,
    check_model_fits_loader,
    create_ddp_model,
    create_training_ddp_model,
    resume_training,
)
from .validation import validate_config

__all__ = ["DefaultTrainer", "create_ddp_model"]

logger = logging.getLogger(__name__)


class DefaultTrainer(TrainerBase):
    """Trains a model described by a config: model, optimiser, schedule, data, checkpoints,
    evaluation and logging, each from a `build_*` method.

        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()

    Before building, the schedule is rescaled to the number of processes (SOLVER.REFERENCE_WORLD_SIZE)
    and converted from epochs (SOLVER.MAX_EPOCHS); `self.cfg` is the result.
    """

    def __init__(self, cfg: CfgNode):
        super().__init__()
        if not logging.getLogger("d2mask").isEnabledFor(logging.INFO):
            setup_logger()
        validate_config(cfg)
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        # the training set is only loaded here when the schedule is given in epochs
        cfg = epochs_to_iterations(cfg, self.num_training_images(cfg) if cfg.SOLVER.MAX_EPOCHS > 0 else 0)
        if cfg.SOLVER.IMS_PER_BATCH % comm.get_world_size() != 0:
            raise ConfigError(
                f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} must be divisible by the number of "
                f"processes ({comm.get_world_size()})"
            )
        self.cfg = cfg
        model = self.build_model(cfg)
        # The builders refuse a SOLVER.OPTIMIZER or LR_SCHEDULER_NAME they don't know (validate_config
        # leaves the names to them, as a project's Trainer may override them): before the training
        # data is loaded and OUTPUT_DIR is created.
        optimizer = self.build_optimizer(cfg, model)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        if cfg.OUTPUT_DIR and comm.is_main_process():
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        data_loader = self.build_train_loader(cfg)
        check_model_fits_loader(model, data_loader, cfg.DATASETS.TRAIN)
        model = create_training_ddp_model(model, find_unused_parameters=cfg.DDP.FIND_UNUSED_PARAMETERS)
        self._trainer = self.build_step_trainer(cfg, model, data_loader, optimizer)
        # the step calls after_backward on the trainer running it; the hooks live on this one
        self._trainer.after_backward = self.after_backward
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self._last_eval_results: Optional[Dict[str, Any]] = None
        self.register_hooks(self.build_hooks())

    auto_scale_workers = staticmethod(auto_scale_workers)

    @property
    def model(self) -> nn.Module:
        return self._trainer.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._trainer.optimizer

    @property
    def data_loader(self):
        return self._trainer.data_loader

    def resume_or_load(self, resume: bool = True) -> None:
        """Loads MODEL.WEIGHTS, or with `resume` and a checkpoint in OUTPUT_DIR, continues from it:
        model, optimiser, schedule, iteration, hook states, random generators and data position."""
        self.start_iter = resume_training(
            self.checkpointer, self, self.data_loader, self.cfg.MODEL.WEIGHTS, resume, self.cfg.SOLVER.IMS_PER_BATCH
        )

    def build_hooks(self) -> List[Optional[hooks.HookBase]]:
        """Timer, LR schedule, checkpoints, validation loss, evaluation, best checkpoint, early stopping,
        writers and plots, in the order they must run."""
        cfg = self.cfg

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        val_loader = None
        if cfg.TEST.VAL_LOSS_PERIOD > 0 and cfg.DATASETS.TEST:
            val_loader = self.build_validation_loader(cfg, cfg.DATASETS.TEST[0])
        return build_default_hooks(
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            checkpointer=self.checkpointer,
            checkpoint_period=cfg.SOLVER.CHECKPOINT_PERIOD,
            checkpoints_to_keep=cfg.SOLVER.CHECKPOINTS_TO_KEEP,
            checkpoint_signals=cfg.SOLVER.CHECKPOINT_SIGNALS,
            eval_period=cfg.TEST.EVAL_PERIOD,
            test_function=test_and_save_results,
            val_loss_period=cfg.TEST.VAL_LOSS_PERIOD,
            val_loader=val_loader,
            best_metric=cfg.TEST.BEST_METRIC,
            best_metric_mode=cfg.TEST.BEST_METRIC_MODE,
            early_stop_patience=cfg.TEST.EARLY_STOP_PATIENCE,
            writers=self.build_writers() if comm.is_main_process() else None,
            output_dir=cfg.OUTPUT_DIR,
        )

    def build_writers(self) -> List[EventWriter]:
        """Console lines, OUTPUT_DIR/metrics.json and (if tensorboard is installed) TensorBoard files."""
        return build_default_writers(self.cfg.OUTPUT_DIR, self.max_iter, device=next(self.model.parameters()).device)

    def train(self) -> Optional[Dict[str, Any]]:
        """Trains from `start_iter` to `max_iter`.

        Returns:
            The last evaluation's results on the main process (None if there was none), checked
            against TEST.EXPECTED_RESULTS (see `verify_results`).
        """
        super().train(self.start_iter, self.max_iter)
        if not comm.is_main_process():
            return None
        verify_results(self.cfg, self._last_eval_results or {})
        return self._last_eval_results

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._trainer.load_state_dict(state["_trainer"])

    @classmethod
    def build_step_trainer(cls, cfg: CfgNode, model: nn.Module, data_loader, optimizer) -> SimpleTrainer:
        """The object doing one step: SimpleTrainer, or AMPTrainer when SOLVER.AMP.ENABLED."""
        return build_step_trainer(
            model,
            data_loader,
            optimizer,
            amp_enabled=cfg.SOLVER.AMP.ENABLED,
            amp_precision=cfg.SOLVER.AMP.PRECISION,
            max_nonfinite_skips=cfg.SOLVER.MAX_NONFINITE_SKIPS,
        )

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        model = build_model(cfg)
        logger.info(f"Model:\n{model}")
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_detection_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_validation_loader(cls, cfg: CfgNode, dataset_name: str):
        """A finite loader over `dataset_name` with annotations and inference-time resizing, for the
        validation loss."""
        mapper = DatasetMapper(cfg, True, augmentations=build_augmentation(cfg, False), recompute_boxes=False)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def num_training_images(cls, cfg: CfgNode) -> int:
        """Images in one epoch of DATASETS.TRAIN (after DATALOADER.FILTER_EMPTY_ANNOTATIONS), for
        schedules given in epochs."""
        return len(get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, min_keypoints=min_keypoints_of(cfg)
        ))

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
        """The evaluator named by the dataset's metadata `evaluator_type`: "coco" (COCOEvaluator),
        "sem_seg" (SemSegEvaluator), "coco_panoptic_seg" (those two and COCOPanopticEvaluator), "lvis"
        (LVISEvaluator), "pascal_voc" (PascalVOCDetectionEvaluator), "cityscapes_instance"
        (CityscapesInstanceEvaluator), "cityscapes_sem_seg" (CityscapesSemSegEvaluator),
        "cityscapes_panoptic_seg" (COCOPanopticEvaluator and the two Cityscapes evaluators, as
        Detectron2's Panoptic-DeepLab evaluates cityscapes_fine_panoptic_val)."""
        evaluator_type = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        if evaluator_type == "lvis":
            return LVISEvaluator(dataset_name, output_dir=output_folder)
        if evaluator_type == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        if evaluator_type == "cityscapes_instance":
            return CityscapesInstanceEvaluator(dataset_name)
        if evaluator_type == "cityscapes_sem_seg":
            return CityscapesSemSegEvaluator(dataset_name)
        if evaluator_type == "cityscapes_panoptic_seg":
            return DatasetEvaluators([
                COCOPanopticEvaluator(dataset_name, output_folder),
                CityscapesSemSegEvaluator(dataset_name),
                CityscapesInstanceEvaluator(dataset_name),
            ])
        evaluators: List[DatasetEvaluator] = []
        if evaluator_type in ("sem_seg", "coco_panoptic_seg"):
            evaluators.append(SemSegEvaluator(dataset_name, output_dir=output_folder))
        if evaluator_type in ("coco", "coco_panoptic_seg"):
            evaluators.append(COCOEvaluator(
                dataset_name,
                output_dir=output_folder,
                max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS,
            ))
        if evaluator_type == "coco_panoptic_seg":
            evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
        if not evaluators:
            raise NotImplementedError(
                f"No evaluator for dataset '{dataset_name}' (metadata evaluator_type={evaluator_type!r}); set "
                f"evaluator_type to 'coco', 'sem_seg', 'coco_panoptic_seg', 'lvis', 'pascal_voc', 'cityscapes_instance', "
                f"'cityscapes_sem_seg' or 'cityscapes_panoptic_seg' in its metadata "
                f"or override DefaultTrainer.build_evaluator"
            )
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module, evaluators: Optional[List[DatasetEvaluator]] = None) -> Dict[str, Any]:
        """Evaluates `model` on each of DATASETS.TEST.

        Returns:
            {dataset name: results}, or the results alone when there is one dataset, e.g.
            {"bbox": {"AP": ...}, "segm": {...}}; empty on processes other than the main one.
        """
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} datasets in DATASETS.TEST")
        results: Dict[str, Any] = OrderedDict()
        for idx, name in enumerate(cfg.DATASETS.TEST):
            data_loader = cls.build_test_loader(cfg, name)
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name)
            results[name] = inference_on_dataset(model, data_loader, evaluator)
            if comm.is_main_process():
                _log_results(name, results[name])
        return next(iter(results.values())) if len(results) == 1 else dict(results)


def _log_results(dataset_name: str, results: Mapping[str, Any]) -> None:
    for task, metrics in results.items():
        if not isinstance(metrics, Mapping):
            continue
        main = [k for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "mIoU", "fwIoU", "mACC", "pACC", "IoU", "iIoU",
                            "IoU_sup", "iIoU_sup", "PQ", "SQ", "RQ", "PQ_th", "PQ_st") if k in metrics]
        logger.info(
            f"Evaluation of {dataset_name}, {task}: " + "  ".join(f"{k} {float(metrics[k]):.2f}" for k in main)
        )
