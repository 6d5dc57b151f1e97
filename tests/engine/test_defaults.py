import logging
import os
import random

import numpy as np
import pytest
import torch

from d2mask.config import get_cfg
from d2mask.data.datasets import datasets_root, set_datasets_root
from d2mask.engine import default_argument_parser, default_setup


def _parse(*argv):
    return default_argument_parser().parse_args(list(argv))


def test_flags_and_overrides():
    args = _parse("--config-file", "a.yaml", "--num-gpus", "2", "SOLVER.MAX_ITER", "10", "MODEL.DEVICE=cpu")
    assert args.config_file == "a.yaml" and args.num_gpus == 2 and not args.resume
    assert args.opts == ["SOLVER.MAX_ITER", "10", "MODEL.DEVICE=cpu"]
    assert args.dist_url == "auto" and args.num_machines == 1 and args.machine_rank == 0


def test_flags_after_overrides_are_recognised():
    args = _parse("--config-file", "a.yaml", "SOLVER.MAX_ITER", "10", "--resume", "--num-gpus=4", "SEED", "-1",
                  "--eval-only")
    assert args.resume and args.eval_only and args.num_gpus == 4
    assert args.opts == ["SOLVER.MAX_ITER", "10", "SEED", "-1"]


def test_unknown_flag_after_overrides_is_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        _parse("--config-file", "a.yaml", "SOLVER.MAX_ITER", "10", "--resmue")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized flag '--resmue' among the config overrides" in err and "--resume" in err


def test_flag_missing_its_value_is_rejected(capsys):
    with pytest.raises(SystemExit):
        _parse("SOLVER.MAX_ITER", "10", "--num-gpus")
    assert "'--num-gpus' needs a value" in capsys.readouterr().err


def test_scripts_can_add_flags():
    parser = default_argument_parser()
    parser.add_argument("--my-flag", type=int, default=0)
    args = parser.parse_args(["A.B", "1", "--my-flag", "3"])
    assert args.my_flag == 3 and args.opts == ["A.B", "1"]


def test_flags_take_as_many_values_as_their_nargs():
    """A script's flags may take several values (Detectron2's parser is argparse's, which reads them
    all); the overrides around them stay overrides."""
    parser = default_argument_parser()
    parser.add_argument("--input", nargs="+")
    parser.add_argument("--size", nargs=2, type=int)
    parser.add_argument("--tag", nargs="?", const="default")
    parser.add_argument("--offset", type=int)
    args = parser.parse_args(["--input", "a.jpg", "b.jpg", "--tag", "SOLVER.MAX_ITER", "10", "--size", "3", "4",
                              "--offset", "-2", "--tag", "--input", "c.jpg"])
    assert args.input == ["c.jpg"] and args.size == [3, 4] and args.tag == "default" and args.offset == -2
    # argparse's forms: a unique prefix of a flag, "--" ending the flags
    args = parser.parse_args(["--conf", "a.yaml", "--num-g=2", "--", "--input", "x"])
    assert args.config_file == "a.yaml" and args.num_gpus == 2 and args.opts == ["--input", "x"]
    remainder = default_argument_parser()
    remainder.add_argument("--later", nargs="...")
    assert remainder.parse_args(["A", "1", "--later", "B", "--x"]).later == ["B", "--x"]


def test_flag_missing_one_of_its_values_is_rejected(capsys):
    parser = default_argument_parser()
    parser.add_argument("--size", nargs=2, type=int)
    parser.add_argument("--input", nargs="+")
    with pytest.raises(SystemExit):
        parser.parse_args(["--size", "3"])
    assert "'--size' needs 2 values" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--input", "--resume"])
    assert "'--input' needs a value" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # ambiguous: --num-gpus or --num-machines
        parser.parse_args(["--num", "2"])
    assert "unrecognized flag '--num'" in capsys.readouterr().err


def test_default_setup_writes_config_logs_and_seeds(tmp_path, monkeypatch):
    monkeypatch.delenv("D2MASK_DATASETS", raising=False)
    config_file = tmp_path / "in.yaml"
    config_file.write_text("SOLVER:\n  MAX_ITER: 7\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(config_file))
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    cfg.SEED = 123
    cfg.DATASETS.ROOT = str(tmp_path / "datasets")
    cfg.IMPORTS = ["tests.engine.toy"]
    cfg.freeze()
    args = _parse("--config-file", str(config_file))
    try:
        default_setup(cfg, args)
        draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
        logging.getLogger("d2mask.test").info("a line for the log file")
        root = datasets_root()
    finally:
        set_datasets_root(None)
        for name in ("d2mask", "fvcore", "projects"):
            for h in logging.getLogger(name).handlers:
                h.flush()
    out = tmp_path / "out"
    saved = get_cfg()
    saved.merge_from_file(str(out / "config.yaml"))
    assert saved.SOLVER.MAX_ITER == 7 and saved == cfg  # the full merged config, loadable again
    log = (out / "log.txt").read_text()
    assert "a line for the log file" in log and "SOLVER:\n  MAX_ITER: 7" in log
    assert root == str(tmp_path / "datasets") and "D2MASK_DATASETS" not in os.environ
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    assert draws == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_negative_seed_is_drawn_and_logged(tmp_path, caplog):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.SEED = -1
    default_setup(cfg)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    seed_lines = [line for line in lines if "randomly drawn seed" in line]
    assert len(seed_lines) == 1
    seed = int(seed_lines[0].split("seed: ")[1].split()[0])
    first = float(torch.rand(1))
    torch.manual_seed(seed)
    assert float(torch.rand(1)) == first


def test_a_python_config_with_an_object_is_saved_without_it_and_the_warning_names_it(tmp_path):
    from d2mask.config import LazyConfig
    from d2mask.layers import ShapeSpec
    from tests.common import REPO

    cfg = LazyConfig.load(os.path.join(REPO, "configs/Shapes/mask_rcnn_R_18_FPN_shapes.py"))
    cfg.train.output_dir = str(tmp_path)
    cfg.model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=8)  # built in the config: no YAML form
    try:
        default_setup(cfg)
    finally:
        set_datasets_root(None)
    saved = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert "input_shape" not in saved.model.roi_heads.box_predictor and saved.train.max_iter == cfg.train.max_iter
    warnings = [line for line in (tmp_path / "log.txt").read_text().splitlines() if "without the values" in line]
    assert len(warnings) == 1 and "model.roi_heads.box_predictor.input_shape (ShapeSpec" in warnings[0]
