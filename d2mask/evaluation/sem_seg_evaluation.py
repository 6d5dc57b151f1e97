"""Semantic-segmentation metrics from a confusion matrix: mIoU, fwIoU, per-class IoU, mean and
per-class accuracy, pixel accuracy (COCO-Stuff's, http://cocodataset.org/#stuff-eval)."""
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from tabulate import tabulate

from ..data.catalog import DatasetCatalog, DatasetError, MetadataCatalog
from ..data.detection_utils import read_sem_seg
from ..utils import comm
from ..utils.atomic_write import atomic_write
from .evaluator import DatasetEvaluator

__all__ = ["SemSegEvaluator", "load_image_into_numpy_array", "sem_seg_metrics"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "sem_seg_predictions.json"


def load_image_into_numpy_array(filename: str, dtype: Optional[Union[np.dtype, str]] = None) -> np.ndarray:
    """A label map file as `ndarray[H, W]` of `dtype` (see `read_sem_seg`); SemSegEvaluator's default
    `sem_seg_loading_fn`."""
    return np.asarray(read_sem_seg(filename), dtype=dtype)


class SemSegEvaluator(DatasetEvaluator):
    """Compares each image's predicted classes (the argmax of the "sem_seg" logits) with its label map,
    the dataset dict's "sem_seg_file_name". The dataset's metadata gives `stuff_classes` (K) and
    `ignore_label`, the label of pixels that are not counted.

    Results (percent) under "sem_seg", with Detectron2's names: mIoU, fwIoU (IoU weighted by the
    classes' GT pixel shares), IoU-<class>, mACC (mean per-class accuracy), pACC (pixel accuracy),
    ACC-<class>. A class without GT pixels is NaN and left out of the means.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        sem_seg_loading_fn: Callable[..., np.ndarray] = load_image_into_numpy_array,
        num_classes: Optional[int] = None,
        ignore_label: Optional[int] = None,
    ):
        """
        Args:
            dataset_name: a registered dataset whose dicts have "sem_seg_file_name" and whose metadata
                has stuff_classes (and ignore_label, unless given).
            distributed: gather the counts of all processes and evaluate on the main one.
            output_dir: where to write the predictions as COCO-Stuff RLEs (`sem_seg_predictions.json`)
                and the results (`sem_seg_evaluation.pth`); None writes nothing.
            sem_seg_loading_fn: `fn(file_name, dtype=int)` -> `ndarray[H, W]` label map.
            num_classes: Detectron2's deprecated argument; must equal len(stuff_classes) if given.
            ignore_label: overrides the metadata's ignore_label.
        """
        meta = MetadataCatalog.get(dataset_name)
        class_names = meta.get("stuff_classes")
        if not class_names:
            raise ValueError(f"SemSegEvaluator: dataset '{dataset_name}' has no stuff_classes in its metadata")
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"SemSegEvaluator: num_classes={num_classes} but dataset '{dataset_name}' has "
                             f"{len(class_names)} stuff_classes")
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._class_names = list(class_names)
        self._num_classes = len(class_names)
        self._ignore_label = ignore_label if ignore_label is not None else meta.get("ignore_label")
        id_map = meta.get("stuff_dataset_id_to_contiguous_id")
        self._contiguous_id_to_dataset_id = {v: k for k, v in id_map.items()} if id_map else None
        self.sem_seg_loading_fn = sem_seg_loading_fn
        self.input_file_to_gt_file = {
            d["file_name"]: d["sem_seg_file_name"] for d in DatasetCatalog.get(dataset_name) if "sem_seg_file_name" in d
        }
        if not self.input_file_to_gt_file:
            raise DatasetError(f"SemSegEvaluator: no dict of dataset '{dataset_name}' has a 'sem_seg_file_name'")
        self.reset()

    def reset(self) -> None:
        # (K + 1, K + 1) counts of (predicted, GT) pairs; GT index K stands for the ignored pixels.
        self._conf_matrix = np.zeros((self._num_classes + 1, self._num_classes + 1), dtype=np.int64)
        self._predictions: List[Dict[str, Any]] = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            logits = out["sem_seg"]
            if logits.shape[0] != self._num_classes:
                raise ValueError(f"SemSegEvaluator: the model predicts {logits.shape[0]} classes but dataset "
                                 f"'{self._dataset_name}' has {self._num_classes}; does MODEL.SEM_SEG_HEAD.NUM_CLASSES match?")
            self._process_image(inp["file_name"], logits.argmax(dim=0).cpu().numpy())

    def _process_image(self, file_name: str, pred: np.ndarray) -> None:
        """Counts the predicted classes `ndarray[H, W]` of the image `file_name` against its label map."""
        gt_file = self.input_file_to_gt_file[file_name]
        gt = self.sem_seg_loading_fn(gt_file, dtype=int)
        if gt.shape != pred.shape:
            raise DatasetError(f"Label map {gt_file} is {gt.shape} but the prediction for {file_name} is {pred.shape}")
        self._conf_matrix += confusion_matrix(pred, gt, self._num_classes, self._ignore_label, gt_file)
        if self._output_dir:
            self._predictions.extend(self._encode_json_sem_seg(pred, file_name))

    def evaluate(self) -> Dict[str, Any]:
        conf_matrix, predictions = self._conf_matrix, self._predictions
        if self._distributed:
            comm.synchronize()
            conf_matrix = sum(comm.gather(conf_matrix, dst=0))
            predictions = list(itertools.chain.from_iterable(comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        results = sem_seg_metrics(conf_matrix, self._class_names)
        table = tabulate([[f"{results[k]:.3f}" for k in _MAIN]], headers=_MAIN, tablefmt="pipe")
        logger.info(f"Semantic segmentation results on '{self._dataset_name}':\n{table}")
        if self._output_dir:
            with atomic_write(os.path.join(self._output_dir, RESULTS_FILE)) as f:
                json.dump(predictions, f)
            with atomic_write(os.path.join(self._output_dir, "sem_seg_evaluation.pth"), "wb") as f:
                torch.save(results, f)
        return OrderedDict({"sem_seg": results})

    def _encode_json_sem_seg(self, sem_seg: np.ndarray, input_file_name: str) -> List[Dict[str, Any]]:
        """One COCO-Stuff result record (a class's pixels as an RLE) per class present in `sem_seg`."""
        records = []
        for label in np.unique(sem_seg).tolist():
            dataset_id = self._contiguous_id_to_dataset_id[label] if self._contiguous_id_to_dataset_id else label
            rle = mask_util.encode(np.asfortranarray(sem_seg == label, dtype=np.uint8))
            rle["counts"] = rle["counts"].decode("ascii")
            records.append({"file_name": input_file_name, "category_id": dataset_id, "segmentation": rle})
        return records


_MAIN = ["mIoU", "fwIoU", "mACC", "pACC"]


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: Optional[int], gt_file: str = "") -> np.ndarray:
    """`ndarray[K + 1, K + 1]` counts of the pixels with each (predicted, GT) class pair, GT pixels of
    `ignore_label` counted under GT class K. A GT label outside [0, K) otherwise is a DatasetError
    naming `gt_file`."""
    ignored = gt == ignore_label if ignore_label is not None else np.zeros(gt.shape, dtype=bool)
    bad = ~ignored & ((gt < 0) | (gt >= num_classes))
    if bad.any():
        raise DatasetError(f"Label map {gt_file} has label {int(gt[bad][0])}, neither a class in [0, {num_classes}) "
                           f"nor the ignore_label {ignore_label}")
    gt = np.where(ignored, num_classes, gt)
    counts = np.bincount((num_classes + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=(num_classes + 1) ** 2)
    return counts.reshape(num_classes + 1, num_classes + 1)


def sem_seg_metrics(conf_matrix: np.ndarray, class_names: List[str]) -> Dict[str, float]:
    """The metrics of a (K + 1, K + 1) (predicted, GT) confusion matrix whose last GT column holds
    the ignored pixels (see `SemSegEvaluator`)."""
    counts = conf_matrix[:-1, :-1].astype(np.float64)
    tp = counts.diagonal()
    gt_pixels, pred_pixels = counts.sum(axis=0), counts.sum(axis=1)
    union = gt_pixels + pred_pixels - tp
    present = gt_pixels > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(present, tp / gt_pixels, np.nan)
        iou = np.where(present & (union > 0), tp / union, np.nan)
    total = gt_pixels.sum()
    results = {
        "mIoU": 100 * _nanmean(iou),
        "fwIoU": 100 * np.nansum(iou * gt_pixels / total) if total > 0 else float("nan"),
    }
    results.update({f"IoU-{name}": 100 * iou[k] for k, name in enumerate(class_names)})
    results["mACC"] = 100 * _nanmean(acc)
    results["pACC"] = 100 * tp.sum() / total if total > 0 else float("nan")
    results.update({f"ACC-{name}": 100 * acc[k] for k, name in enumerate(class_names)})
    return {k: float(v) for k, v in results.items()}


def _nanmean(x: np.ndarray) -> float:
    """The mean of the non-NaN entries; NaN when there are none."""
    valid = x[~np.isnan(x)]
    return float(valid.mean()) if valid.size else float("nan")
