"""tools/train_net.py and tools/plot_metrics.py, run as a user runs them, on the quick-start config."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from d2mask.config import ConfigError
from tests.common import REPO, load_script

CONFIG = "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml"

# The quick-start model on 96-pixel images of 8 training / 3 validation images: seconds per run.
TINY = [
    "IMPORTS=['tests.tools.tiny_shapes']", "DATASETS.TRAIN=('train_net_tiny_train',)",
    "DATASETS.TEST=('train_net_tiny_val',)", "INPUT.MIN_SIZE_TRAIN=(96,)", "INPUT.MAX_SIZE_TRAIN=96",
    "INPUT.MIN_SIZE_TEST=96", "INPUT.MAX_SIZE_TEST=96", "SOLVER.IMS_PER_BATCH=2", "SOLVER.WARMUP_ITERS=2",
    "SOLVER.STEPS=(4,)", "SOLVER.CHECKPOINT_PERIOD=2", "TEST.EVAL_PERIOD=0", "DATALOADER.NUM_WORKERS=0",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN=100", "MODEL.RPN.POST_NMS_TOPK_TEST=50", "MODEL.DEVICE=cpu",
    # an untrained model scores low: keep its detections, so that both box and mask AP are computed
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0",
]


def _run(*args, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _evaluation_lines(text):
    return re.findall(r"Evaluation of train_net_tiny_val, (?:bbox|segm): .*", text)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short quick-start run: (output dir, its stdout)."""
    root = tmp_path_factory.mktemp("train_net")
    out = root / "out"
    proc = _run("--config-file", CONFIG, *TINY, "SOLVER.MAX_ITER=6", f"OUTPUT_DIR={out}",
                f"DATASETS.ROOT={root / 'datasets'}")
    return out, proc.stdout


def test_quick_start_run_writes_every_output(trained):
    out, stdout = trained
    for name in ("config.yaml", "log.txt", "metrics.json", "last_checkpoint", "model_0000001.pth",
                 "model_0000003.pth", "model_final.pth", "losses.png", "lr.png", "ap.png",
                 "inference/coco_instances_results.json"):
        assert (out / name).is_file(), name
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    # the datasets were generated where DATASETS.ROOT says
    assert os.listdir(out.parent / "datasets" / "shapes")
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert records[-1]["iteration"] == 6 and "bbox/AP" in records[-1] and "segm/AP" in records[-1]
    assert {"total_loss", "loss_rpn_cls", "loss_mask", "lr", "time", "data_time"} <= set(records[-2])
    # the console shows the progress line and both APs
    assert re.search(r"iter: 5 .*loss_mask: .*lr: .*max_mem: ", stdout)
    assert len(_evaluation_lines(stdout)) == 2


def test_eval_only_reproduces_the_final_evaluation(trained):
    out, stdout = trained
    proc = _run("--config-file", str(out / "config.yaml"), "--eval-only", f"MODEL.WEIGHTS={out / 'model_final.pth'}",
                f"OUTPUT_DIR={out / 'eval'}")
    assert _evaluation_lines(proc.stdout) == _evaluation_lines(stdout)


def test_resume_continues_to_the_uninterrupted_weights(trained, tmp_path):
    out, _ = trained
    datasets = f"DATASETS.ROOT={out.parent / 'datasets'}"
    # stopped after iteration 3 (its final checkpoint), then resumed to iteration 5
    first = _run("--config-file", CONFIG, *TINY, "SOLVER.MAX_ITER=4", "DATASETS.TEST=()", f"OUTPUT_DIR={tmp_path}",
                 datasets)
    second = _run("--config-file", CONFIG, "--resume", *TINY, "SOLVER.MAX_ITER=6", "DATASETS.TEST=()",
                  f"OUTPUT_DIR={tmp_path}", datasets)
    assert "Starting training from iteration 0" in first.stdout
    assert "Starting training from iteration 4" in second.stdout
    full = torch.load(out / "model_final.pth", weights_only=True)
    resumed = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert resumed["iteration"] == full["iteration"] == 5
    for name, value in full["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


# Passes when both results with test-time augmentation exist and are numbers.
EXPECT_TTA = "TEST.EXPECTED_RESULTS=[['bbox_TTA', 'AP', 50.0, 100.0], ['segm_TTA', 'AP', 50.0, 100.0]]"


def test_eval_only_with_test_time_augmentation_adds_the_TTA_results(trained):
    out, stdout = trained
    proc = _run("--config-file", str(out / "config.yaml"), "--eval-only", f"MODEL.WEIGHTS={out / 'model_final.pth'}",
                f"OUTPUT_DIR={out / 'eval_tta'}", "TEST.AUG.ENABLED=True", "TEST.AUG.MIN_SIZES=(80, 112)",
                "TEST.AUG.MAX_SIZE=200", EXPECT_TTA)
    lines = _evaluation_lines(proc.stdout)
    # the plain evaluation as before, then the one with TTA
    assert len(lines) == 4 and lines[:2] == _evaluation_lines(stdout)
    assert "Running inference with test-time augmentation" in proc.stdout
    assert "Result verification (TEST.EXPECTED_RESULTS) passed" in proc.stdout
    assert (out / "eval_tta" / "inference_TTA" / "coco_instances_results.json").is_file()


def test_training_with_test_time_augmentation_records_both_final_evaluations(trained, tmp_path):
    out, _ = trained
    # one size, the test size, without flip: TTA sees what the model sees, so its AP is the model's
    _run("--config-file", CONFIG, *TINY, "SOLVER.MAX_ITER=2", f"OUTPUT_DIR={tmp_path}",
         f"DATASETS.ROOT={out.parent / 'datasets'}", "TEST.AUG.ENABLED=True", "TEST.AUG.MIN_SIZES=(96,)",
         "TEST.AUG.FLIP=False", EXPECT_TTA)
    final = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()][-1]
    assert final["iteration"] == 2
    for task in ("bbox", "segm"):
        assert final[f"{task}_TTA/AP"] == final[f"{task}/AP"]


