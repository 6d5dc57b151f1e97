"""PASCAL VOC detection AP (Everingham et al., 2010), as the devkit computes it: per class, detections
in score order are true positives when they overlap a not-yet-detected GT box by more than the IoU
threshold; "difficult" GT boxes are neither to be found nor penalised. VOC2007 averages the precision
at 11 recall points, VOC2012 takes the area under the precision envelope.
"""
import itertools
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from ..data.catalog import DatasetError, MetadataCatalog
from ..data.datasets.pascal_voc import parse_voc_objects
from ..structures import Boxes, pairwise_iou
from ..utils import comm
from .evaluator import DatasetEvaluator

__all__ = ["PascalVOCDetectionEvaluator", "voc_ap"]

logger = logging.getLogger(__name__)

# AP is the mean over these IoU thresholds, as COCO's; AP50 and AP75 are two of them.
IOU_THRESHOLDS = tuple(t / 100 for t in range(50, 100, 5))


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """The AP of a precision/recall curve (detections in score order).

    Args:
        recall, precision: `[D]` after each detection.
        use_07_metric: VOC2007's mean of the best precision at recall >= 0, 0.1, ..., 1; else VOC2012's
            area under the precision envelope (the best precision at any higher recall).
    """
    if use_07_metric:
        points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
        return float(np.mean(points))
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


