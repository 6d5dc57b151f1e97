"""COCO-style box, mask and keypoint AP, computed by faster-coco-eval (C++) or pycocotools (the reference)."""
import contextlib
import copy
import gc
import importlib.util
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from ..data.catalog import MetadataCatalog
from ..data.datasets.coco import convert_to_coco_dict
from ..structures import BoxMode, Instances
from ..utils import comm
from ..utils.atomic_write import atomic_write
from .evaluator import DatasetEvaluator
from .mask_rle import encode_masks, fast_mask_cocoeval_class, mask_results_as_coco

__all__ = ["COCOEvaluator", "instances_to_coco_json", "encode_masks"]

logger = logging.getLogger(__name__)

_TASKS = ("bbox", "segm", "keypoints")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# COCO's keypoint evaluation has no small objects (too small to annotate keypoints on).
KEYPOINT_METRICS = ("AP", "AP50", "AP75", "APm", "APl")
RESULTS_FILE = "coco_instances_results.json"


class _InstancesEvaluator(DatasetEvaluator):
    """What COCOEvaluator and LVISEvaluator share: each image's detections kept as COCO result records,
    brought together on the main process, and saved. A subclass names its `_results_file`, sets
    `_distributed` and `_output_dir` in its constructor and computes the metrics in `evaluate`."""

    _results_file: str

    def reset(self) -> None:
        self._predictions: List[Dict[str, Any]] = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            if "instances" in out:
                instances = out["instances"].to("cpu")
                self._predictions.append(
                    {"image_id": inp["image_id"], "instances": instances_to_coco_json(instances, inp["image_id"])}
                )

    def _gathered_predictions(self) -> Optional[List[Dict[str, Any]]]:
        """Every process's {"image_id", "instances"} records on the main process; None on the others."""
        if not self._distributed:
            return self._predictions
        comm.synchronize()
        predictions = list(itertools.chain.from_iterable(comm.gather(self._predictions, dst=0)))
        return predictions if comm.is_main_process() else None

    def _save_results(self, results: List[Dict[str, Any]]) -> None:
        """Writes the result records to `_results_file` in the output directory, if there is one."""
        if self._output_dir:
            path = os.path.join(self._output_dir, self._results_file)
            with atomic_write(path) as f:
                json.dump(results, f)
            logger.info(f"Saved {len(results)} predictions to {path}")


