"""tools/visualize_data.py and tools/visualize_predictions.py, run end to end on tiny inputs."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from d2mask.engine import defaults as engine_defaults
from d2mask.config import ConfigError
from d2mask.structures import Boxes, Instances
from tests.common import load_script

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path / "datasets"))
    path = tmp_path / "cfg.yaml"
    path.write_text('MODEL:\n  MASK_ON: True\nDATASETS:\n  TRAIN: ("shapes_val",)\n  TEST: ("shapes_val",)\n'
                    'INPUT:\n  MIN_SIZE_TRAIN: (128,)\n  MIN_SIZE_TEST: 128\n')
    return str(path)


@pytest.mark.parametrize("source", ["dataloader", "annotation"])
def test_visualize_data_writes_drawn_pngs(config, tmp_path, source):
    out = tmp_path / "vis"
    written = load_script("tools/visualize_data.py").main(
        ["--config-file", config, "--output", str(out), "--num-images", "2", "--source", source]
    )
    assert len(written) == 2
    for path in written:
        image = cv2.imread(path)
        size = 128 if source == "dataloader" else 256
        assert image.shape == (size, size, 3)
        # Drawn outlines and labels add colours beyond the flat background and shapes.
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20


class BoxModel(nn.Module):
    """Predicts one box in the middle of the image (score 0.9) and one low-score box (0.1)."""

    def forward(self, batch):
        (inputs,) = batch
        assert inputs["image"].shape[-2:] == (128, 128) and (inputs["height"], inputs["width"]) == (256, 256)
        boxes = torch.tensor([[100.0, 100.0, 156.0, 156.0], [0.0, 0.0, 40.0, 40.0]])
        return [{"instances": Instances((256, 256), pred_boxes=Boxes(boxes), scores=torch.tensor([0.9, 0.1]),
                                        pred_classes=torch.tensor([0, 1]))}]


def test_visualize_predictions_draws_confident_detections(config, tmp_path, monkeypatch):
    tool = load_script("tools/visualize_predictions.py")
    # the tool runs the model through DefaultPredictor
    monkeypatch.setattr(engine_defaults, "build_model", lambda cfg: BoxModel())
    monkeypatch.setattr(engine_defaults, "DetectionCheckpointer",
                        lambda model: type("NoLoad", (), {"load": lambda self, path: {}})())
    image = np.full((256, 256, 3), 90, dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), image)
    (path,) = tool.main(["--config-file", config, "--input", str(tmp_path / "in.png"), "--output", str(tmp_path / "o")])
    drawn = cv2.imread(path)
    changed = np.any(drawn != 90, axis=2)
    assert changed[100:156, 100].all()  # the confident box's left edge
    assert not changed[20, 0:40].any() and not changed[0:40, 20].any()  # the 0.1 box is below the threshold


def test_a_config_mistake_is_one_line_and_exit_status_2(config, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(TOOLS, ".."), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, os.path.join(TOOLS, "visualize_data.py"), "--config-file", config,
         "--output", str(tmp_path / "vis"), "SOLVER.MAX_ITERS", "5"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("ConfigError: Unknown config key SOLVER.MAX_ITERS (on the command line). Did you mean SOLVER.MAX_ITER")


def test_a_python_config_is_refused_with_the_tool_to_use():
    with pytest.raises(ConfigError, match="lazyconfig_train_net"):
        load_script("tools/visualize_data.py").main(["--config-file", "configs/Shapes/mask_rcnn_R_18_FPN_shapes.py", "--output", "x"])
