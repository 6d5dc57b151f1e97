"""Which GPU each piece uses, checked with CUDA's functions patched: launch's device selection, DDP's
device_ids, the saved random states, evaluation's synchronisation, the logged max_mem, pinned memory."""
import datetime

import pytest
import torch
import torch.distributed as dist
from torch import nn

from d2mask.config import get_cfg
from d2mask.data import build_detection_train_loader
from d2mask.data.samplers import TrainingSampler
from d2mask.engine import launch, training
from d2mask.engine.errors import LaunchError
from d2mask.evaluation import inference_on_dataset
from d2mask.utils import comm
from d2mask.utils.env import get_rng_state, set_rng_state
from d2mask.utils.events import CommonMetricPrinter, EventStorage

from tests.cuda.fake_cuda import FakeCuda


class _Gpus:
    """CUDA's device functions for `count` GPUs with a current device, each with a random state."""

    def __init__(self, monkeypatch, count: int, current: int = 0):
        self.count, self.current = count, current
        self.states = {i: torch.tensor([i], dtype=torch.uint8) for i in range(count)}
        self.calls = []
        for name in ("is_available", "is_initialized"):
            monkeypatch.setattr(torch.cuda, name, lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": self.states[self._index(device)].clone())
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [self.states[i].clone() for i in range(self.count)])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: [self.set_rng_state(s, i) for i, s in enumerate(states)])
        for name in ("synchronize", "max_memory_allocated", "reset_peak_memory_stats"):
            monkeypatch.setattr(torch.cuda, name, lambda device=None, name=name: self.calls.append((name, device)) or 0)

    def _index(self, device) -> int:
        if isinstance(device, int):
            index = device
        else:
            index = torch.device(device or "cuda").index
            index = self.current if index is None else index
        if not 0 <= index < self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index} (this process sees {self.count} GPUs)")
        return index

    def set_device(self, device) -> None:
        self.current = self._index(device)

    def set_rng_state(self, state, device="cuda") -> None:
        self.states[self._index(device)] = state.clone()


def test_resume_restores_the_random_state_of_this_process_gpu_when_it_sees_fewer(monkeypatch):
    gpus = _Gpus(monkeypatch, count=8, current=3)  # saved by local rank 3 seeing all 8 GPUs
    saved = get_rng_state()
    gpus = _Gpus(monkeypatch, count=1)  # resumed under srun --gpus-per-task=1
    set_rng_state(saved)
    assert gpus.states[0].tolist() == [3]


@pytest.mark.parametrize("visible, expected", [(4, 3), (1, 0)])
def test_launched_process_picks_its_gpu_among_those_it_sees(monkeypatch, visible, expected):
    gpus = _Gpus(monkeypatch, count=visible)
    joined = []
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kwargs: joined.append(backend))
    monkeypatch.setattr(comm, "create_local_process_group", lambda size: None)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "x", "MASTER_PORT": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ran = []
    launch(lambda: ran.append(torch.cuda.current_device()), 4)
    assert joined == ["nccl"] and ran == [expected]


def test_launched_process_seeing_some_gpus_of_its_machine_is_a_clear_error(monkeypatch):
    _Gpus(monkeypatch, count=2)
    for key, value in {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(LaunchError, match="Local rank 3 of 4 processes sees 2 GPUs"):
        launch(print, 4)


def test_ddp_wraps_on_the_model_gpu_not_the_local_rank(monkeypatch):
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "get_local_rank", lambda: 1)  # its only visible GPU is cuda:0
    wrapped = []
    monkeypatch.setattr(training, "DistributedDataParallel", lambda model, **kwargs: wrapped.append(kwargs))
    with FakeCuda():
        model = nn.Linear(2, 1).to("cuda")
    training.create_ddp_model(model, find_unused_parameters=False)
    assert wrapped == [{"device_ids": [torch.device("cuda", 0)], "find_unused_parameters": False}]


def test_inference_synchronises_the_model_gpu(monkeypatch):
    gpus = _Gpus(monkeypatch, count=2, current=1)
    with FakeCuda():
        model = nn.Linear(2, 1).to("cuda")  # on cuda:0, while cuda:1 is current
    model.forward = lambda batch: [{}] * len(batch)
    inference_on_dataset(model, [[{}], [{}]], None)
    assert gpus.calls == [("synchronize", torch.device("cuda", 0))] * 2


def test_max_mem_is_the_model_gpu_peak_since_the_previous_line(monkeypatch):
    gpus = _Gpus(monkeypatch, count=2, current=0)
    printer = CommonMetricPrinter(max_iter=10, device=torch.device("cuda", 1))
    with EventStorage(0) as storage:
        storage.put_scalar("total_loss", 1.0)
        printer.write()
    cuda1 = torch.device("cuda", 1)
    assert gpus.calls == [("max_memory_allocated", cuda1), ("reset_peak_memory_stats", cuda1)]


@pytest.mark.parametrize("device, pinned", [("cuda", True), ("cuda:1", True), ("cpu", False)])
def test_train_loader_pins_memory_for_a_gpu_model(device, pinned):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", device, "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.ASPECT_RATIO_GROUPING", False,
                        "DATALOADER.NUM_WORKERS", 0])
    items = [{"image": torch.zeros(3, 4, 4)}] * 2
    loader = build_detection_train_loader(cfg, mapper=lambda d: d, dataset=items, sampler=TrainingSampler(2))
    assert loader.pin_memory is pinned