def _plot_metrics(run_dir, records, out):
    """Runs tools/plot_metrics.py on a metrics.json of `records`; {png name: bytes} of what it wrote."""
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = subprocess.run([sys.executable, "tools/plot_metrics.py", str(run_dir), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == sorted(str(out / n) for n in os.listdir(out))
    return {name: (out / name).read_bytes() for name in os.listdir(out)}


def test_plot_metrics_tool_draws_each_series_in_its_plot(trained, tmp_path):
    out, _ = trained
    proc = subprocess.run([sys.executable, "tools/plot_metrics.py", str(out), "--out", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "run")) == ["ap.png", "losses.png", "lr.png"]

    # Two runs that differ only in their learning rates: only lr.png differs. Without AP, no ap.png.
    losses = [{"iteration": i, "total_loss": 2.0 / (i + 1), "loss_cls": 1.0 / (i + 1)} for i in range(5)]
    a = _plot_metrics(tmp_path / "a", [dict(r, lr=0.01) for r in losses], tmp_path / "a_png")
    b = _plot_metrics(tmp_path / "b", [dict(r, lr=0.01 * (r["iteration"] + 1)) for r in losses], tmp_path / "b_png")
    assert sorted(a) == sorted(b) == ["losses.png", "lr.png"]
    assert a["losses.png"] == b["losses.png"] and a["lr.png"] != b["lr.png"]


def test_config_mistake_is_one_clear_line():
    proc = _run("--config-file", CONFIG, "SOLVER.MAX_ITERS=5", "--resume", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ConfigError: Unknown config key SOLVER.MAX_ITERS")
    assert "Traceback" not in proc.stderr


class _DataLoading(Exception):
    """Stops a start-up where the trainer would load its training data."""


def test_start_up_builds_the_model_on_the_meta_device_once_and_before_any_data(tmp_path, monkeypatch):
    """The launcher, default_setup and DefaultTrainer each validate the config, as each may be used
    alone; the model is built on the meta device for the first only, and its constructors' checks
    come before the training data is loaded."""
    from d2mask.engine import DefaultTrainer, validation

    events = []
    build_on_meta = validation._model_problems
    monkeypatch.setattr(validation, "_model_problems", lambda cfg: events.append("meta build") or build_on_meta(cfg))
    monkeypatch.setattr(validation, "_last_passed", "")

    def build_train_loader(cls, cfg):
        events.append("data")
        raise _DataLoading

    monkeypatch.setattr(DefaultTrainer, "build_train_loader", classmethod(build_train_loader))
    train_net = load_script("tools/train_net.py")
    parse = train_net.default_argument_parser().parse_args

    with pytest.raises(_DataLoading):
        train_net.launch_main(parse(["--config-file", CONFIG, *TINY, f"OUTPUT_DIR={tmp_path / 'ok'}"]))
    assert events == ["meta build", "data"]

    for bad, message in [
        ("MODEL.ROI_HEADS.POSITIVE_FRACTION=1.5", "MODEL.ROI_HEADS.POSITIVE_FRACTION must be in"),  # the sampler's
        # the schedule's name is left to the builder (a project's may know others), checked before launching
        ("SOLVER.LR_SCHEDULER_NAME=Nope", "SOLVER.LR_SCHEDULER_NAME = 'Nope' is not a name d2mask's build_lr_scheduler"),
    ]:
        events.clear()
        with pytest.raises(ConfigError, match=message) as e:
            train_net.launch_main(parse(["--config-file", CONFIG, *TINY, bad, f"OUTPUT_DIR={tmp_path / 'bad'}"]))
        assert events == ["meta build"] and "\n" not in str(e.value) and not (tmp_path / "bad").exists()