class COCOEvaluator(_InstancesEvaluator):
    """Box ("bbox") and mask ("segm") AP, AP50, AP75, APs, APm, APl, and AP per category; keypoint
    ("keypoints") AP, AP50, AP75, APm, APl by object keypoint similarity (OKS), 20 detections per image.

    The ground truth is the dataset's `json_file` when its metadata has one (so the numbers are the
    official ones for COCO itself), otherwise the registered dataset dicts converted to COCO format.
    Results are in percent; a metric without any ground truth to measure (e.g. APl when there are no
    large objects) is NaN.

    The AP is computed by faster-coco-eval's C++ implementation of COCOeval by default, which gives the
    same numbers as pycocotools (the official one, used with `use_fast_impl=False`) about ten times
    faster on COCO-sized sets; tests/evaluation/test_coco_evaluation.py holds the two equal.
    """

    _results_file = RESULTS_FILE

    def __init__(
        self,
        dataset_name: str,
        tasks: Optional[Sequence[str]] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        max_dets_per_image: int = 100,
        use_fast_impl: bool = True,
        kpt_oks_sigmas: Sequence[float] = (),
    ):
        """
        Args (in Detectron2's order):
            dataset_name: a registered dataset whose metadata has thing_classes.
            tasks: subset of ("bbox", "segm", "keypoints"); None picks from the predictions (segm if
                they have masks, keypoints if they have keypoints).
            distributed: gather predictions from all processes and evaluate on the main one.
            output_dir: where to write the predictions as `coco_instances_results.json`; None writes nothing.
            max_dets_per_image: detections per image considered (COCO's standard is 100; dense
                datasets need more). The keypoint AP keeps COCO's 20.
            use_fast_impl: compute AP with faster-coco-eval; False uses pycocotools. Without
                faster-coco-eval installed, pycocotools is used (with a warning).
            kpt_oks_sigmas: per keypoint, the sigma of its OKS (TEST.KEYPOINT_OKS_SIGMAS); empty uses
                COCO's 17 person sigmas.
        """
        if tasks is not None and (isinstance(tasks, str) or not set(tasks) <= set(_TASKS)):
            raise ValueError(f"COCOEvaluator tasks must be among {_TASKS}, got {tasks}")
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._tasks = tuple(tasks) if tasks is not None else None
        self._max_dets = max_dets_per_image
        if use_fast_impl and importlib.util.find_spec("faster_coco_eval") is None:
            logger.warning("faster-coco-eval is not installed (pip install faster-coco-eval); COCOEvaluator "
                           "falls back to pycocotools, which gives the same AP about ten times slower")
            use_fast_impl = False
        self._use_fast_impl = use_fast_impl
        self._kpt_oks_sigmas = [float(s) for s in kpt_oks_sigmas]
        self._metadata = MetadataCatalog.get(dataset_name)
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        self._to_dataset_id = {v: k for k, v in id_map.items()} if id_map else None
        self._coco_gt = _load_ground_truth(dataset_name, self._metadata.get("json_file"), use_fast_impl)
        self._gt_rles: Dict[int, Dict[str, Any]] = {}  # GT masks as RLE, converted at the first mask evaluation
        self.reset()

    def evaluate(self) -> Dict[str, Any]:
        predictions = self._gathered_predictions()
        if predictions is None:
            return {}
        if not predictions:
            logger.warning("COCOEvaluator received no predictions; was process() called with 'instances' outputs?")
            return {}
        coco_results = list(itertools.chain.from_iterable(p["instances"] for p in predictions))
        self._to_dataset_ids(coco_results)
        self._save_results(coco_results)

        tasks = self._tasks or _tasks_of(coco_results)
        results: Dict[str, Any] = OrderedDict()
        for task in tasks:
            if task == "segm" and not all("segmentation" in a for a in self._coco_gt.dataset["annotations"]):
                logger.warning(f"Dataset '{self._dataset_name}' has annotations without masks; skipping segm AP")
                continue
            if task == "keypoints" and not any("keypoints" in a for a in self._coco_gt.dataset["annotations"]):
                logger.warning(f"Dataset '{self._dataset_name}' has no keypoint annotations; skipping keypoint AP")
                continue
            coco_eval = None
            if coco_results:
                coco_eval = _run_cocoeval(
                    self._coco_gt, coco_results, task, self._max_dets, self._use_fast_impl, self._kpt_oks_sigmas,
                    self._gt_rles,
                )
            results[task] = self._summarize(coco_eval, task)
        return copy.deepcopy(results)

    def _to_dataset_ids(self, coco_results: List[Dict[str, Any]]) -> None:
        """Maps the model's contiguous class indices back to the dataset's category ids, in place."""
        if self._to_dataset_id is None:
            return
        for result in coco_results:
            category = result["category_id"]
            if category not in self._to_dataset_id:
                raise ValueError(f"A prediction has class {category}, but dataset '{self._dataset_name}' has "
                                 f"{len(self._to_dataset_id)} classes; does MODEL.ROI_HEADS.NUM_CLASSES match it?")
            result["category_id"] = self._to_dataset_id[category]

    def _summarize(self, coco_eval: Optional[Any], task: str) -> Dict[str, float]:
        metrics = KEYPOINT_METRICS if task == "keypoints" else METRICS
        if coco_eval is None:
            logger.warning(f"No detections to evaluate for {task}; every metric is 0")
            return {m: 0.0 for m in metrics}
        # precision: (IoU/OKS thresholds, recall thresholds, categories, area ranges, max-dets settings);
        # -1 marks entries without ground truth. The area ranges are all, then those of `metrics[3:]`.
        precision = coco_eval.eval["precision"][..., -1]
        iou_thrs = coco_eval.params.iouThrs
        selections = {
            "AP": precision[:, :, :, 0],
            "AP50": precision[np.isclose(iou_thrs, 0.5), :, :, 0],
            "AP75": precision[np.isclose(iou_thrs, 0.75), :, :, 0],
        }
        selections.update({name: precision[:, :, :, k] for k, name in enumerate(metrics[3:], start=1)})
        results = {name: _mean_percent(p) for name, p in selections.items()}
        table = tabulate([[f"{results[m]:.3f}" for m in metrics]], headers=metrics, tablefmt="pipe")
        logger.info(f"Evaluation results for {task} on '{self._dataset_name}':\n{table}")

        class_names = self._metadata.get("thing_classes") or [str(c) for c in coco_eval.params.catIds]
        per_class = [(name, _mean_percent(precision[:, :, k, 0])) for k, name in enumerate(class_names)]
        results.update({f"AP-{name}": ap for name, ap in per_class})
        pairs_per_row = 3
        rows = [
            list(itertools.chain.from_iterable((n, f"{ap:.3f}") for n, ap in per_class[i:i + pairs_per_row]))
            for i in range(0, len(per_class), pairs_per_row)
        ]
        headers = ["category", "AP"] * min(pairs_per_row, len(per_class))
        logger.info(f"Per-category {task} AP:\n" + tabulate(rows, headers=headers, tablefmt="pipe"))
        return results


