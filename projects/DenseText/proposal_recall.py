#!/usr/bin/env python
"""Measures how many ground-truth objects the RPN of a trained model finds: the recall of its top-K
proposals, which is what the anchor matcher changes most directly.

    python projects/DenseText/proposal_recall.py \
        --config-file projects/DenseText/configs/faster_rcnn_R_18_FPN_dense_atss.yaml \
        MODEL.WEIGHTS output/dense_text/atss/model_final.pth

Runs the backbone and RPN of the checkpoint (the ROI heads are not needed) on `DATASETS.TEST[0]`
and prints, for K in 100, 300 and 1000, the recall at IoU 0.5 and 0.7 and the average recall over IoU
0.5:0.05:0.95 (COCO's AR@K). Crowd annotations are left out.
"""
import argparse
import copy
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.config import ConfigError, load_config
from d2mask.data import DatasetCatalog, DatasetMapper
from d2mask.data.datasets import set_datasets_root
from d2mask.engine import report_user_errors
from d2mask.modeling import build_model
from d2mask.structures import Boxes, BoxMode, pairwise_iou

# This repository's configs import its projects (`IMPORTS: [projects.DenseText.atss_matcher]`). d2mask
# never adds a directory to the import path (not even the current one); its tools add the repository root.
sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

__all__ = ["proposal_recall", "main"]

TOPK = (100, 300, 1000)
AR_THRESHOLDS = tuple(0.5 + 0.05 * i for i in range(10))


def proposal_recall(
    gt_boxes: List[Boxes], proposals: List[Boxes], topk: Sequence[int], thresholds: Sequence[float]
) -> Dict[int, Tensor]:
    """The share of GT boxes covered by a proposal, over a set of images.

    Args:
        gt_boxes: per image, the GT boxes.
        proposals: per image, the proposals by decreasing objectness.
        topk: the numbers K of first proposals to consider.
        thresholds: IoU thresholds at which a GT box counts as found.

    Returns:
        {K: `Tensor[T]`}, the recall at each of the T thresholds (all zeros without GT boxes).
    """
    best = {k: [] for k in topk}
    for gt, props in zip(gt_boxes, proposals):
        iou = pairwise_iou(gt, props)  # (M, P)
        for k in topk:
            # (M, min(K, P)) -> (M,): each GT box's best overlap among the first K proposals
            best[k].append(iou[:, :k].max(dim=1).values if iou.shape[1] > 0 else torch.zeros(len(gt)))
    thresholds = torch.tensor(thresholds)
    recall = {}
    for k, values in best.items():
        values = torch.cat(values) if values else torch.zeros(0)
        # (G, 1) >= (1, T) -> (T,)
        recall[k] = (values[:, None] >= thresholds[None, :]).float().mean(dim=0) if len(values) else torch.zeros(len(thresholds))
    return recall


def main(argv: Optional[List[str]] = None) -> Dict[int, Tensor]:
    """Prints and returns {K: recall at each of AR_THRESHOLDS}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="YAML config of the model; DATASETS.TEST[0] is evaluated")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs (MODEL.WEIGHTS ...)")
    args = parser.parse_args(argv)
    # backbone and RPN; the ROI heads' weights are skipped
    cfg = load_config(args.config_file, [*args.opts, "MODEL.META_ARCHITECTURE", "ProposalNetwork"])
    if not cfg.DATASETS.TEST:
        raise ConfigError("DATASETS.TEST is empty: name the dataset to measure the proposals on")
    set_datasets_root(cfg.DATASETS.ROOT)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()

    mapper = DatasetMapper(cfg, is_train=False)
    gt_boxes, proposals = [], []
    for record in DatasetCatalog.get(cfg.DATASETS.TEST[0]):
        with torch.no_grad():
            outputs = model([mapper(copy.deepcopy(record))])[0]["proposals"]
        proposals.append(outputs.proposal_boxes.to("cpu"))
        gt = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"] if not a.get("iscrowd", 0)]
        gt_boxes.append(Boxes(torch.tensor(gt, dtype=torch.float32).reshape(-1, 4)))

    recall = proposal_recall(gt_boxes, proposals, TOPK, AR_THRESHOLDS)
    print(f"{cfg.DATASETS.TEST[0]}: {sum(len(g) for g in gt_boxes)} GT boxes in {len(gt_boxes)} images")
    for k, values in recall.items():
        print(f"K={k:5d}  recall@0.5 {100 * values[0]:.1f}  recall@0.7 {100 * values[4]:.1f}  AR {100 * values.mean():.1f}")
    return recall


if __name__ == "__main__":
    report_user_errors(main, sys.argv[1:])
