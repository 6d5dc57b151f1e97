"""The semantic FPN and Panoptic FPN quick-start configs train through tools/train_net.py and learn on
the small overfit case of test_train_net_models.py (three tiny shapes images), evaluated by the
evaluators their datasets' evaluator_type names (for Panoptic FPN: mIoU, box and mask AP, PQ)."""
import json
import os
import re
import subprocess
import sys

from tests.common import REPO
from tests.tools.test_train_net_models import OVERFIT

VIEWS = ["IMPORTS=['tests.tools.tiny_shapes_segmentation']"]


def _train(config, dataset, tmp_path, iterations=40):
    """The metrics.json loss records (medians over iterations 0-19, 20-39) and the final evaluation's
    {task: {metric: value}} as train_net logs them."""
    datasets = [f"DATASETS.TRAIN=('{dataset}',)", f"DATASETS.TEST=('{dataset}',)"]
    args = ["--config-file", config, *OVERFIT, *VIEWS, *datasets, f"SOLVER.MAX_ITER={iterations}",
            f"OUTPUT_DIR={tmp_path / 'out'}", f"DATASETS.ROOT={tmp_path / 'datasets'}"]
    proc = subprocess.run([sys.executable, "tools/train_net.py", *args], cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.json").read_text().splitlines()]
    losses = [r for r in records if "total_loss" in r]
    results = {
        task: {k: float(v) for k, v in re.findall(r"(\w+) (\S+)", metrics)}
        for task, metrics in re.findall(rf"Evaluation of {dataset}, (\w+): (.*)", proc.stdout)
    }
    return losses, results


def test_semantic_quick_start_learns(tmp_path):
    losses, results = _train("configs/Shapes/semantic_R_18_FPN_shapes.yaml", "train_net_tiny_sem_seg_val", tmp_path)
    assert losses[-1]["loss_sem_seg"] < 0.5 * losses[0]["loss_sem_seg"]
    # all background (~80% of the pixels) would give mIoU ~20
    assert results["sem_seg"]["mIoU"] > 60
    assert (tmp_path / "out" / "inference" / "sem_seg_predictions.json").is_file()


def test_panoptic_quick_start_learns(tmp_path):
    losses, results = _train("configs/Shapes/panoptic_fpn_R_18_shapes.yaml", "train_net_tiny_val_panoptic_separated", tmp_path)
    first, last = losses[0], losses[-1]
    assert last["loss_sem_seg"] < 0.5 * first["loss_sem_seg"] and last["loss_rpn_cls"] < 0.5 * first["loss_rpn_cls"]
    assert last["loss_mask"] < first["loss_mask"]
    assert results["sem_seg"]["mIoU"] > 60 and results["bbox"]["AP50"] > 30 and "segm" in results
    # PQ: the background (the one stuff class) nearly perfect, the shapes partly; All averages the
    # three shape classes and the background.
    pq = results["panoptic_seg"]
    assert pq["PQ_st"] > 80 and 5 < pq["PQ_th"] < pq["PQ_st"] and pq["SQ"] >= pq["PQ"]
    assert abs(pq["PQ"] - (3 * pq["PQ_th"] + pq["PQ_st"]) / 4) < 0.03
    assert (tmp_path / "out" / "inference" / "predictions.json").is_file()
