"""proposal_recall on a hand-computed case, and the script on a checkpoint of a tiny model."""
import os

import pytest
import torch

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.config import get_cfg
from d2mask.modeling import build_model
from d2mask.structures import Boxes
from projects.DenseText.proposal_recall import main, proposal_recall
from tests.common import REPO


def test_recall_by_hand():
    gt = [Boxes([[0, 0, 10, 10], [20, 20, 30, 30]]), Boxes([[0, 0, 10, 10]]), Boxes([[0, 0, 1, 1]])]
    proposals = [
        Boxes([[0, 0, 10, 10], [20, 20, 30, 35], [50, 50, 60, 60]]),  # IoU 1 with GT 0, then 100/150 with GT 1
        Boxes([[100, 100, 110, 110], [0, 0, 10, 12]]),  # nothing, then IoU 100/120
        Boxes([]),  # an image without proposals finds nothing
    ]
    recall = proposal_recall(gt, proposals, topk=(1, 2, 3), thresholds=(0.5, 0.7))
    # K=1 finds only the first GT box of the first image; K=2 and 3 find all but the last image's,
    # the second one (IoU 0.67) only at 0.5.
    assert recall[1].tolist() == pytest.approx([1 / 4, 1 / 4])
    assert recall[2].tolist() == pytest.approx([3 / 4, 2 / 4])
    assert recall[3].tolist() == pytest.approx([3 / 4, 2 / 4])


def test_script_on_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path))
    config = os.path.join(REPO, "projects/DenseText/configs/faster_rcnn_R_18_FPN_dense_atss.yaml")
    overrides = [
        "IMPORTS", "['projects.DenseText.atss_matcher', 'projects.DenseText.tests.tiny_dense']",
        "DATASETS.TEST", "('dense_text_tiny_val',)", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.DEVICE", "cpu",
    ]
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(overrides)
    weights = str(tmp_path / "model.pth")
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("model")
    recall = main(["--config-file", config, *overrides, "MODEL.WEIGHTS", weights])
    assert set(recall) == {100, 300, 1000}
    for values in recall.values():
        assert values.shape == (10,) and ((values >= 0) & (values <= 1)).all()
        assert torch.all(values[:-1] >= values[1:])  # recall falls as the IoU threshold rises
    # an untrained RPN still covers most of 20 objects in a 64-pixel image with 1000 proposals
    assert recall[1000][0] > 0.5
