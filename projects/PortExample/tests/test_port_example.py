"""The PortExample project: its blocks and heads by hand, and its own train_net.py run as a user runs
it, from another directory, reaching the package through d2mask.projects."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from d2mask.config import get_cfg
from d2mask.layers import ShapeSpec
from d2mask.modeling import build_backbone, build_proposal_generator, build_roi_heads
from d2mask.projects.port_example import MinGTSizeROIHeads, MinGTSizeRPN, SEBasicBlock, add_port_example_config
from d2mask.structures import Boxes, Instances
from tests.common import REPO

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(HERE, "configs", "mask_rcnn_SE_R_18_FPN_shapes.yaml")


def project_cfg(*overrides):
    cfg = get_cfg()
    add_port_example_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *overrides])
    return cfg


def test_se_block_with_a_constant_gate_by_hand():
    torch.manual_seed(0)
    block = SEBasicBlock(4, 8, stride=2, norm="", se_reduction=4)
    assert block.se_reduce.weight.shape == (2, 8, 1, 1) and block.stride == 2
    with torch.no_grad():  # gate = sigmoid(0) = 1/2 for every channel
        block.se_expand.weight.zero_()
        block.se_expand.bias.zero_()
    x = torch.randn(2, 4, 6, 6)
    residual = block.conv2(F.relu(block.conv1(x)))
    expected = F.relu(0.5 * residual + block.shortcut(x))
    torch.testing.assert_close(block(x), expected)
    assert block(x).shape == (2, 8, 3, 3)


def test_backbone_and_heads_built_from_the_project_config():
    cfg = project_cfg()
    backbone = build_backbone(cfg)
    assert isinstance(backbone.bottom_up.res3[0], SEBasicBlock) and backbone.bottom_up.res3[0].se_reduce.out_channels == 32
    shapes = backbone.output_shape()
    assert isinstance(build_proposal_generator(cfg, shapes), MinGTSizeRPN)
    assert isinstance(build_roi_heads(cfg, shapes), MinGTSizeROIHeads)


def _gt(boxes):
    return Instances((64, 64), gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                     gt_classes=torch.zeros(len(boxes), dtype=torch.int64))


@pytest.mark.parametrize("min_gt_size, positives", [(0.0, True), (8.0, False)])
def test_small_gt_boxes_are_left_out_of_the_targets(min_gt_size, positives):
    cfg = project_cfg("MODEL.MIN_GT_SIZE", str(min_gt_size))
    shapes = {f"p{i}": ShapeSpec(channels=64, stride=2**i) for i in range(2, 7)}
    rpn = build_proposal_generator(cfg, shapes)
    anchors = rpn.anchor_generator([torch.zeros(1, 64, 64 // 2**i, 64 // 2**i) for i in range(2, 7)])
    tiny = [[20.0, 20.0, 26.0, 40.0]]  # 6 px wide
    labels, _ = rpn.label_and_sample_anchors(anchors, [_gt(tiny)])
    assert bool((labels[0] == 1).any()) == positives
    heads = build_roi_heads(cfg, shapes)
    proposals = Instances((64, 64), proposal_boxes=Boxes(torch.tensor(tiny)), objectness_logits=torch.zeros(1))
    (sampled,) = heads.label_and_sample_proposals([proposals], [_gt(tiny)])
    assert bool((sampled.gt_classes == 0).any()) == positives  # class 0 is foreground, 3 background


def test_train_net_runs_from_another_directory(tmp_path):
    """Two iterations and the final evaluation, with the tiny shapes datasets of the tools' tests."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "train_net.py"), "--config-file", CONFIG,
         "IMPORTS", "['tests.tools.tiny_shapes']", "DATASETS.TRAIN", "('train_net_tiny_train',)",
         "DATASETS.TEST", "('train_net_tiny_val',)", "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96",
         "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96", "SOLVER.IMS_PER_BATCH", "2",
         "SOLVER.WARMUP_ITERS", "1", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "TEST.EVAL_PERIOD", "0",
         "MODEL.DEVICE", "cpu", f"OUTPUT_DIR={out}", f"DATASETS.ROOT={tmp_path / 'datasets'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Evaluation of train_net_tiny_val, segm" in proc.stdout + proc.stderr
    weights = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert "backbone.bottom_up.res2.0.se_reduce.weight" in weights
    assert "MIN_GT_SIZE: 8.0" in (out / "config.yaml").read_text()
