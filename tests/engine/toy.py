"""A toy model, data loader and evaluator with the contracts of the real ones, for engine tests.

Importable as `tests.engine.toy` (the repository root is on sys.path), also in processes that
`launch` spawns, which unpickle functions defined here.
"""
import itertools
from typing import Dict, Iterator, List

import torch
from torch import nn

from d2mask.config import get_cfg
from d2mask.data import build_detection_train_loader
from d2mask.engine import DefaultTrainer
from d2mask.evaluation import DatasetEvaluator
from d2mask.utils import comm

DIM = 4


def toy_sample(index: int) -> Dict[str, torch.Tensor]:
    """Sample `index`: deterministic input and target, target = a fixed linear function + noise."""
    g = torch.Generator().manual_seed(index)
    x = torch.randn(DIM, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn((), generator=g)
    return {"x": x, "y": y, "index": index}


class ToyLoader:
    """An infinite loader: batch k of rank r holds samples ((k * world + r) * batch + i) mod size.

    Each rank sees a disjoint shard; `start_iter` positions it at batch `start_iter`, as a resumed
    training loader must be.
    """

    def __init__(self, batch_size: int = 8, size: int = 64, start_iter: int = 0):
        self.batch_size = batch_size
        self.size = size
        self.start_iter = start_iter

    def __iter__(self) -> Iterator[List[dict]]:
        rank, world = comm.get_rank(), comm.get_world_size()
        for k in itertools.count(self.start_iter):
            first = (k * world + rank) * self.batch_size
            yield [toy_sample((first + i) % self.size) for i in range(self.batch_size)]


class FiniteToyLoader:
    """`num_batches` batches of this rank's shard of a held-out set (for evaluation/validation)."""

    def __init__(self, num_batches: int = 3, batch_size: int = 2, offset: int = 1000):
        self.num_batches = num_batches
        self.batch_size = batch_size
        self.offset = offset

    def __iter__(self):
        rank, world = comm.get_rank(), comm.get_world_size()
        for k in range(self.num_batches):
            first = self.offset + (k * world + rank) * self.batch_size
            yield [toy_sample(first + i) for i in range(self.batch_size)]

    def __len__(self):
        return self.num_batches


class ToyModel(nn.Module):
    """Linear -> (+ its BatchNorm) -> Linear regression. Training: {"loss_mse", "loss_l1"} plus a
    random draw (like proposal sampling) that must not break determinism; eval: predictions."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(DIM, 8)
        self.norm = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 1)
        self.seen: List[int] = []  # sample indices this process trained on
        self.losses: List[Dict[str, float]] = []  # this process's losses at each training step

    def forward(self, batch: List[dict]):
        x = torch.stack([d["x"] for d in batch])
        h = self.fc1(x)
        # batch norm alone would erase each batch's mean, which the target depends on
        pred = self.fc2(h + self.norm(h)).squeeze(1)
        if not self.training:
            return [{"pred": p} for p in pred]
        if torch.is_grad_enabled():
            self.seen.extend(d["index"] for d in batch)
        y = torch.stack([d["y"] for d in batch])
        # a random subset weighting, so that the loss depends on the random generator's state
        weight = 1.0 + 0.1 * torch.rand(len(batch))
        losses = {"loss_mse": ((pred - y) ** 2 * weight).mean(), "loss_l1": 0.1 * (pred - y).abs().mean()}
        if torch.is_grad_enabled():
            self.losses.append({k: v.item() for k, v in losses.items()})
        return losses


class ToyEvaluator(DatasetEvaluator):
    """{"toy": {"AP": 100 / (1 + mean squared error)}} over all processes' predictions."""

    def reset(self):
        self._errors = []

    def process(self, inputs, outputs):
        self._errors.extend(float((o["pred"] - i["y"]) ** 2) for i, o in zip(inputs, outputs))

    def evaluate(self):
        errors = [e for rank_errors in comm.gather(self._errors) for e in rank_errors]
        if not comm.is_main_process():
            return {}
        return {"toy": {"AP": 100.0 / (1.0 + sum(errors) / len(errors))}}


class ToyTrainer(DefaultTrainer):
    """DefaultTrainer with the toy model and data, through d2mask's own train loader."""

    @classmethod
    def build_model(cls, cfg):
        return ToyModel()

    @classmethod
    def build_train_loader(cls, cfg):
        dicts = [toy_sample(i) for i in range(64)]
        return build_detection_train_loader(
            dicts, mapper=None, total_batch_size=cfg.SOLVER.IMS_PER_BATCH, aspect_ratio_grouping=False
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return FiniteToyLoader(num_batches=3, batch_size=4)

    build_validation_loader = build_test_loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return ToyEvaluator()

    @classmethod
    def num_training_images(cls, cfg):
        return 64


def toy_cfg(output_dir: str, *opts: str):
    """A config for ToyTrainer: batch 8, SGD with momentum, WarmupMultiStepLR, checkpoints every 4;
    `opts` are "KEY=VALUE" overrides."""
    cfg = get_cfg()
    cfg.OUTPUT_DIR = output_dir
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TEST = ("toy_val",)
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = 10
    cfg.SOLVER.STEPS = (7,)
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 4
    cfg.merge_from_list(list(opts))
    return cfg
