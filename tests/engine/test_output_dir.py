"""Start-up checks of OUTPUT_DIR: another run's checkpoints, --start-over, --eval-only without weights,
a resumed run whose model changed, a directory that is a file or not writable."""
import os

import pytest
import yaml

from d2mask.config import ConfigError, get_cfg
from d2mask.engine.output_dir import (
    check_eval_weights,
    check_output_dir,
    check_resumed_config,
    config_changes,
    last_checkpoint,
)


def _earlier_run(path, name="model_0000499.pth"):
    path.mkdir(exist_ok=True)
    (path / name).write_bytes(b"weights")
    (path / "last_checkpoint").write_text(name)
    (path / "metrics.json").write_text('{"iteration": 499}\n')


def test_a_new_run_into_another_runs_directory_is_refused_naming_it_and_its_last_iteration(tmp_path):
    _earlier_run(tmp_path)
    with pytest.raises(ConfigError) as e:
        check_output_dir(str(tmp_path), resume=False)
    assert f"OUTPUT_DIR {tmp_path} holds the checkpoints of an earlier run (last: model_0000499.pth, iteration 499)" \
        in str(e.value)
    assert "--resume" in str(e.value) and "--start-over" in str(e.value)
    assert (tmp_path / "metrics.json").read_text() == '{"iteration": 499}\n'
    assert check_output_dir(str(tmp_path), resume=True) is None


def test_start_over_moves_the_earlier_run_into_a_subdirectory(tmp_path):
    _earlier_run(tmp_path)
    moved_to = check_output_dir(str(tmp_path), resume=False, start_over=True)
    assert os.path.dirname(moved_to) == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(moved_to)]
    assert sorted(os.listdir(moved_to)) == ["last_checkpoint", "metrics.json", "model_0000499.pth"]
    assert last_checkpoint(str(tmp_path)) is None
    # a directory without checkpoints (logs of an evaluation) is not another run
    assert check_output_dir(str(tmp_path), resume=False) is None


def test_an_output_dir_that_is_a_file_or_not_writable_is_a_config_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_output_dir(str(tmp_path / "f"), resume=False)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who can write anywhere")
    with pytest.raises(ConfigError, match="not writable|cannot be created"):
        check_output_dir(str(locked / "out"), resume=False)


def test_eval_only_without_weights_is_refused_unless_a_checkpoint_is_resumed(tmp_path):
    with pytest.raises(ConfigError, match="--eval-only needs weights, but MODEL.WEIGHTS is empty"):
        check_eval_weights("", str(tmp_path), resume=False)
    with pytest.raises(ConfigError):
        check_eval_weights("", str(tmp_path), resume=True)  # nothing to resume from
    _earlier_run(tmp_path)
    check_eval_weights("", str(tmp_path), resume=True)
    check_eval_weights("model.pth", str(tmp_path), resume=False)


def test_config_changes_lists_each_changed_leaf():
    old = {"A": {"B": 1, "C": [1, 2]}, "D": "x"}
    new = {"A": {"B": 1, "C": [1, 3]}, "D": "y", "E": 0}
    assert config_changes(old, new) == [("A.C", [1, 2], [1, 3]), ("D", "x", "y"), ("E", None, 0)]


def test_resuming_with_a_changed_model_names_each_changed_key(tmp_path, caplog):
    cfg = get_cfg()
    _earlier_run(tmp_path)
    (tmp_path / "config.yaml").write_text(cfg.dump())
    cfg.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", "5", "MODEL.RESNETS.DEPTH", "101"])
    with pytest.raises(ConfigError) as e:
        check_resumed_config(str(tmp_path), yaml.safe_load(cfg.dump()))
    assert "MODEL.RESNETS.DEPTH: 50 in" in str(e.value) and "now 101" in str(e.value)
    assert "MODEL.ROI_HEADS.NUM_CLASSES: 80 in" in str(e.value) and "now 5" in str(e.value)

    # a longer schedule, or other weights to start from, is no change of the model
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.MAX_ITER", "90000", "MODEL.WEIGHTS", "other.pth"])
    with caplog.at_level("INFO", logger="d2mask"):
        check_resumed_config(str(tmp_path), yaml.safe_load(cfg.dump()))
    assert "SOLVER.MAX_ITER: 40000 -> 90000" in caplog.text
