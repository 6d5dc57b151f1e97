"""The DenseText configs build through the registries and train, in-process and with tools/train_net.py."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from d2mask.config import get_cfg
from d2mask.data import build_detection_train_loader
from d2mask.modeling import Matcher, RandomSampler, build_model
from projects.DenseText.atss_matcher import ATSSMatcher
from tests.common import REPO

CONFIGS = "projects/DenseText/configs"
# 64-pixel images with ~20 objects, a narrow model: one step takes well under a second.
TINY_DATA = "projects.DenseText.tests.tiny_dense"
TINY = [
    "DATASETS.TRAIN=('dense_text_tiny_train',)",
    "DATASETS.TEST=('dense_text_tiny_val',)", "INPUT.MIN_SIZE_TRAIN=(64,)", "INPUT.MAX_SIZE_TRAIN=64",
    "INPUT.MIN_SIZE_TEST=64", "INPUT.MAX_SIZE_TEST=64", "SOLVER.IMS_PER_BATCH=2", "DATALOADER.NUM_WORKERS=0",
    "MODEL.FPN.OUT_CHANNELS=32", "MODEL.ROI_BOX_HEAD.FC_DIM=64", "MODEL.RESNETS.RES2_OUT_CHANNELS=64",
    "MODEL.DEVICE=cpu",
]


@pytest.mark.parametrize(
    "config, matcher_type", [("faster_rcnn_R_18_FPN_dense_atss.yaml", ATSSMatcher), ("faster_rcnn_R_18_FPN_dense_default.yaml", Matcher)]
)
def test_config_builds_and_trains_one_step(config, matcher_type, tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path))
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, CONFIGS, config))
    # IMPORTS given on the command line replace the file's list: keep the file's modules
    cfg.merge_from_list(["IMPORTS", str(cfg.IMPORTS + [TINY_DATA]), *TINY])
    # the dense settings the project is about, as the config file sets them
    assert (cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN) == (512, 1000)
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 300 and cfg.MODEL.RPN.SMOOTH_L1_BETA > 0

    torch.manual_seed(0)
    model = build_model(cfg)
    rpn = model.proposal_generator
    assert type(rpn.anchor_matcher) is matcher_type and type(rpn.sampler) is RandomSampler
    batch = next(iter(build_detection_train_loader(cfg)))
    assert all(len(d["instances"]) >= 10 for d in batch)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    losses = model(batch)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    # predictors start near zero: uniform guesses, log 2 per sampled anchor (512 of each image's,
    # which normalise it) and log(K + 1) per region
    assert losses["loss_rpn_cls"].item() == pytest.approx(math.log(2), rel=2e-3)
    assert losses["loss_cls"].item() == pytest.approx(math.log(cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1), rel=0.05)
    total = sum(losses.values())
    assert torch.isfinite(total)
    before = rpn.rpn_head.anchor_deltas.weight.detach().clone()
    total.backward()
    optimizer.step()
    assert not torch.equal(before, rpn.rpn_head.anchor_deltas.weight)


def test_train_net_runs_the_project_config(tmp_path):
    """The user's command: tools/train_net.py with the project config, nothing copied."""
    out = tmp_path / "out"
    cmd = [
        sys.executable, "tools/train_net.py", "--config-file", f"{CONFIGS}/faster_rcnn_R_18_FPN_dense_atss.yaml",
        f"IMPORTS={[TINY_DATA, 'projects.DenseText.dense_shapes', 'projects.DenseText.atss_matcher']}",
        *TINY, "SOLVER.MAX_ITER=2", "SOLVER.WARMUP_ITERS=1", "SOLVER.STEPS=()", "SOLVER.CHECKPOINT_PERIOD=100",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0", f"OUTPUT_DIR={out}", f"DATASETS.ROOT={tmp_path / 'datasets'}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    # the saved config names the project's modules and keys, so it reloads as it is
    saved = get_cfg()
    saved.merge_from_file(str(out / "config.yaml"))
    assert saved.MODEL.RPN.MATCHER.NAME == "ATSSMatcher" and saved.MODEL.RPN.MATCHER.TOPK == 9
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert "bbox/AP" in records[-1]
