"""Builds the optimiser (with per-parameter-kind hyper-parameters and gradient clipping) and the
learning-rate schedule from `cfg.SOLVER`."""
import logging
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Type

import torch
from torch import nn

from ..config import ConfigError
from ..utils.registry import did_you_mean
from .lr_scheduler import WarmupCosineLR, WarmupMultiStepLR

__all__ = [
    "get_default_optimizer_params",
    "maybe_add_gradient_clipping",
    "add_gradient_clipping",
    "build_optimizer",
    "build_lr_scheduler",
    "check_solver_names",
]

# The names that d2mask's builders read, with the builder reading each and the values it knows. A
# project's Trainer that overrides build_optimizer or build_lr_scheduler reads the key itself and may
# know more (Detectron2's Panoptic-DeepLab adds the optimizer "ADAM", DeepLab the schedule "WarmupPolyLR").
_SOLVER_NAMES = {
    "SOLVER.OPTIMIZER": ("build_optimizer", ("SGD", "AdamW")),
    "SOLVER.LR_SCHEDULER_NAME": ("build_lr_scheduler", ("WarmupMultiStepLR", "WarmupCosineLR")),
}

_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def get_default_optimizer_params(
    model: nn.Module,
    base_lr: Optional[float] = None,
    weight_decay: Optional[float] = None,
    weight_decay_norm: Optional[float] = None,
    bias_lr_factor: Optional[float] = 1.0,
    weight_decay_bias: Optional[float] = None,
    lr_factor_func: Optional[Callable[[str], float]] = None,
    overrides: Optional[Dict[str, Dict[str, float]]] = None,
) -> List[Dict[str, Any]]:
    """Parameter groups with per-parameter hyper-parameters, as Detectron2 gives them.

    Each trainable parameter (a shared one once) gets `base_lr` and `weight_decay` where given (else
    the optimiser's own); then the parameters of normalisation layers (BN, GN, LN, ...) get
    `weight_decay_norm` where given; the learning rate is multiplied by `lr_factor_func(name)`; and
    last the `overrides` of the parameter's own name apply. `bias_lr_factor` and `weight_decay_bias`
    are an override of "bias": every parameter named so, a norm's too, trains with
    `base_lr * bias_lr_factor` and `weight_decay_bias`.

    Args:
        model: the model; parameters with `requires_grad=False` are left out.
        base_lr: the learning rate of every parameter, or None for the optimiser's.
        weight_decay: the weight decay of every parameter, or None for the optimiser's.
        weight_decay_norm: the weight decay of normalisation layers' parameters, or None.
        bias_lr_factor: multiplies the learning rate of biases (needs `base_lr` unless 1).
        weight_decay_bias: the weight decay of biases, or None.
        lr_factor_func: maps a parameter's full name ("backbone.blocks.3.attn.qkv.weight") to a
            factor on its learning rate, e.g. ViTDet's layer-wise decay (needs `base_lr`).
        overrides: {parameter name: {"lr": ..., "weight_decay": ...}}, by the name within its
            module ("bias", "pos_embed").

    Returns:
        One group per distinct set of hyper-parameters, in the order of first appearance:
        [{"params": [...], "lr": ..., "weight_decay": ...}] (only the keys that were set).
    """
    overrides = dict(overrides or {})
    defaults = {k: v for k, v in (("lr", base_lr), ("weight_decay", weight_decay)) if v is not None}
    bias_overrides = {}
    if bias_lr_factor is not None and bias_lr_factor != 1.0:
        if base_lr is None:
            raise ValueError("get_default_optimizer_params: bias_lr_factor needs base_lr")
        bias_overrides["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_overrides["weight_decay"] = weight_decay_bias
    if bias_overrides:
        if "bias" in overrides:
            raise ValueError("get_default_optimizer_params: overrides['bias'] conflicts with bias_lr_factor / weight_decay_bias")
        overrides["bias"] = bias_overrides
    if lr_factor_func is not None and base_lr is None:
        raise ValueError("get_default_optimizer_params: lr_factor_func needs base_lr")

    groups: Dict[Tuple, Dict[str, Any]] = {}
    seen: Set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            hyperparams = dict(defaults)
            if isinstance(module, _NORM_TYPES) and weight_decay_norm is not None:
                hyperparams["weight_decay"] = weight_decay_norm
            if lr_factor_func is not None:
                hyperparams["lr"] *= lr_factor_func(f"{module_name}.{name}" if module_name else name)
            hyperparams.update(overrides.get(name, {}))
            key = tuple(sorted(hyperparams.items()))
            groups.setdefault(key, {"params": [], **hyperparams})["params"].append(param)
    return list(groups.values())


def _clipper(clip_type: str, clip_value: float, norm_type: float) -> Callable[[List[torch.Tensor]], None]:
    if clip_type == "value":
        return lambda params: torch.nn.utils.clip_grad_value_(params, clip_value)
    if clip_type == "norm":

        def clip_each(params: List[torch.Tensor]) -> None:
            # Detectron2's "norm" clipping bounds each parameter's gradient norm on its own
            for p in params:
                torch.nn.utils.clip_grad_norm_(p, clip_value, norm_type)

        return clip_each
    raise ConfigError(
        f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE / train.clip_gradients.clip_type must be 'value' or 'norm', got '{clip_type}'"
    )


def maybe_add_gradient_clipping(cfg, optimizer_cls: Type[torch.optim.Optimizer]) -> Type[torch.optim.Optimizer]:
    """`optimizer_cls`, or `add_gradient_clipping` of it as SOLVER.CLIP_GRADIENTS says when enabled."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return optimizer_cls
    return add_gradient_clipping(optimizer_cls, clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE)


def add_gradient_clipping(
    optimizer_cls: Type[torch.optim.Optimizer], clip_type: str, clip_value: float, norm_type: float = 2.0
) -> Type[torch.optim.Optimizer]:
    """A subclass of `optimizer_cls` that clips gradients at the start of `step()`. Clipping inside
    `step()` sees unscaled gradients under AMP too, since GradScaler unscales them before it calls
    `step()`.

    Args:
        clip_type: "value" clamps each gradient element to [-clip_value, clip_value]; "norm"
            rescales each parameter's gradient to a `norm_type`-norm of at most `clip_value`.
    """
    clipper = _clipper(clip_type, clip_value, norm_type)

    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        clipper(params)
        return optimizer_cls.step(self, closure)

    return type(optimizer_cls.__name__ + "WithGradientClip", (optimizer_cls,), {"step": step})


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW, chosen by SOLVER.OPTIMIZER, over
    `get_default_optimizer_params` groups, with gradient clipping when enabled."""
    solver = cfg.SOLVER
    name = _known_name(cfg, "SOLVER.OPTIMIZER")
    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
    )
    if name == "SGD":
        cls = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
        return cls(params, lr=solver.BASE_LR, momentum=solver.MOMENTUM, nesterov=solver.NESTEROV)
    cls = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
    return cls(params, lr=solver.BASE_LR)


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule named by SOLVER.LR_SCHEDULER_NAME, stepped once per iteration."""
    solver = cfg.SOLVER
    name = _known_name(cfg, "SOLVER.LR_SCHEDULER_NAME")
    warmup = dict(
        warmup_factor=solver.WARMUP_FACTOR, warmup_iters=solver.WARMUP_ITERS, warmup_method=solver.WARMUP_METHOD
    )
    if name == "WarmupMultiStepLR":
        steps = [s for s in solver.STEPS if s <= solver.MAX_ITER]
        if len(steps) != len(solver.STEPS):
            logging.getLogger(__name__).warning(
                f"SOLVER.STEPS {list(solver.STEPS)} has steps beyond SOLVER.MAX_ITER={solver.MAX_ITER}; they never apply"
            )
        return WarmupMultiStepLR(optimizer, steps, gamma=solver.GAMMA, **warmup)
    end_factor = solver.BASE_LR_END / solver.BASE_LR if solver.BASE_LR > 0 else 0.0
    return WarmupCosineLR(optimizer, solver.MAX_ITER, end_factor=end_factor, **warmup)


def _known_name(cfg, key: str) -> str:
    """The value of `key`, one of `_SOLVER_NAMES`, if its builder knows it.

    Raises:
        ConfigError: one line naming the key, the value, the names known and the nearest of them.
    """
    builder, known = _SOLVER_NAMES[key]
    name = cfg.SOLVER[key.split(".")[-1]]
    if name not in known:
        raise ConfigError(
            f"{key} = {name!r} is not a name d2mask's {builder} knows ({' or '.join(map(repr, known))})."
            f"{did_you_mean(str(name), known)} A project's Trainer builds other names by overriding {builder}."
        )
    return name


def check_solver_names(cfg) -> None:
    """Refuses SOLVER.OPTIMIZER and SOLVER.LR_SCHEDULER_NAME as `build_optimizer` and
    `build_lr_scheduler` would, for a script whose trainer builds with them to call before it writes
    or loads anything (the builders check their own key when they run).

    Raises:
        ConfigError: one line naming the first unknown name, as the builder would.
    """
    for key in _SOLVER_NAMES:
        _known_name(cfg, key)
