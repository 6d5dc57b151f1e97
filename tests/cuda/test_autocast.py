"""Mixed precision on the CPU's autocast (bfloat16, float16): what a GPU's AMP run would compute."""
import contextlib

import pytest
import torch
from torch import nn

from d2mask.config import ConfigError, get_cfg
from d2mask.engine.errors import user_error_message
from d2mask.engine.train_loop import AMPTrainer
from d2mask.modeling.poolers import ROIPooler
from d2mask.modeling.proposal_generator.rpn import StandardRPNHead
from d2mask.solver import build_optimizer
from d2mask.structures import Boxes
from d2mask.utils.events import EventStorage

from tests.cuda.fake_cuda import FakeCuda


def test_roi_pooler_under_bf16_autocast_keeps_box_coordinates_exact():
    torch.manual_seed(0)
    # FPN levels P2-P5 of a 1344 x 1344 image, as bfloat16 activations from autocast convolutions
    features = [torch.randn(1, 4, 1344 // s, 1344 // s).bfloat16() for s in (4, 8, 16, 32)]
    # Boxes far from the origin with fractional corners: in bfloat16, 1000.3 rounds to 1000 and
    # 1291.7 to 1288, which moves the sampling points by up to a pixel on P2.
    boxes = Boxes(torch.tensor([[1000.3, 1100.6, 1011.2, 1125.9], [901.1, 1201.7, 1291.7, 1333.4]]))
    pooler = ROIPooler(7, scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=2, pooler_type="ROIAlignV2")

    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = pooler(features, [boxes])
    reference = pooler([f.float() for f in features], [boxes])  # float32 throughout

    assert pooled.dtype == torch.bfloat16
    # Only the result's rounding to bfloat16 remains (8 significant bits).
    torch.testing.assert_close(pooled.float(), reference, rtol=1 / 128, atol=1 / 128)


def test_rpn_head_logits_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    head = StandardRPNHead(in_channels=8, num_anchors=3)
    features = [torch.randn(2, 8, 24, 24)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (logits,), (deltas,) = head(features)
    assert logits.dtype == deltas.dtype == torch.float32
    # In bfloat16 the 3456 logits (std 0.01 weights) would take a few hundred distinct values, and
    # the RPN's top-k would choose among ties; only float32 coincidences remain.
    assert torch.unique(logits).numel() > 0.99 * logits.numel()


class _DotLoss(nn.Module):
    """loss = w . (3, 4): its gradient is (3, 4), of norm 5."""

    def __init__(self):
        super().__init__()
        self.w = nn.Linear(2, 1, bias=False)
        nn.init.zeros_(self.w.weight)

    def forward(self, data):
        return {"loss": self.w(torch.tensor([[3.0, 4.0]])).sum()}


def test_grad_scaler_unscales_before_gradient_clipping():
    cfg = get_cfg()
    cfg.merge_from_list([
        "SOLVER.BASE_LR", 1.0, "SOLVER.MOMENTUM", 0.0, "SOLVER.WEIGHT_DECAY", 0.0,
        "SOLVER.CLIP_GRADIENTS.ENABLED", True, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm",
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 1.0,
    ])
    model = _DotLoss()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    trainer = AMPTrainer(model, [None], build_optimizer(cfg, model), precision=torch.float16, grad_scaler=scaler)
    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    # The unscaled gradient (3, 4) clipped to norm 1 is (0.6, 0.8); clipping the scaled gradient
    # instead and unscaling it after would give a step 4096 times smaller.
    torch.testing.assert_close(model.w.weight, torch.tensor([[-0.6, -0.8]]), rtol=1e-3, atol=1e-3)


def test_bf16_on_a_gpu_without_bf16_is_one_clear_line(monkeypatch):
    with FakeCuda():
        model = nn.Linear(2, 1).to("cuda")
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError) as error:
        AMPTrainer(model, [None], optimizer, precision=torch.bfloat16)
    message = user_error_message(error.value)
    assert "\n" not in message
    assert "SOLVER.AMP.PRECISION bfloat16" in message and "Tesla V100" in message and "float16" in message
