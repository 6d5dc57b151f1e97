"""`create_ddp_model(..., fp16_compression=True)` (Detectron2's argument, `train.ddp.fp16_compression`):
the gradients are exchanged in float16, so they arrive rounded to float16."""
import torch
import torch.distributed as dist
from torch import nn

from d2mask.engine import create_ddp_model
from d2mask.utils import comm


def _gradient(fp16_compression: bool, monkeypatch, tmp_path) -> float:
    model = nn.Linear(1, 1, bias=False)
    nn.init.ones_(model.weight)
    # One process only; the world size is faked so that create_ddp_model wraps the model.
    rendezvous = f"file://{tmp_path}/rendezvous_{fp16_compression}"
    dist.init_process_group("gloo", init_method=rendezvous, rank=0, world_size=1)
    try:
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)
        ddp = create_ddp_model(model, fp16_compression=fp16_compression)
        assert isinstance(ddp, nn.parallel.DistributedDataParallel)
        ddp(torch.tensor([[1.0 / 3.0]])).sum().backward()
        return model.weight.grad.item()
    finally:
        dist.destroy_process_group()


def test_fp16_compression_rounds_the_exchanged_gradients_to_float16(monkeypatch, tmp_path):
    exact = torch.tensor(1.0 / 3.0).item()  # d(w x)/dw = x, in float32
    assert _gradient(False, monkeypatch, tmp_path) == exact
    assert _gradient(True, monkeypatch, tmp_path) == torch.tensor(1.0 / 3.0).half().item() != exact
