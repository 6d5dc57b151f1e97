"""tools/lazyconfig_train_net.py, and the Python shapes config against its YAML twin."""
import contextlib
import json
import os
from collections import defaultdict

import pytest
import torch

from fvcore.common.param_scheduler import MultiStepParamScheduler

from d2mask.config import ConfigError, LazyCall as L, LazyConfig, get_cfg, instantiate
from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.datasets.shapes import register_shapes
from d2mask.engine import training
from d2mask.engine.defaults import default_argument_parser
from d2mask.modeling import build_model
from d2mask.solver import WarmupParamScheduler
from d2mask.utils.events import EventStorage, EventWriter
from tests.common import REPO, load_script

YAML_CONFIG = os.path.join(REPO, "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml")
PY_CONFIG = os.path.join(REPO, "configs/Shapes/mask_rcnn_R_18_FPN_shapes.py")
TRAIN, VAL = "lazy_tool_shapes_train", "lazy_tool_shapes_val"


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    """Four training and one validation image of the shapes generator, in a temporary root."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("D2MASK_DATASETS", str(tmp_path_factory.mktemp("datasets")))
        register_shapes(TRAIN, num_images=4, seed=1)
        register_shapes(VAL, num_images=1, seed=2)
        yield
        for name in (TRAIN, VAL):
            DatasetCatalog.pop(name, None)
            MetadataCatalog.remove(name)


@contextlib.contextmanager
def _recording():
    """Yields {iteration: {name: value}}, filled with every scalar the trainer and hooks record."""
    recorded = defaultdict(dict)
    put_scalar = EventStorage.put_scalar

    def record(self, name, value, *args, **kwargs):
        recorded[self.iter][name] = float(value)
        return put_scalar(self, name, value, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EventStorage, "put_scalar", record)
        yield recorded


# 64-pixel images, two per batch, no data workers: seconds on a CPU. A tight gradient clip makes the
# clipping of both configs act from the first step.
YAML_SMALL = [
    "DATASETS.TRAIN", f"('{TRAIN}',)", "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.WARMUP_ITERS", "2", "MODEL.DEVICE", "cpu", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.01",
]
PY_SMALL = [
    f"dataloader.train.dataset.names=['{TRAIN}']", f"dataloader.test.dataset.names=['{VAL}']",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.mapper.augmentations.0.short_edge_length=[64]",
    "dataloader.train.mapper.augmentations.0.max_size=64",
    "dataloader.test.mapper.augmentations.0.short_edge_length=64",
    "dataloader.test.mapper.augmentations.0.max_size=64",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0", "lr_scheduler.warmup_iters=2", "train.device=cpu",
    "train.clip_gradients.clip_value=0.01",
]
NO_EVAL = ["dataloader.evaluator=None"]


def _run(tool, config, overrides, flags=()):
    args = default_argument_parser().parse_args(["--config-file", config, *flags, *overrides])
    return load_script(f"tools/{tool}.py").main(args)


def test_python_shapes_config_builds_the_yaml_model():
    torch.manual_seed(0)
    python_model = instantiate(LazyConfig.load(PY_CONFIG).model)
    cfg = get_cfg()
    cfg.merge_from_file(YAML_CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    yaml_model = build_model(cfg)
    ours, theirs = python_model.state_dict(), yaml_model.state_dict()
    assert list(ours) == list(theirs)
    assert sum(p.numel() for p in python_model.parameters()) == sum(p.numel() for p in yaml_model.parameters())
    # the same modules built in the same order draw the same initial weights
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def _losses(scalars):
    return {k: v for k, v in scalars.items() if k.startswith("loss_") or k in ("total_loss", "lr")}


@pytest.fixture(scope="module")
def python_run(tiny_shapes, tmp_path_factory):
    """Three iterations of the Python shapes config: (output dir, recorded scalars)."""
    out = tmp_path_factory.mktemp("python_run")
    with _recording() as scalars:
        _run("lazyconfig_train_net", PY_CONFIG, PY_SMALL + NO_EVAL + ["train.max_iter=3", f"train.output_dir={out}"])
    return out, dict(scalars)


def test_python_shapes_config_trains_like_its_yaml_twin(python_run, tmp_path):
    out, py_curve = python_run
    with _recording() as yaml_curve:
        _run("train_net", YAML_CONFIG, YAML_SMALL + ["SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(tmp_path)])
    assert sorted(py_curve) == sorted(yaml_curve) == [0, 1, 2]
    for it in range(3):
        expected = _losses(yaml_curve[it])
        assert {"total_loss", "loss_rpn_cls", "loss_mask", "lr"} <= set(expected)
        assert _losses(py_curve[it]) == pytest.approx(expected, rel=1e-5)
    assert yaml_curve[0]["lr"] < yaml_curve[2]["lr"]  # warm-up ran, in both
    saved = LazyConfig.load(str(out / "config.yaml"))  # the run's config dump reloads
    assert saved.train.max_iter == 3 and saved.model.roi_heads.num_classes == 3
    assert (out / "model_final.pth").is_file()


def test_resume_continues_exactly_and_eval_only_evaluates(python_run, tmp_path):
    _, uninterrupted = python_run
    common = PY_SMALL + NO_EVAL + [f"train.output_dir={tmp_path}"]
    _run("lazyconfig_train_net", PY_CONFIG, common + ["train.max_iter=1"])
    with _recording() as resumed:
        _run("lazyconfig_train_net", PY_CONFIG, common + ["train.max_iter=3"], flags=["--resume"])
    assert sorted(resumed) == [1, 2]  # iteration 0 came from the checkpoint
    for it in (1, 2):  # the same images and random draws as without the interruption
        assert _losses(resumed[it]) == pytest.approx(_losses(uninterrupted[it]), rel=1e-5)

    checkpoint = f"train.init_checkpoint={tmp_path / 'model_final.pth'}"
    results = _run("lazyconfig_train_net", PY_CONFIG, PY_SMALL + [checkpoint, f"train.output_dir={tmp_path}"],
                   flags=["--eval-only"])
    assert set(results) == {"bbox", "segm"} and "AP" in results["bbox"]


def _with_lr_multiplier(cfg):
    """`cfg` with Detectron2's `lr_multiplier` (x0.5 warm-up over the first third, x0.1 from two
    thirds of the run) in place of d2mask's `lr_scheduler`."""
    del cfg.lr_scheduler
    steps = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[2], num_updates=3)
    cfg.lr_multiplier = L(WarmupParamScheduler)(scheduler=steps, warmup_length=1 / 3, warmup_factor=0.5)
    return cfg


