import pytest
import torch
from torch import nn

from d2mask.config import ConfigError, get_cfg
from d2mask.solver import (
    WarmupCosineLR,
    WarmupMultiStepLR,
    build_lr_scheduler,
    build_optimizer,
    check_solver_names,
    get_default_optimizer_params,
)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # weight + bias
        self.bn = nn.BatchNorm2d(4)  # norm weight + bias
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2, bias=False)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.shared = self.fc  # the same parameters twice


def _groups(params):
    return {(g["lr"], g["weight_decay"]): {id(p) for p in g["params"]} for g in params}


def test_param_groups_by_kind():
    net = Net()
    params = get_default_optimizer_params(
        net, base_lr=1.0, weight_decay=0.1, weight_decay_norm=0.0, bias_lr_factor=2.0, weight_decay_bias=0.5
    )
    groups = _groups(params)
    # As in Detectron2, the bias settings are an override of every parameter named "bias", norms' too.
    assert groups == {
        (1.0, 0.1): {id(net.conv.weight), id(net.fc.weight)},
        (2.0, 0.5): {id(net.conv.bias), id(net.bn.bias), id(net.gn.bias)},
        (1.0, 0.0): {id(net.bn.weight), id(net.gn.weight)},
    }


def test_param_groups_with_lr_factor_func_and_overrides_as_detectron2():
    net = Net()
    params = get_default_optimizer_params(
        net, base_lr=1.0, weight_decay=0.1, lr_factor_func=lambda name: 0.5 if name.startswith("conv.") else 1.0,
        overrides={"weight": {"weight_decay": 0.0}},
    )
    assert _groups(params) == {
        (0.5, 0.0): {id(net.conv.weight)},
        (0.5, 0.1): {id(net.conv.bias)},
        (1.0, 0.0): {id(net.bn.weight), id(net.gn.weight), id(net.fc.weight)},
        (1.0, 0.1): {id(net.bn.bias), id(net.gn.bias)},
    }
    # without base_lr / weight_decay the groups leave them to the optimiser
    (group,) = get_default_optimizer_params(net)
    assert set(group) == {"params"} and len(group["params"]) == 7
    opt = torch.optim.SGD(get_default_optimizer_params(net, weight_decay_norm=0.0), lr=0.3, weight_decay=1e-4)
    assert sorted((g["lr"], g["weight_decay"]) for g in opt.param_groups) == [(0.3, 0.0), (0.3, 1e-4)]
    with pytest.raises(ValueError, match="lr_factor_func needs base_lr"):
        get_default_optimizer_params(net, lr_factor_func=lambda name: 1.0)
    with pytest.raises(ValueError, match="conflicts"):
        get_default_optimizer_params(net, base_lr=1.0, bias_lr_factor=2.0, overrides={"bias": {"lr": 0.0}})


def test_param_groups_defaults_merge_into_one():
    params = get_default_optimizer_params(Net(), base_lr=0.1, weight_decay=0.01)
    assert len(params) == 1 and len(params[0]["params"]) == 7


def _cfg(**solver):
    cfg = get_cfg()
    for k, v in solver.items():
        cfg.SOLVER[k] = v
    return cfg


def test_build_sgd_and_adamw():
    cfg = _cfg(BASE_LR=0.5, MOMENTUM=0.8, NESTEROV=True, WEIGHT_DECAY_NORM=0.0, WEIGHT_DECAY=1e-4)
    opt = build_optimizer(cfg, Net())
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.8 and opt.defaults["nesterov"]
    assert {g["weight_decay"] for g in opt.param_groups} == {1e-4, 0.0}
    opt = build_optimizer(_cfg(OPTIMIZER="AdamW"), Net())
    assert isinstance(opt, torch.optim.AdamW)
    with pytest.raises(ConfigError) as e:
        build_optimizer(_cfg(OPTIMIZER="adam"), Net())
    assert str(e.value) == (
        "SOLVER.OPTIMIZER = 'adam' is not a name d2mask's build_optimizer knows ('SGD' or 'AdamW'). Did you mean "
        "'AdamW'? A project's Trainer builds other names by overriding build_optimizer."
    )


def _grads_after_clip(clip_type, clip_value):
    cfg = _cfg(BASE_LR=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = clip_value
    a = nn.Parameter(torch.zeros(2))
    b = nn.Parameter(torch.zeros(1))
    model = nn.Module()
    model.a, model.b = a, b
    opt = build_optimizer(cfg, model)
    a.grad = torch.tensor([3.0, -4.0])
    b.grad = torch.tensor([0.5])
    opt.step()
    return a.grad, b.grad


def test_gradient_clipping_by_value_and_by_norm():
    ga, gb = _grads_after_clip("value", 1.0)
    assert ga.tolist() == [1.0, -1.0] and gb.tolist() == [0.5]
    # norm clipping bounds each parameter's gradient norm: |(3, -4)| = 5 -> scaled to 1
    ga, gb = _grads_after_clip("norm", 1.0)
    assert ga.tolist() == pytest.approx([0.6, -0.8], rel=1e-4) and gb.tolist() == [0.5]
    with pytest.raises(ConfigError, match="CLIP_TYPE"):
        _grads_after_clip("max", 1.0)


def test_build_lr_schedulers():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = _cfg(STEPS=(10, 50), MAX_ITER=20, WARMUP_ITERS=0)
    sched = build_lr_scheduler(cfg, opt)
    assert isinstance(sched, WarmupMultiStepLR) and sched.milestones == [10]
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupCosineLR", BASE_LR=0.1, BASE_LR_END=0.01, MAX_ITER=20)
    sched = build_lr_scheduler(cfg, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    assert isinstance(sched, WarmupCosineLR) and sched.end_factor == pytest.approx(0.1)
    with pytest.raises(ConfigError, match=r"^SOLVER.LR_SCHEDULER_NAME = 'Step' is not a name d2mask's "
                       r"build_lr_scheduler knows \('WarmupMultiStepLR' or 'WarmupCosineLR'\)\. A project's"):
        build_lr_scheduler(_cfg(LR_SCHEDULER_NAME="Step"), opt)


def test_check_solver_names_refuses_as_the_builders_do():
    check_solver_names(_cfg(OPTIMIZER="AdamW", LR_SCHEDULER_NAME="WarmupCosineLR"))
    for key, value in (("OPTIMIZER", "ADAM"), ("LR_SCHEDULER_NAME", "WarmupPolyLR")):
        with pytest.raises(ConfigError, match=f"^SOLVER.{key} = '{value}' is not a name"):
            check_solver_names(_cfg(**{key: value}))
