"""LVIS box and mask AP (Gupta et al., 2019): COCO's AP over up to 300 detections per image, where a
detection of a class the image is not known to contain or lack is not counted, nor an unmatched one
of a class the image was not exhaustively annotated for; and the AP of the rare, common and frequent
classes (APr, APc, APf).

Computed by faster-coco-eval's LVIS mode (`lvis_style`), already d2mask's COCO backend. The `lvis`
package that Detectron2 uses is not: its last release (0.5.3) fails on NumPy >= 1.24 (`np.float`),
and it requires opencv-python, a second OpenCV beside d2mask's opencv-python-headless.
"""
import copy
import itertools
import logging
from collections import OrderedDict, defaultdict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from tabulate import tabulate

from ..data.catalog import DatasetError, MetadataCatalog
from .coco_evaluation import _InstancesEvaluator, _mean_percent

__all__ = ["LVISEvaluator"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "lvis_instances_results.json"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
_TASKS = ("bbox", "segm")
_FREQUENCIES = {"APr": "r", "APc": "c", "APf": "f"}


class LVISEvaluator(_InstancesEvaluator):
    """Box ("bbox") and mask ("segm") AP, AP50, AP75, APs, APm, APl, APr, APc and APf of a dataset
    registered with an LVIS json (`register_lvis_instances`; metadata `json_file`), in percent. A
    metric without ground truth to measure (e.g. APr when no rare class is annotated) is NaN.
    """

    _results_file = RESULTS_FILE

    def __init__(
        self,
        dataset_name: str,
        tasks: Optional[Sequence[str]] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        max_dets_per_image: Optional[int] = None,
    ):
        """
        Args (Detectron2's):
            dataset_name: a registered dataset whose metadata has the LVIS `json_file`.
            tasks: subset of ("bbox", "segm"); None picks from the predictions (segm if they have masks).
            distributed: gather predictions from all processes and evaluate on the main one.
            output_dir: where to write the predictions as `lvis_instances_results.json`; None writes nothing.
            max_dets_per_image: detections per image considered; None is LVIS's official 300.
        """
        if tasks is not None and (isinstance(tasks, str) or not set(tasks) <= set(_TASKS)):
            raise ValueError(f"LVISEvaluator tasks must be among {_TASKS}, got {tasks}")
        self._metadata = MetadataCatalog.get(dataset_name)
        json_file = self._metadata.get("json_file")
        if not json_file:
            raise DatasetError(
                f"LVISEvaluator needs the LVIS json of dataset '{dataset_name}' (metadata json_file, set by "
                f"register_lvis_instances); it has none"
            )
        self._dataset_name = dataset_name
        self._tasks = tuple(tasks) if tasks is not None else None
        self._distributed = distributed
        self._output_dir = output_dir
        self._max_dets = 300 if max_dets_per_image is None else max_dets_per_image
        self._lvis_gt = COCO(json_file, print_function=logger.debug)
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        # Without a map, contiguous ids are LVIS's ids minus 1 (its categories are numbered from 1).
        self._to_dataset_id = {v: k for k, v in id_map.items()} if id_map else None
        self.reset()

    def evaluate(self) -> Dict[str, Any]:
        predictions = self._gathered_predictions()
        if predictions is None:
            return {}
        results_json = list(itertools.chain.from_iterable(p["instances"] for p in predictions))
        for result in results_json:
            category = result["category_id"]
            result["category_id"] = self._to_dataset_id[category] if self._to_dataset_id else category + 1
        self._save_results(results_json)

        tasks = self._tasks or (("bbox", "segm") if any("segmentation" in r for r in results_json) else ("bbox",))
        results: Dict[str, Any] = OrderedDict()
        for task in tasks:
            results[task] = self._evaluate_task(results_json, task)
        return copy.deepcopy(results)

    def _evaluate_task(self, results_json: List[Dict[str, Any]], task: str) -> Dict[str, float]:
        if not results_json:
            logger.warning(f"No detections to evaluate for {task}; every metric is 0")
            return {m: 0.0 for m in METRICS}
        if task == "segm":
            # With a "bbox" present, the box area would be taken as the instance's area.
            results_json = [{k: v for k, v in r.items() if k != "bbox"} for r in results_json]
        lvis_dt = self._lvis_gt.loadRes(_best_per_image(results_json, self._max_dets))
        lvis_eval = COCOeval_faster(self._lvis_gt, lvis_dt, task, lvis_style=True, print_function=logger.debug)
        lvis_eval.params.maxDets = [self._max_dets]
        lvis_eval.evaluate()
        lvis_eval.accumulate()
        results = self._summarize(lvis_eval)
        table = tabulate([[f"{results[m]:.3f}" for m in METRICS]], headers=METRICS, tablefmt="pipe")
        logger.info(f"Evaluation results for {task} on '{self._dataset_name}':\n{table}")
        return results

    def _summarize(self, lvis_eval) -> Dict[str, float]:
        """The metrics, in percent, from the precision of each (IoU threshold, recall, category, area
        range, max-dets setting); -1 marks entries without ground truth, and NaN a metric with none."""
        precision = lvis_eval.eval["precision"][..., -1]  # (T, R, K, areas: all, small, medium, large)
        iou_thrs = lvis_eval.params.iouThrs
        frequency = [self._lvis_gt.cats[c].get("frequency") for c in lvis_eval.params.catIds]
        selections = {
            "AP": precision[..., 0],
            "AP50": precision[np.isclose(iou_thrs, 0.5), ..., 0],
            "AP75": precision[np.isclose(iou_thrs, 0.75), ..., 0],
            "APs": precision[..., 1],
            "APm": precision[..., 2],
            "APl": precision[..., 3],
        }
        for name, group in _FREQUENCIES.items():
            selections[name] = precision[:, :, [f == group for f in frequency], 0]
        return {name: _mean_percent(selections[name]) for name in METRICS}


def _best_per_image(results_json: List[Dict[str, Any]], max_dets: int) -> List[Dict[str, Any]]:
    """The `max_dets` highest-scoring detections of each image, over all classes (LVIS's limit; COCO's
    is per class)."""
    per_image = defaultdict(list)
    for r in results_json:
        per_image[r["image_id"]].append(r)
    return list(itertools.chain.from_iterable(
        sorted(rs, key=lambda r: -r["score"])[:max_dets] for rs in per_image.values()
    ))
