"""The quick-start configs (Mask R-CNN on the COCO-like shapes; Cascade Mask R-CNN, RetinaNet and keypoint
R-CNN) train through tools/train_net.py and learn: a short run on three tiny shapes images (the small
overfit case) lowers the losses and, on the simple shapes, detects those images' shapes well."""
import json
import os
import re
import subprocess
import sys

from d2mask.data import DatasetCatalog
from tests.common import REPO
from tests.tools import tiny_shapes

# Train and evaluate on the same 3 images of 96 pixels (tests/tools/tiny_shapes.py).
OVERFIT = [
    "IMPORTS=['tests.tools.tiny_shapes']", "DATASETS.TRAIN=('train_net_tiny_val',)",
    "DATASETS.TEST=('train_net_tiny_val',)", "INPUT.MIN_SIZE_TRAIN=(96,)", "INPUT.MAX_SIZE_TRAIN=96",
    "INPUT.MIN_SIZE_TEST=96", "INPUT.MAX_SIZE_TEST=96", "INPUT.RANDOM_FLIP=none", "SOLVER.IMS_PER_BATCH=2",
    "SOLVER.WARMUP_ITERS=2", "SOLVER.STEPS=(1000,)", "SOLVER.CHECKPOINT_PERIOD=1000",
    "TEST.EVAL_PERIOD=0", "DATALOADER.NUM_WORKERS=0", "MODEL.DEVICE=cpu",
]
CASCADE = ["MODEL.RPN.POST_NMS_TOPK_TRAIN=100", "MODEL.RPN.POST_NMS_TOPK_TEST=50"]


def _train(config, iterations, overrides, tmp_path, dataset="train_net_tiny_val"):
    """Trains `iterations` iterations; returns the metrics.json records of the losses (medians over
    iterations 0-19, 20-39, ...) and {task: AP50} of the final evaluation."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    overfit = [o.replace("train_net_tiny_val", dataset) for o in OVERFIT]
    args = ["--config-file", config, *overfit, f"SOLVER.MAX_ITER={iterations}", *overrides, f"OUTPUT_DIR={tmp_path / 'out'}",
            f"DATASETS.ROOT={tmp_path / 'datasets'}"]
    proc = subprocess.run([sys.executable, "tools/train_net.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.json").read_text().splitlines()]
    losses = [r for r in records if "total_loss" in r]
    assert [r["iteration"] for r in losses] == list(range(19, iterations, 20))
    ap50 = {task: float(v) for task, v in re.findall(rf"Evaluation of {dataset}, (\w+): AP \S+  AP50 (\S+)", proc.stdout)}
    return losses, ap50


def test_mask_rcnn_quick_start_learns_on_coco_like_shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path / "datasets"))  # where _train generates it too
    segmentations = [a["segmentation"] for r in DatasetCatalog.get(tiny_shapes.COCO_LIKE) for a in r["annotations"]]
    assert any(isinstance(s, dict) for s in segmentations) and any(isinstance(s, list) for s in segmentations)
    losses, ap50 = _train("configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml", 60, CASCADE, tmp_path,
                          dataset=tiny_shapes.COCO_LIKE)
    first, last = losses[0], losses[-1]
    # the mask loss falls more slowly on visible parts cut by occlusion (0.68 -> 0.59 over these iterations)
    assert last["loss_rpn_cls"] < 0.5 * first["loss_rpn_cls"] and last["loss_cls"] < 0.8 * first["loss_cls"]
    assert last["loss_mask"] < 0.95 * first["loss_mask"]
    assert set(ap50) == {"bbox", "segm"}


def test_retinanet_quick_start_learns(tmp_path):
    losses, ap50 = _train("configs/Shapes/retinanet_R_18_FPN_shapes.yaml", 40, [], tmp_path)
    first, last = losses[0], losses[-1]
    assert last["loss_cls"] < 0.8 * first["loss_cls"] and last["loss_box_reg"] < first["loss_box_reg"]
    # an untrained model scores ~0 here
    assert ap50["bbox"] > 50


def test_cascade_mask_rcnn_quick_start_learns(tmp_path):
    losses, ap50 = _train("configs/Shapes/cascade_mask_rcnn_R_18_FPN_shapes.yaml", 60, CASCADE, tmp_path)
    first, last = losses[0], losses[-1]
    # The box-regression losses are divided by all sampled regions, so they grow while the RPN and the
    # earlier stages learn to bring more boxes above each stage's IoU threshold; the RPN objectness
    # and the mask loss (a mean over foreground pixels) do not depend on that share.
    assert last["loss_rpn_cls"] < 0.5 * first["loss_rpn_cls"]
    assert last["loss_mask"] < first["loss_mask"]
    assert {f"loss_{kind}_stage{k}" for kind in ("cls", "box_reg") for k in range(3)} <= set(last)
    assert ap50["bbox"] > 50 and ap50["segm"] > 25


def test_keypoint_rcnn_quick_start_learns(tmp_path):
    losses, ap50 = _train("configs/Shapes/keypoint_rcnn_R_18_FPN_shapes.yaml", 60, CASCADE, tmp_path,
                          dataset="train_net_tiny_keypoints_val")
    first, last = losses[0], losses[-1]
    assert last["loss_keypoint"] < 0.8 * first["loss_keypoint"]
    assert last["loss_rpn_cls"] < 0.5 * first["loss_rpn_cls"]
    # an untrained model scores ~0 on both
    assert ap50["bbox"] > 50 and ap50["keypoints"] > 30
