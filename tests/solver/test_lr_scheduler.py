import math
import os

import pytest
import torch

from d2mask.solver import WarmupCosineLR, WarmupMultiStepLR, warmup_factor_at_iter


def _optimizer(lrs=(1.0,)):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def _run(scheduler, optimizer, steps):
    lrs = []
    for _ in range(steps):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_factor_by_hand():
    assert warmup_factor_at_iter("linear", 0, 4, 0.2) == pytest.approx(0.2)
    assert warmup_factor_at_iter("linear", 2, 4, 0.2) == pytest.approx(0.6)
    assert warmup_factor_at_iter("linear", 4, 4, 0.2) == 1.0
    assert warmup_factor_at_iter("constant", 3, 4, 0.2) == 0.2
    with pytest.raises(ValueError, match="WARMUP_METHOD"):
        warmup_factor_at_iter("cubic", 0, 4, 0.2)


def test_multistep_with_linear_warmup_by_hand():
    opt = _optimizer((1.0, 2.0))
    sched = WarmupMultiStepLR(opt, [3, 5], gamma=0.1, warmup_factor=0.5, warmup_iters=2)
    lrs = _run(sched, opt, 7)
    expected = [0.5, 0.75, 1.0, 0.1, 0.1, 0.01, 0.01]
    assert [g[0] for g in lrs] == pytest.approx(expected)
    # a second group keeps its own base rate
    assert [g[1] for g in lrs] == pytest.approx([2 * e for e in expected])


def test_multistep_rejects_unsorted_steps():
    with pytest.raises(ValueError, match="increasing"):
        WarmupMultiStepLR(_optimizer(), [5, 3])


def test_cosine_with_constant_warmup_and_end_factor():
    opt = _optimizer()
    sched = WarmupCosineLR(opt, max_iters=4, warmup_factor=0.1, warmup_iters=1, warmup_method="constant", end_factor=0.2)
    lrs = [g[0] for g in _run(sched, opt, 6)]
    cos = [0.2 + 0.4 * (1 + math.cos(math.pi * i / 4)) for i in range(5)]
    assert lrs == pytest.approx([0.1 * cos[0], cos[1], cos[2], cos[3], 0.2, 0.2])


def test_restored_scheduler_continues_the_schedule():
    opt = _optimizer()
    sched = WarmupMultiStepLR(opt, [6], warmup_factor=0.1, warmup_iters=3)
    full = [g[0] for g in _run(sched, opt, 8)]
    assert full == pytest.approx([0.1, 0.4, 0.7, 1, 1, 1, 0.1, 0.1])

    opt = _optimizer()
    sched = WarmupMultiStepLR(opt, [6], warmup_factor=0.1, warmup_iters=3)
    _run(sched, opt, 2)
    state = sched.state_dict()
    opt2 = _optimizer()
    sched2 = WarmupMultiStepLR(opt2, [6], warmup_factor=0.1, warmup_iters=3)
    sched2.load_state_dict(state)
    for g, lr in zip(opt2.param_groups, sched2.get_last_lr()):
        g["lr"] = lr
    assert [g[0] for g in _run(sched2, opt2, 6)] == pytest.approx(full[2:])


def test_lr_multiplier_with_warmup_param_scheduler_by_hand():
    """Detectron2's Python-config schedule: LRMultiplier(WarmupParamScheduler(MultiStepParamScheduler))."""
    from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler

    from d2mask.solver import LRMultiplier, WarmupParamScheduler

    steps = MultiStepParamScheduler(values=[1.0, 0.1, 0.01], milestones=[6, 8], num_updates=10)
    opt = _optimizer((1.0, 2.0))
    sched = LRMultiplier(opt, WarmupParamScheduler(steps, warmup_factor=0.1, warmup_length=0.2), max_iter=10)
    lrs = _run(sched, opt, 10)
    # warm-up over 2 of 10 iterations from 0.1 towards 1 (where the steps are at 0.2), then the steps
    expected = [0.1, 0.55, 1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]
    assert [g[0] for g in lrs] == pytest.approx(expected)
    assert [g[1] for g in lrs] == pytest.approx([2 * e for e in expected])
    assert set(sched.state_dict()) == {"base_lrs", "last_epoch", "_last_lr"}

    # constant warm-up over half the run, then the whole cosine rescaled to the other half
    cosine = WarmupParamScheduler(CosineParamScheduler(1.0, 0.0), 0.5, 0.5, "constant", rescale_interval=True)
    opt = _optimizer()
    lrs = [g[0] for g in _run(LRMultiplier(opt, cosine, max_iter=4), opt, 4)]
    assert lrs == pytest.approx([0.5, 0.5, 1.0, 0.5])
    with pytest.raises(ValueError, match="'linear' or 'constant'"):
        WarmupParamScheduler(steps, 0.1, 0.2, "cubic")


def test_coco_schedules_of_python_configs():
    """configs/common/coco_schedule.py, Detectron2's `lr_multiplier_Nx` for Python configs."""
    from d2mask.config import LazyConfig, instantiate
    from tests.common import REPO

    schedules = LazyConfig.load(os.path.join(REPO, "configs/common/coco_schedule.py"))
    one_x = instantiate(schedules.lr_multiplier_1x)
    # linear warm-up over 1000 of 90k iterations from 0.001, x0.1 at 60k, x0.01 at 80k
    at = [0, 500, 1000, 59999, 60000, 79999, 80000, 89999]
    assert [one_x(i / 90000) for i in at] == pytest.approx([0.001, 0.5005, 1, 1, 0.1, 0.1, 0.01, 0.01])
    three_x = instantiate(schedules.lr_multiplier_3x)  # 270k iterations, decayed at 210k and 250k
    assert [three_x(i / 270000) for i in (209999, 210000, 249999, 250000)] == pytest.approx([1, 0.1, 0.1, 0.01])
