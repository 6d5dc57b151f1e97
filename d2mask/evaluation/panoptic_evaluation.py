"""Panoptic quality (PQ, SQ, RQ; Kirillov et al., "Panoptic Segmentation", CVPR 2019) as COCO's
panopticapi computes it, without panopticapi (which is not on PyPI).

Per image, a predicted segment matches the ground-truth segment of its category that it overlaps with
IoU > 0.5 (unique by construction). The IoU's union leaves out the predicted pixels on VOID (id 0 of
the ground truth). Unmatched ground-truth segments are false negatives, except crowd regions
("iscrowd": 1). Unmatched predicted segments are false positives, except those lying by more than
half on VOID or on the crowd region of their category. Per category over the dataset,
PQ = sum of matched IoUs / (TP + FP / 2 + FN / 2), SQ = that sum / TP, RQ = TP / (TP + FP / 2 + FN / 2);
All / Things / Stuff average the categories with any TP, FP or FN. (torchmetrics' PanopticQuality
differs: it also leaves ground-truth pixels predicted as VOID out of the union and does not count
a ground-truth segment predicted mostly VOID as missed; and it has no crowd regions.)
"""
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from tabulate import tabulate

from ..data.catalog import DatasetCatalog, DatasetError, MetadataCatalog
from ..data.datasets.coco_panoptic import encode_panoptic_png, load_coco_panoptic_json, read_panoptic_png
from ..utils import comm
from ..utils.atomic_write import atomic_write
from .evaluator import DatasetEvaluator

__all__ = ["COCOPanopticEvaluator", "pq_image_stats", "pq_metrics"]

logger = logging.getLogger(__name__)

# Per category: TP, FP, FN counts and the sum of the matched IoUs.
Stats = Dict[int, np.ndarray]
_TP, _FP, _FN, _IOU = range(4)


