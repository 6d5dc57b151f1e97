"""Detectron2's COCO schedules for Python configs, as `lr_multiplier`: fvcore parameter schedulers
over training progress, which the LRScheduler hook stretches over `train.max_iter`.

    from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
"""
from fvcore.common.param_scheduler import MultiStepParamScheduler

from d2mask.config import LazyCall as L
from d2mask.solver import WarmupParamScheduler


def default_X_scheduler(num_X: float):
    """The multiplier of an "N x" schedule: N times 90k iterations of 16 images (about 12 COCO
    epochs each), x0.1 and x0.01 near the end ("Rethinking ImageNet Pre-training", Sec. 4), after a
    linear warm-up over 1000 iterations from 0.001.

    Args:
        num_X: the schedule's length in units of 90k iterations (> 0).
    """
    total = num_X * 90000
    # up to 2x the steps sit at 2/3 and 8/9 of 1x; longer schedules decay in their last 60k iterations
    milestones = [60000, 80000, 90000] if num_X <= 2 else [total - 60000, total - 20000, total]
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=milestones),
        warmup_length=1000 / total,
        warmup_method="linear",
        warmup_factor=0.001,
    )


lr_multiplier_1x = default_X_scheduler(1)
lr_multiplier_2x = default_X_scheduler(2)
lr_multiplier_3x = default_X_scheduler(3)
lr_multiplier_6x = default_X_scheduler(6)
lr_multiplier_9x = default_X_scheduler(9)
