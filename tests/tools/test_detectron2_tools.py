"""Detectron2's tools: plain_train_net.py, visualize_json_results.py and analyze_model.py, run on
the tiny shapes datasets of tiny_shapes.py."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.common import load_script
from tests.tools.test_train_net import REPO, TINY
from tests.tools.tiny_shapes import VAL

CONFIG = os.path.join(REPO, "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml")


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """plain_train_net.py trained 4 iterations and evaluated: (output dir, datasets root, stdout+stderr)."""
    root = tmp_path_factory.mktemp("plain")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "tools/plain_train_net.py", "--config-file", CONFIG, *TINY, "SOLVER.MAX_ITER=4",
         f"OUTPUT_DIR={root / 'out'}", f"DATASETS.ROOT={root / 'datasets'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "out", root / "datasets", proc.stdout + proc.stderr


def test_plain_train_net_trains_checkpoints_and_evaluates(plain_run):
    out, _, log = plain_run
    assert sorted(p for p in os.listdir(out) if p.endswith(".pth")) == ["model_0000001.pth", "model_0000003.pth",
                                                                       "model_final.pth"]
    iterations = [json.loads(line)["iteration"] for line in open(out / "metrics.json")]
    assert iterations[-1] == 3
    assert f"Evaluation results for {VAL}: " in log and "'AP50'" in log


def test_visualize_json_results_draws_predictions_beside_truth(plain_run, tmp_path, monkeypatch):
    out, datasets, _ = plain_run
    monkeypatch.setenv("D2MASK_DATASETS", str(datasets))
    written = load_script("tools/visualize_json_results.py").main(
        ["--input", str(out / "inference" / VAL / "coco_instances_results.json"), "--output", str(tmp_path / "v"),
         "--dataset", VAL, "--conf-threshold", "0.0"])
    assert len(written) == 3
    drawn = cv2.imread(written[0])
    assert drawn.shape == (96, 192, 3)
    assert not np.array_equal(drawn[:, :96], drawn[:, 96:])  # the predictions are not the ground truth


def test_json_results_become_instances():
    tool = load_script("tools/visualize_json_results.py")
    predictions = [{"bbox": [10, 20, 30, 40], "score": 0.9, "category_id": 3},
                   {"bbox": [0, 0, 5, 5], "score": 0.2, "category_id": 1}]
    instances = tool.create_instances(predictions, (100, 120), 0.5, {1: 0, 3: 2}.__getitem__)
    assert len(instances) == 1 and instances.image_size == (100, 120)
    assert instances.pred_boxes.tensor.tolist() == [[10, 20, 40, 60]] and instances.pred_classes.tolist() == [2]
    predictions[0]["keypoints"] = [11, 21, 0.8, 30, 50, 0.01]  # as COCOEvaluator writes them
    keypoints = tool.create_instances(predictions, (100, 120), 0.5, {1: 0, 3: 2}.__getitem__).pred_keypoints
    np.testing.assert_allclose(keypoints, [[[11.5, 21.5, 0.8], [30.5, 50.5, 0.01]]])


def test_analyze_model_reports_all_tasks(tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path))
    results = load_script("tools/analyze_model.py").main(
        ["--config-file", CONFIG, "--tasks", "parameter", "structure", "flop", "activation", "-n", "1", *TINY])
    from d2mask.config import load_config
    from d2mask.modeling import build_model

    model = build_model(load_config(CONFIG, TINY))
    total = sum(p.numel() for p in model.parameters())
    assert f" {total / 1e6:.1f}M " in results["parameter"].splitlines()[2]  # the row of the whole model
    assert "MaskRCNNConvUpsampleHead" in results["structure"]
    assert results["flop"] > 0 and results["activation"] > 0


def test_analyze_model_reads_python_configs():
    config = os.path.join(REPO, "configs/Shapes/mask_rcnn_R_18_FPN_shapes.py")
    # as in Detectron2, the overrides follow a flag that ends --tasks' list
    results = load_script("tools/analyze_model.py").main(["--tasks", "structure", "--config-file", config,
                                               "model.roi_heads.num_classes=5"])
    assert "Linear(in_features=256, out_features=6, bias=True)" in results["structure"]  # 5 classes + background