class COCOPanopticEvaluator(DatasetEvaluator):
    """PQ, SQ and RQ (percent) of the "panoptic_seg" outputs, for All, Things ("_th") and Stuff
    ("_st") under Detectron2's names, and per category ("PQ-<name>", ...; NaN for a category absent
    from both ground truth and predictions).

    The ground truth is the dataset's `panoptic_json` and `panoptic_root` when its metadata has them
    (COCO's files, so the numbers are the official ones), otherwise the registered dataset dicts'
    "pan_seg_file_name" and "segments_info" (the standard form, e.g. the shapes' panoptic views). The
    categories are those of the metadata's thing_ and stuff_dataset_id_to_contiguous_id.

    Each process scores its own images; `evaluate` sums the counts of all processes.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        """
        Args:
            dataset_name: a registered dataset whose metadata has thing_ and
                stuff_dataset_id_to_contiguous_id (and label_divisor, for models that predict
                category * label_divisor + instance ids).
            output_dir: where to write the predictions as COCO panoptic PNGs (`panoptic_predictions/`)
                and json (`predictions.json`); None writes nothing.
        """
        meta = MetadataCatalog.get(dataset_name)
        maps = [meta.get(f"{kind}_dataset_id_to_contiguous_id") for kind in ("thing", "stuff")]
        if maps[0] is None or maps[1] is None:
            raise ValueError(f"COCOPanopticEvaluator: dataset '{dataset_name}' needs thing_dataset_id_to_contiguous_id "
                             f"and stuff_dataset_id_to_contiguous_id in its metadata")
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._thing_ids = {c: i for i, c in maps[0].items()}  # contiguous -> dataset id
        self._stuff_ids = {c: i for i, c in maps[1].items()}
        self._label_divisor = meta.get("label_divisor")
        # {dataset category id: (name, isthing)}. Dataset id 0 is no category of the panoptic format;
        # Detectron2's separated metadata uses it for the "things" class of the semantic label maps.
        self._categories = {i: (meta.thing_classes[c], True) for c, i in self._thing_ids.items()}
        self._categories.update({i: (meta.stuff_classes[c], False) for c, i in self._stuff_ids.items() if i != 0})
        if meta.get("panoptic_json"):
            dicts = load_coco_panoptic_json(meta.panoptic_json, meta.get("image_root", ""), meta.panoptic_root, meta.as_dict())
        else:
            dicts = DatasetCatalog.get(dataset_name)
        self._ground_truth = self._ground_truth_of(dicts)
        self.reset()

    def reset(self) -> None:
        self._num_images = 0
        self._stats: Stats = {}
        self._predictions: List[Dict[str, Any]] = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            if "panoptic_seg" not in out:  # e.g. PanopticFPN with COMBINE.ENABLED False
                continue
            pred_ids, pred_segments = self._prediction(*out["panoptic_seg"])
            if inp["image_id"] not in self._ground_truth:
                raise DatasetError(f"COCOPanopticEvaluator: image id {inp['image_id']!r} ({inp.get('file_name')}) has no "
                                   f"panoptic ground truth in dataset '{self._dataset_name}'")
            self._num_images += 1
            gt_file, gt_segments = self._ground_truth[inp["image_id"]]
            gt_ids = read_panoptic_png(gt_file)
            if gt_ids.shape != pred_ids.shape:
                raise DatasetError(f"Panoptic PNG {gt_file} is {gt_ids.shape} but the prediction for "
                                   f"{inp.get('file_name')} is {pred_ids.shape}")
            unknown = {c for c in pred_segments.values() if c not in self._categories}
            if unknown:
                raise ValueError(f"COCOPanopticEvaluator: the model predicts category ids {sorted(unknown)}, which dataset "
                                 f"'{self._dataset_name}' does not have (known: {sorted(self._categories)})")
            _accumulate(self._stats, pq_image_stats(gt_ids, gt_segments, pred_ids, pred_segments))
            if self._output_dir:
                self._predictions.append({
                    "image_id": inp["image_id"],
                    "file_name": os.path.splitext(os.path.basename(inp["file_name"]))[0] + ".png",
                    "png": encode_panoptic_png(pred_ids),
                    "segments_info": [{"id": i, "category_id": c} for i, c in pred_segments.items()],
                })

    def evaluate(self) -> Dict[str, Any]:
        comm.synchronize()
        parts = comm.gather((self._num_images, self._stats), dst=0)
        predictions = list(itertools.chain.from_iterable(comm.gather(self._predictions, dst=0)))
        if not comm.is_main_process():
            return {}
        stats: Stats = {}
        for _, part in parts:
            _accumulate(stats, part)
        if not sum(n for n, _ in parts):
            logger.warning("COCOPanopticEvaluator received no predictions; was process() called with 'panoptic_seg' outputs?")
            return {}
        if self._output_dir:
            self._write_predictions(predictions)
        results, table = pq_metrics(stats, self._categories)
        logger.info(f"Panoptic segmentation results on '{self._dataset_name}':\n{table}")
        return OrderedDict({"panoptic_seg": results})

    def _prediction(self, panoptic_seg: torch.Tensor, segments_info: Optional[List[Dict]]) -> Tuple[np.ndarray, Dict[int, int]]:
        """The segment ids (`ndarray[H, W]`, 0 for VOID) and {segment id: dataset category id} of one
        output; the segments without pixels are left out."""
        ids = panoptic_seg.cpu().numpy().astype(np.int64)
        present = set(np.unique(ids).tolist())
        if segments_info is None:
            # Detectron2's other form: category * label_divisor + instance per pixel, -1 for VOID.
            if self._label_divisor is None:
                raise ValueError(f"COCOPanopticEvaluator: a 'panoptic_seg' without segments_info needs label_divisor "
                                 f"in the metadata of dataset '{self._dataset_name}'")
            segments_info = [
                {"id": label + 1, "category_id": label // self._label_divisor,
                 "isthing": label // self._label_divisor in self._thing_ids}
                for label in present if label != -1
            ]
            ids += 1
            present = {label + 1 for label in present}
        segments = {}
        for segment in segments_info:
            isthing = segment.get("isthing")
            category = segment["category_id"]
            if isthing is not None:  # else the model gave the dataset's category id itself
                category = (self._thing_ids if isthing else self._stuff_ids).get(category)
                if category is None:
                    raise ValueError(f"COCOPanopticEvaluator: a segment of {'thing' if isthing else 'stuff'} class "
                                     f"{segment['category_id']}, which dataset '{self._dataset_name}' does not have")
            if segment["id"] in present:
                segments[segment["id"]] = category
        unlisted = present - set(segments) - {0}
        if unlisted:
            raise ValueError(f"COCOPanopticEvaluator: the 'panoptic_seg' output has pixels of segment ids {sorted(unlisted)}, "
                             f"which its segments_info does not list")
        return ids, segments

    def _ground_truth_of(self, dicts: List[Dict]) -> Dict[Any, Tuple[str, Dict[int, Dict[str, Any]]]]:
        """{image id: (panoptic PNG, {segment id: {"category_id" (the dataset's), "iscrowd"}})} of
        standard-form dataset dicts."""
        ground_truth = {}
        for record in dicts:
            if "pan_seg_file_name" not in record:
                raise DatasetError(f"COCOPanopticEvaluator: dataset '{self._dataset_name}' has no panoptic_json in its "
                                   f"metadata and its dict of {record.get('file_name')} has no 'pan_seg_file_name'")
            segments = {
                s["id"]: {"category_id": (self._thing_ids if s["isthing"] else self._stuff_ids)[s["category_id"]],
                          "iscrowd": s.get("iscrowd", 0)}
                for s in record["segments_info"]
            }
            ground_truth[record["image_id"]] = (record["pan_seg_file_name"], segments)
        return ground_truth

    def _write_predictions(self, predictions: List[Dict[str, Any]]) -> None:
        png_dir = os.path.join(self._output_dir, "panoptic_predictions")
        os.makedirs(png_dir, exist_ok=True)
        for prediction in predictions:
            with atomic_write(os.path.join(png_dir, prediction["file_name"]), "wb") as f:
                f.write(prediction.pop("png"))
        categories = [{"id": i, "name": name, "isthing": int(isthing)} for i, (name, isthing) in self._categories.items()]
        path = os.path.join(self._output_dir, "predictions.json")
        with atomic_write(path) as f:
            json.dump({"annotations": predictions, "categories": categories}, f)
        logger.info(f"Saved {len(predictions)} panoptic predictions to {path} and {png_dir}")


def pq_image_stats(
    gt_ids: np.ndarray, gt_segments: Dict[int, Dict[str, Any]], pred_ids: np.ndarray, pred_segments: Dict[int, int]
) -> Stats:
    """The PQ counts of one image (module docstring).

    Args:
        gt_ids, pred_ids: `ndarray[H, W]` integer segment ids, 0 for VOID.
        gt_segments: {segment id: {"category_id", "iscrowd" (optional)}}, every nonzero id of `gt_ids`.
        pred_segments: {segment id: category id}, every nonzero id of `pred_ids`.

    Returns:
        {category id: `ndarray[4]` float64 (TP, FP, FN, sum of matched IoUs)}, for the categories of
        either side.
    """
    unknown = set(np.unique(gt_ids).tolist()) - set(gt_segments) - {0}
    if unknown:
        raise DatasetError(f"The panoptic ground truth has pixels of segment ids {sorted(unknown)}, which its segments_info does not list")
    # Every (GT, predicted) pair of ids that share pixels, and how many.
    span = int(pred_ids.max()) + 1
    pairs, counts = np.unique(gt_ids * span + pred_ids, return_counts=True)
    overlap = {(int(p) // span, int(p) % span): int(n) for p, n in zip(pairs, counts)}
    gt_area: Dict[int, int] = {}
    pred_area: Dict[int, int] = {}
    for (g, p), n in overlap.items():
        gt_area[g] = gt_area.get(g, 0) + n
        pred_area[p] = pred_area.get(p, 0) + n

    stats: Stats = {c: np.zeros(4) for c in itertools.chain(pred_segments.values(), (s["category_id"] for s in gt_segments.values()))}
    matched_gt, matched_pred = set(), set()
    for (g, p), intersection in overlap.items():
        if g == 0 or p == 0 or gt_segments[g].get("iscrowd", 0) or gt_segments[g]["category_id"] != pred_segments[p]:
            continue
        union = pred_area[p] + gt_area[g] - intersection - overlap.get((0, p), 0)
        iou = intersection / union
        if iou > 0.5:
            stats[pred_segments[p]][[_TP, _IOU]] += (1, iou)
            matched_gt.add(g)
            matched_pred.add(p)

    crowd_of_category = {}
    for g, segment in gt_segments.items():
        if g in matched_gt:
            continue
        if segment.get("iscrowd", 0):
            crowd_of_category[segment["category_id"]] = g
        else:
            stats[segment["category_id"]][_FN] += 1
    for p, category in pred_segments.items():
        if p in matched_pred:
            continue
        ignored = overlap.get((0, p), 0) + overlap.get((crowd_of_category.get(category, -1), p), 0)
        if ignored <= 0.5 * pred_area[p]:
            stats[category][_FP] += 1
    return stats


def _accumulate(total: Stats, stats: Stats) -> None:
    """Adds the counts `stats` to `total`, in place."""
    for category, counts in stats.items():
        total[category] = total.get(category, 0) + counts


def pq_metrics(stats: Stats, categories: Dict[int, Tuple[str, bool]]) -> Tuple[Dict[str, float], str]:
    """The results dict (module docstring; percent, NaN for a group without categories) of the summed
    counts `stats` over `categories` ({category id: (name, isthing)}), and a table of All / Things / Stuff."""
    per_category = {}
    for category, (name, _) in categories.items():
        tp, fp, fn, iou = stats.get(category, np.zeros(4))
        if tp + fp + fn > 0:
            per_category[category] = (iou / (tp + 0.5 * fp + 0.5 * fn), iou / tp if tp else 0.0, tp / (tp + 0.5 * fp + 0.5 * fn))
    results, rows = {}, []
    for group, suffix, members in (("All", "", (True, False)), ("Things", "_th", (True,)), ("Stuff", "_st", (False,))):
        values = np.array([v for c, v in per_category.items() if categories[c][1] in members]).reshape(-1, 3)
        means = 100 * values.mean(axis=0) if len(values) else np.full(3, np.nan)
        results.update({f"{metric}{suffix}": float(m) for metric, m in zip(("PQ", "SQ", "RQ"), means)})
        rows.append([group, *means, len(values)])
    for category, (name, _) in categories.items():
        values = per_category.get(category, (np.nan,) * 3)
        results.update({f"{metric}-{name}": float(100 * v) for metric, v in zip(("PQ", "SQ", "RQ"), values)})
    table = tabulate(rows, headers=["", "PQ", "SQ", "RQ", "#categories"], tablefmt="pipe", floatfmt=".3f")
    return results, table