def _tasks_of(coco_results: List[Dict[str, Any]]) -> Tuple[str, ...]:
    """The tasks the predictions can be evaluated on: bbox, and segm / keypoints where they have them."""
    tasks = ["bbox"]
    if any("segmentation" in r for r in coco_results):
        tasks.append("segm")
    if any("keypoints" in r for r in coco_results):
        tasks.append("keypoints")
    return tuple(tasks)


def _mean_percent(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(valid.mean() * 100) if valid.size else float("nan")


def _coco_api(use_fast_impl: bool):
    """The COCO and COCOeval classes of faster-coco-eval or of pycocotools; a COCOeval needs the COCO
    objects of its own package."""
    if use_fast_impl:
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster

        return FastCOCO, COCOeval_faster
    return COCO, COCOeval


def _load_ground_truth(dataset_name: str, json_file: Optional[str], use_fast_impl: bool):
    coco = _coco_api(use_fast_impl)[0]()
    if json_file:
        with open(json_file, "r", encoding="utf-8") as f:
            coco.dataset = json.load(f)
    else:
        logger.info(f"Dataset '{dataset_name}' has no json_file in its metadata; converting its dicts to COCO format")
        coco.dataset = convert_to_coco_dict(dataset_name)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def instances_to_coco_json(instances: Instances, image_id: Any) -> List[Dict[str, Any]]:
    """One image's predictions as COCO result records (category ids still contiguous).

    Args:
        instances: on the CPU, with pred_boxes, scores, pred_classes and optionally pred_masks
            (`Tensor[N, H, W]`, bool or probabilities) and pred_keypoints (`Tensor[N, J, 3]` of x, y, score).
        image_id: the image's id in the dataset.
    """
    if len(instances) == 0:
        return []
    boxes = BoxMode.convert(instances.pred_boxes.tensor, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS).tolist()
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()
    results = [
        {"image_id": image_id, "category_id": int(c), "bbox": b, "score": float(s)}
        for b, s, c in zip(boxes, scores, classes)
    ]
    if instances.has("pred_masks"):
        masks = instances.pred_masks
        for result, rle in zip(results, encode_masks(masks if masks.dtype == torch.bool else masks >= 0.5)):
            rle["counts"] = rle["counts"].decode("ascii")
            result["segmentation"] = rle
    if instances.has("pred_keypoints"):
        # COCO's keypoints are integer pixel indices, ours continuous coordinates (the loader adds 0.5)
        keypoints = instances.pred_keypoints.clone()
        keypoints[..., :2] -= 0.5
        for result, keypoints_i in zip(results, keypoints.flatten(1).tolist()):
            result["keypoints"] = keypoints_i
    return results


def _run_cocoeval(
    coco_gt,
    coco_results: List[Dict[str, Any]],
    task: str,
    max_dets: int,
    use_fast_impl: bool,
    kpt_oks_sigmas: Sequence[float] = (),
    gt_rles: Optional[Dict[int, Dict[str, Any]]] = None,
):
    """COCOeval of `task` after evaluate() and accumulate(), by the package that built `coco_gt`;
    `gt_rles` keeps the GT masks' RLE between evaluations with faster-coco-eval."""
    unknown = {r["image_id"] for r in coco_results} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(f"Predictions for image ids {sorted(unknown)[:10]} that the ground truth does not have")
    with contextlib.redirect_stdout(io.StringIO()), _without_gc_passes():  # pycocotools prints as it goes
        if task == "segm" and use_fast_impl:
            coco_dt = mask_results_as_coco(coco_gt, coco_results)
        elif task == "segm":
            # With a "bbox" present, loadRes would take the box area as the instance's area and sort
            # masks into small/medium/large by it.
            coco_dt = coco_gt.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in coco_results])
        else:
            coco_dt = coco_gt.loadRes(coco_results)
        # faster-coco-eval logs its progress at INFO through its own logger; pycocotools prints it.
        extra = {"print_function": logger.debug} if use_fast_impl else {}
        if task == "segm" and use_fast_impl:
            coco_eval = fast_mask_cocoeval_class()(coco_gt, coco_dt, {} if gt_rles is None else gt_rles, **extra)
        else:
            coco_eval = _coco_api(use_fast_impl)[1](coco_gt, coco_dt, task, **extra)
        if task == "keypoints":
            _set_oks_sigmas(coco_eval, coco_gt, coco_results, kpt_oks_sigmas)
        else:  # the keypoint AP keeps COCO's maxDets [20]
            coco_eval.params.maxDets = [1, 10, max_dets]
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