def test_python_config_trains_with_detectron2s_lr_multiplier(tiny_shapes, tmp_path):
    tool = load_script("tools/lazyconfig_train_net.py")
    args = default_argument_parser().parse_args(
        ["--config-file", PY_CONFIG, *PY_SMALL, *NO_EVAL, "train.max_iter=3", f"train.output_dir={tmp_path}"]
    )
    cfg = _with_lr_multiplier(tool.setup(args))
    with _recording() as scalars:
        tool.do_train(args, cfg)
    # optimizer.lr 0.02 times the multiplier at progress 0, 1/3 and 2/3
    assert [scalars[it]["lr"] for it in range(3)] == pytest.approx([0.01, 0.02, 0.002])


def test_python_config_needs_exactly_one_lr_schedule():
    tool = load_script("tools/lazyconfig_train_net.py")
    both = _with_lr_multiplier(LazyConfig.load(PY_CONFIG))
    both.lr_scheduler = LazyConfig.load(PY_CONFIG).lr_scheduler
    with pytest.raises(ConfigError, match="it has lr_scheduler and lr_multiplier"):
        tool.apply_schedule(both)
    in_epochs = _with_lr_multiplier(LazyConfig.load(PY_CONFIG))
    in_epochs.train.steps_epochs = [1.0]
    with pytest.raises(ConfigError, match="remove train.steps_epochs"):
        tool.apply_schedule(in_epochs)