class PascalVOCDetectionEvaluator(DatasetEvaluator):
    """Box AP of a dataset registered by `register_pascal_voc` (metadata `dirname`, `split`, `year`,
    `thing_classes`), against the difficult flags of its XML files: {"bbox": {"AP", "AP50", "AP75"}}
    in percent, the mean over classes of the AP at IoU 0.5, 0.55, ..., 0.95, at 0.5 and at 0.75.
    The metric is VOC2007's 11-point one when `year` is 2007, else VOC2012's. A class without
    (non-difficult) GT boxes has no AP and is left out of the mean.
    """

    def __init__(self, dataset_name: str):
        """
        Args:
            dataset_name: e.g. "voc_2007_test".
        """
        meta = MetadataCatalog.get(dataset_name)
        missing = [k for k in ("dirname", "split", "year", "thing_classes") if meta.get(k) is None]
        if missing:
            raise DatasetError(
                f"PascalVOCDetectionEvaluator needs the metadata {missing} of dataset '{dataset_name}' "
                f"(set by register_pascal_voc)"
            )
        if meta.year not in (2007, 2012):
            raise DatasetError(f"PascalVOCDetectionEvaluator: dataset '{dataset_name}' has year {meta.year}, "
                               f"expected 2007 (11-point AP) or 2012 (area AP)")
        self._dataset_name = dataset_name
        self._dirname = meta.dirname
        self._split = meta.split
        self._class_names = list(meta.thing_classes)
        self._use_07_metric = meta.year == 2007
        self.reset()

    def reset(self) -> None:
        # (image id, class, score, XYXY box) of every detection
        self._predictions: List[Dict[str, Any]] = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to("cpu")
            self._predictions.append({
                "image_id": inp["image_id"],
                "boxes": instances.pred_boxes.tensor.numpy(),
                "scores": instances.scores.numpy(),
                "classes": instances.pred_classes.numpy(),
            })

    def evaluate(self) -> Dict[str, Any]:
        predictions = list(itertools.chain.from_iterable(comm.gather(self._predictions, dst=0)))
        if not comm.is_main_process():
            return {}
        ground_truth = self._ground_truth()
        ap = np.full((len(self._class_names), len(IOU_THRESHOLDS)), np.nan)  # (K, thresholds)
        for k in range(len(self._class_names)):
            ap[k] = self._class_ap(k, predictions, ground_truth)
        has_gt = ~np.isnan(ap[:, 0])
        mean_ap = ap[has_gt].mean(axis=0) * 100 if has_gt.any() else np.full(len(IOU_THRESHOLDS), np.nan)
        logger.info(
            f"VOC{2007 if self._use_07_metric else 2012} AP50 per class on '{self._dataset_name}': "
            + ", ".join(f"{name} {a * 100:.2f}" for name, a in zip(self._class_names, ap[:, 0]))
        )
        return OrderedDict(bbox={
            "AP": float(mean_ap.mean()),
            "AP50": float(mean_ap[IOU_THRESHOLDS.index(0.5)]),
            "AP75": float(mean_ap[IOU_THRESHOLDS.index(0.75)]),
        })

    def _ground_truth(self) -> Dict[str, Dict[str, np.ndarray]]:
        """{image id: {"boxes": `[G, 4]`, "classes": `[G]`, "difficult": `[G]` bool}} of the split."""
        list_file = os.path.join(self._dirname, "ImageSets", "Main", f"{self._split}.txt")
        with open(list_file, "r", encoding="utf-8") as f:
            image_ids = [line.strip() for line in f if line.strip()]
        ground_truth = {}
        for image_id in image_ids:
            _, _, objects = parse_voc_objects(
                os.path.join(self._dirname, "Annotations", f"{image_id}.xml"), self._class_names
            )
            ground_truth[image_id] = {
                "boxes": np.asarray([o["bbox"] for o in objects], dtype=np.float32).reshape(-1, 4),
                "classes": np.asarray([o["category_id"] for o in objects], dtype=np.int64),
                "difficult": np.asarray([o["difficult"] for o in objects], dtype=bool),
            }
        return ground_truth

    def _class_ap(self, k: int, predictions: Sequence[Dict[str, Any]], ground_truth) -> np.ndarray:
        """`[len(IOU_THRESHOLDS)]`: the AP of class k at each IoU threshold; NaN without GT."""
        # the class's GT boxes of all images numbered together; image -> (its first number, its boxes)
        per_image, difficult, offset = {}, [], 0
        for image_id, gt in ground_truth.items():
            of_class = gt["classes"] == k
            per_image[image_id] = (offset, gt["boxes"][of_class])
            difficult.append(gt["difficult"][of_class])
            offset += int(of_class.sum())
        difficult = np.concatenate(difficult)
        num_positives = int((~difficult).sum())
        if num_positives == 0:
            return np.full(len(IOU_THRESHOLDS), np.nan)

        # Each detection's best-overlapping GT box of its image (the devkit's choice, whether or not
        # that box is already taken), and the IoU with it; a detection in an image without GT of
        # the class is a false positive (IoU 0).
        scores, best_gt, best_iou = [], [], []
        for p in predictions:
            if p["image_id"] not in per_image:
                raise ValueError(f"A prediction for image '{p['image_id']}', which split '{self._split}' does not list")
            first, image_gt = per_image[p["image_id"]]
            of_class = p["classes"] == k
            iou = pairwise_iou(Boxes(torch.from_numpy(p["boxes"][of_class])), Boxes(torch.from_numpy(image_gt)))
            iou = torch.cat([iou, iou.new_zeros(len(iou), 1)], dim=1)  # (D, G + 1): no GT is an IoU of 0
            scores.append(p["scores"][of_class])
            best_gt.append(first + iou.argmax(dim=1).clamp(max=max(len(image_gt) - 1, 0)).numpy())
            best_iou.append(iou.max(dim=1).values.numpy())
        if not predictions:
            return np.zeros(len(IOU_THRESHOLDS))
        order = np.argsort(-np.concatenate(scores), kind="stable")
        best_gt, best_iou = np.concatenate(best_gt)[order], np.concatenate(best_iou)[order]
        return np.array([self._ap_at(t, best_gt, best_iou, difficult, num_positives) for t in IOU_THRESHOLDS])

    def _ap_at(self, threshold: float, best_gt: np.ndarray, best_iou: np.ndarray, difficult: np.ndarray,
               num_positives: int) -> float:
        """The AP at one IoU threshold of detections in score order, given each one's best GT box."""
        hit = best_iou > threshold
        of_difficult = np.zeros(len(hit), dtype=bool)
        of_difficult[hit] = difficult[best_gt[hit]]
        counted = ~of_difficult  # a detection of a difficult box counts neither way
        candidates = np.flatnonzero(hit & counted)
        # the first detection of each GT box (in score order) is its true positive, later ones are not
        _, first = np.unique(best_gt[candidates], return_index=True)
        true_positive = np.zeros(len(best_gt), dtype=bool)
        true_positive[candidates[first]] = True
        true_positive = true_positive[counted]
        tp = np.cumsum(true_positive)
        fp = np.cumsum(~true_positive)
        return voc_ap(tp / num_positives, tp / np.maximum(tp + fp, np.finfo(np.float64).eps), self._use_07_metric)