@contextlib.contextmanager
def _without_gc_passes():
    """Python's cyclic garbage collector pauses off: evaluation allocates a few objects per detection
    and GT box, and each of the collector's full passes walks every object alive (the results, the
    COCO indexes, and in training the dataset and model). That was about a quarter of faster-coco-eval's
    time on 500 images of the coco_eval benchmark (measured under load). The records hold no reference
    cycles; the collector is back on afterwards, unless it was off before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _set_oks_sigmas(coco_eval, coco_gt, coco_results: List[Dict[str, Any]], sigmas: Sequence[float]) -> None:
    """Sets the OKS sigmas (COCO's person ones when empty) after checking that predictions, ground
    truth and sigmas have the same number of keypoints; pycocotools would fail on a shape mismatch."""
    if sigmas:
        coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
    num_sigmas = len(coco_eval.params.kpt_oks_sigmas)
    num_predicted = len(coco_results[0]["keypoints"]) // 3
    num_gt = next(len(a["keypoints"]) // 3 for a in coco_gt.dataset["annotations"] if "keypoints" in a)
    if not num_sigmas == num_predicted == num_gt:
        source = "the evaluator's kpt_oks_sigmas" if sigmas else "COCO's person sigmas (the evaluator got no kpt_oks_sigmas)"
        # A script's own build_evaluator (Detectron2's train_net.py) may not pass the config's sigmas.
        raise ValueError(
            f"Keypoint evaluation: the predictions have {num_predicted} keypoints, the ground truth {num_gt} and "
            f"{source} {num_sigmas}; give one sigma per keypoint as COCOEvaluator(..., kpt_oks_sigmas=) "
            f"(DefaultTrainer passes TEST.KEYPOINT_OKS_SIGMAS)"
        )
