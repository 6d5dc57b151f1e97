import pytest

from d2mask.config import ConfigError, get_cfg
from d2mask.solver import auto_scale_workers, epochs_to_iterations


def _cfg():
    cfg = get_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 16
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.MAX_ITER = 9000
    cfg.SOLVER.STEPS = (6000, 8000)
    cfg.SOLVER.WARMUP_ITERS = 1000
    cfg.SOLVER.CHECKPOINT_PERIOD = 3000
    cfg.TEST.EVAL_PERIOD = 4500
    return cfg


def test_auto_scale_workers_halves_the_world():
    cfg = _cfg()
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
    cfg.freeze()
    new = auto_scale_workers(cfg, 4)
    assert new.SOLVER.IMS_PER_BATCH == 8 and new.SOLVER.BASE_LR == pytest.approx(0.01)
    assert new.SOLVER.MAX_ITER == 18000 and new.SOLVER.STEPS == (12000, 16000)
    assert new.SOLVER.WARMUP_ITERS == 2000 and new.SOLVER.CHECKPOINT_PERIOD == 6000
    assert new.TEST.EVAL_PERIOD == 9000 and new.SOLVER.REFERENCE_WORLD_SIZE == 4
    assert new.is_frozen() and cfg.SOLVER.IMS_PER_BATCH == 16  # the input is untouched


def test_auto_scale_workers_unchanged_without_reference():
    cfg = _cfg()
    assert auto_scale_workers(cfg, 4) is cfg
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 3
    with pytest.raises(ConfigError, match="divisible"):
        auto_scale_workers(cfg, 4)


def test_epochs_to_iterations_by_hand():
    cfg = _cfg()
    cfg.SOLVER.MAX_EPOCHS = 2.5
    cfg.SOLVER.STEPS_EPOCHS = (1, 2)
    cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS = 0.5
    cfg.TEST.EVAL_PERIOD_EPOCHS = 1.0
    # 100 images at 16 per iteration: 6.25 iterations per epoch
    new = epochs_to_iterations(cfg, 100)
    assert new.SOLVER.MAX_ITER == 16  # ceil(15.625)
    assert new.SOLVER.STEPS == (6, 12)  # round(6.25), round(12.5) (to even)
    assert new.SOLVER.CHECKPOINT_PERIOD == 3 and new.TEST.EVAL_PERIOD == 6
    assert new.TEST.VAL_LOSS_PERIOD == 0  # not given in epochs: unchanged


def test_epoch_periods_need_max_epochs():
    cfg = _cfg()
    assert epochs_to_iterations(cfg, 100) is cfg
    cfg.TEST.EVAL_PERIOD_EPOCHS = 1.0
    with pytest.raises(ConfigError, match="TEST.EVAL_PERIOD_EPOCHS.*MAX_EPOCHS"):
        epochs_to_iterations(cfg, 100)
    cfg.SOLVER.MAX_EPOCHS = 1.0
    with pytest.raises(ConfigError, match="non-empty"):
        epochs_to_iterations(cfg, 0)
