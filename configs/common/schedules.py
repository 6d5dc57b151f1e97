"""Learning-rate schedules, stepped once per iteration. The training script sets `optimizer`.

Both warm up linearly over `warmup_iters` from `warmup_factor` times the optimiser's rate.
"""
from d2mask.config import LazyCall as L
from d2mask.solver import WarmupCosineLR, WarmupMultiStepLR

# Detectron2's "1x" schedule (90k iterations at 16 images per batch): x0.1 at 60k and 80k.
multistep = L(WarmupMultiStepLR)(
    milestones=[60000, 80000],
    gamma=0.1,
    warmup_factor=0.001,
    warmup_iters=1000,
    warmup_method="linear",
)

# Decays to `end_factor` times the rate at the config's `train.max_iter`.
cosine = L(WarmupCosineLR)(
    max_iters="${train.max_iter}",
    warmup_factor=0.001,
    warmup_iters=1000,
    warmup_method="linear",
    end_factor=0.0,
)
