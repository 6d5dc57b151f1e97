"""Optimisers. The training script sets `optimizer.params.model` to the model before building.

Parameter groups come from `get_default_optimizer_params`, as with the YAML configs; the group
hyper-parameters follow `lr` and `weight_decay`, so one override changes both.
"""
import torch

from d2mask.config import LazyCall as L
from d2mask.solver import get_default_optimizer_params

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        weight_decay_norm=0.0,
        bias_lr_factor=1.0,
        weight_decay_bias=None,
    ),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
    nesterov=False,
)

# ViTDet's optimiser. Its configs add a layer-wise learning-rate decay:
# `optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)`.
AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(base_lr="${..lr}", weight_decay="${..weight_decay}", weight_decay_norm=0.0),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)