class _FakeTensorboard(EventWriter):
    """Stands in for TensorboardXWriter (tensorboard may not be installed); remembers its directory."""

    log_dirs = []

    def __init__(self, log_dir):
        self.log_dirs.append(log_dir)

    def write(self):
        pass


def test_python_config_has_the_yaml_training_features(tiny_shapes, tmp_path, monkeypatch):
    """Schedule in epochs, evaluation, best checkpoint, early stopping, validation loss, TensorBoard."""
    monkeypatch.setattr(training, "_tensorboard_available", lambda: True)
    monkeypatch.setattr(training, "TensorboardXWriter", _FakeTensorboard)
    # 4 training images at 2 per batch: 2 iterations per epoch, so 2 epochs are 4 iterations and an
    # evaluation every half epoch is one every iteration. AP does not fall below its first value
    # while training starts, so "min" with a patience of 1 stops at the second evaluation.
    features = ["train.max_epochs=2", "train.eval_period_epochs=0.5", "train.best_metric=bbox/AP",
                "train.best_metric_mode=min", "train.early_stop_patience=1", "train.val_loss_period=2",
                "train.seed=3", f"train.output_dir={tmp_path}"]
    _run("lazyconfig_train_net", PY_CONFIG, PY_SMALL + features)
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records if "bbox/AP" in r] == [0, 1]
    assert [r["iteration"] for r in records if "val_total_loss" in r] == [1]
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 1  # stopped early
    assert torch.load(tmp_path / "model_best.pth", weights_only=True)["iteration"] == 0
    assert _FakeTensorboard.log_dirs == [str(tmp_path)]


def test_python_config_schedule_is_rescaled_to_the_world_size():
    cfg = LazyConfig.load(PY_CONFIG)
    # written for 2 processes, run on 1: half the batch and learning rate, twice the iterations
    cfg.train.reference_world_size = 2
    load_script("tools/lazyconfig_train_net.py").apply_schedule(cfg)
    assert cfg.dataloader.train.total_batch_size == 2 and cfg.optimizer.lr == pytest.approx(0.01)
    assert cfg.train.max_iter == 1400 and list(cfg.lr_scheduler.milestones) == [1000, 1260]
    assert cfg.lr_scheduler.warmup_iters == 200 and cfg.train.checkpointer.period == 500
    assert cfg.train.eval_period == 500 and cfg.train.reference_world_size == 1


def test_python_config_checks_the_model_against_its_data(tiny_shapes, tmp_path):
    too_few = ["model.roi_heads.num_classes=2", "train.max_iter=1", f"train.output_dir={tmp_path}"]
    with pytest.raises(ConfigError) as e:
        _run("lazyconfig_train_net", PY_CONFIG, PY_SMALL + NO_EVAL + too_few)
    message = str(e.value)
    assert "is 2 but the training set ('lazy_tool_shapes_train',) has 3 classes" in message
    assert "model.roi_heads.num_classes=3" in message
    assert not (tmp_path / "model_final.pth").exists()


def test_detectron2s_scripts_give_train_checkpointer_to_the_hook_as_it_is(tmp_path):
    """Detectron2's lazyconfig_train_net.py builds `hooks.PeriodicCheckpointer(checkpointer,
    **cfg.train.checkpointer)`: the dict holds that hook's arguments and nothing else."""
    from d2mask.checkpoint import DetectionCheckpointer
    from d2mask.engine import hooks

    train = LazyConfig.load(os.path.join(REPO, "configs/common/train.py")).train
    hook = hooks.PeriodicCheckpointer(DetectionCheckpointer(torch.nn.Linear(1, 1), str(tmp_path)), **train.checkpointer)
    assert (hook.period, hook.max_to_keep) == (5000, None)
    assert (train.checkpoint_period_epochs, list(train.checkpoint_signals)) == (0.0, ["SIGTERM", "SIGINT"])
