"""A project's Trainer that builds an optimizer and a schedule of its own, as Detectron2's projects do
(Panoptic-DeepLab's `build_optimizer` adds SOLVER.OPTIMIZER "ADAM", DeepLab's `build_lr_scheduler`
adds "WarmupPolyLR"): its names pass d2mask's start-up checks and train through its own
train_net-like `main`, while d2mask's builders, which it falls back to, still refuse a name that no
builder knows, before any data is loaded or OUTPUT_DIR is created."""
import pytest
import torch

from d2mask.config import ConfigError, get_cfg
from d2mask.engine import DefaultTrainer, default_argument_parser, default_setup
from d2mask.solver import get_default_optimizer_params

CONFIG = "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml"
# The quick-start model on the 96-pixel images of tests/tools/tiny_shapes.py, two iterations.
TINY = [
    "IMPORTS", "['tests.tools.tiny_shapes']", "DATASETS.TRAIN", "('train_net_tiny_train',)", "DATASETS.TEST", "()",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96", "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.BASE_LR", "0.001", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "MODEL.DEVICE", "cpu",
]


def add_poly_project_config(cfg):
    """The project's keys and defaults, added before its config file is merged."""
    cfg.SOLVER.OPTIMIZER = "ADAM"
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.POLY_LR_POWER = 0.9


class Trainer(DefaultTrainer):
    @classmethod
    def build_optimizer(cls, cfg, model):
        if cfg.SOLVER.OPTIMIZER == "ADAM":
            params = get_default_optimizer_params(model, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
            return torch.optim.Adam(params, lr=cfg.SOLVER.BASE_LR)
        return super().build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR":  # lr = BASE_LR * (1 - iter / MAX_ITER) ** power
            return torch.optim.lr_scheduler.PolynomialLR(
                optimizer, total_iters=cfg.SOLVER.MAX_ITER, power=cfg.SOLVER.POLY_LR_POWER
            )
        return super().build_lr_scheduler(cfg, optimizer)


def setup(args):
    cfg = get_cfg()
    add_poly_project_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    return trainer


def test_a_project_trains_with_its_own_optimizer_and_schedule_names(tmp_path):
    args = default_argument_parser().parse_args(
        ["--config-file", CONFIG, *TINY, "OUTPUT_DIR", str(tmp_path / "out"), "DATASETS.ROOT", str(tmp_path / "data")]
    )
    trainer = main(args)
    assert type(trainer.optimizer) is torch.optim.Adam
    lrs = [lr for lr, _ in trainer.storage.history("lr").values()]
    assert lrs == pytest.approx([0.001, 0.001 * 0.5**0.9])  # neither multi-step nor cosine gives 0.000536
    assert (tmp_path / "out" / "model_final.pth").is_file()


class _DataLoading(Exception):
    """Stops a start-up where the trainer would load its training data."""


@pytest.mark.parametrize("key, value, known", [
    ("SOLVER.OPTIMIZER", "Lion", "('SGD' or 'AdamW')"),
    ("SOLVER.LR_SCHEDULER_NAME", "Nope", "('WarmupMultiStepLR' or 'WarmupCosineLR')"),
])
def test_a_name_no_builder_knows_is_refused_before_data_and_output(tmp_path, monkeypatch, key, value, known):
    def build_train_loader(cls, cfg):
        raise _DataLoading

    monkeypatch.setattr(Trainer, "build_train_loader", classmethod(build_train_loader))
    cfg = get_cfg()
    add_poly_project_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list([*TINY, "OUTPUT_DIR", str(tmp_path / "out"), key, value])
    with pytest.raises(ConfigError) as e:
        Trainer(cfg)
    assert str(e.value).startswith(f"{key} = '{value}' is not a name d2mask's ") and known in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
