"""Cityscapes' own metrics, computed as cityscapesScripts computes them (its evaluation/
evalPixelLevelSemanticLabeling.py and evalInstanceLevelSemanticLabeling.py) without writing the
prediction files it reads: the pixel-level IoU and instance-weighted iIoU of classes and categories,
and the instance-level AP over mask IoU thresholds 0.5:0.95.

The ground truth is read from the dataset metadata's `gt_dir` (Cityscapes' layout, see
d2mask/data/datasets/cityscapes.py); unlike cityscapesScripts, which requires a prediction for each
image below it, only the images given to `process` are evaluated.
"""
import logging
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from tabulate import tabulate

from ..data.catalog import DatasetError, MetadataCatalog
from ..data.datasets.builtin_meta import CITYSCAPES_LABELS
from ..data.datasets.cityscapes import cityscapes_gt_file
from ..data.detection_utils import read_sem_seg
from ..utils import comm
from .evaluator import DatasetEvaluator
from .sem_seg_evaluation import SemSegEvaluator

__all__ = ["CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator", "instance_average_precision"]

logger = logging.getLogger(__name__)

_CLASSES = [label for label in CITYSCAPES_LABELS if not label.ignore_in_eval]  # index = train id
_THINGS = [label for label in _CLASSES if label.has_instances]
# label id -> train id, -1 for the labels not evaluated
_TRAIN_ID_OF_LABEL_ID = np.full(max(label.id for label in CITYSCAPES_LABELS) + 1, -1)
_TRAIN_ID_OF_LABEL_ID[[label.id for label in _CLASSES]] = np.arange(len(_CLASSES))
# Labels whose pixels are ignored: their ids in the instance maps mark the void regions.
_VOID_IDS = np.array([label.id for label in CITYSCAPES_LABELS if label.ignore_in_eval and label.id >= 0])
# Categories in the order of the label table; "void" has no evaluated class and is left out.
_CATEGORIES = list(dict.fromkeys(label.category for label in _CLASSES))
_CATEGORY_OF_CLASS = np.array([_CATEGORIES.index(label.category) for label in _CLASSES])
# Categories whose labels all have instances ("human", "vehicle"): those with an instance-level score.
_INSTANCE_CATEGORIES = [
    i for i, c in enumerate(_CATEGORIES)
    if all(label.has_instances for label in CITYSCAPES_LABELS if label.category == c and label.id >= 0)
]
_THING_CLASSES = np.array([k for k, label in enumerate(_CLASSES) if label.has_instances])
# The mean size in pixels of each class's instances, the weight of an instance of size s being
# mean / s (cityscapesScripts' avgClassSize).
_MEAN_INSTANCE_SIZE = {
    "person": 3462.4756337644, "rider": 3930.4788056518, "car": 12794.0202738185, "truck": 27855.1264367816,
    "bus": 35732.1511111111, "train": 67583.7075812274, "motorcycle": 6298.7200839748, "bicycle": 4672.3249222261,
}
# The instance-level AP's mask IoU thresholds, computed as cityscapesScripts does: its comparisons
# use these float values (0.6000000000000001, ...), and so do ours.
IOU_THRESHOLDS = np.arange(0.5, 1.0, 0.05)
MIN_REGION_SIZE = 100  # pixels; smaller GT instances are ignored


def _gt_dir(dataset_name: str, evaluator: str) -> str:
    gt_dir = MetadataCatalog.get(dataset_name).get("gt_dir")
    if not gt_dir:
        raise ValueError(f"{evaluator}: dataset '{dataset_name}' has no gt_dir in its metadata (Cityscapes' gtFine/<split>)")
    return gt_dir


def _read_instance_ids(file_name: str, gt_dir: str, shape: Optional[Sequence[int]] = None) -> np.ndarray:
    """The `*_gtFine_instanceIds.png` of image `file_name` as `ndarray[H, W]` int64, of the prediction's `shape` if given."""
    instance_file = cityscapes_gt_file(file_name, gt_dir, "instanceIds.png")
    ids = read_sem_seg(instance_file).astype(np.int64)
    if shape is not None and ids.shape != tuple(shape):
        raise DatasetError(f"Instance map {instance_file} is {ids.shape} but the prediction for {file_name} is {tuple(shape)}")
    label_ids = np.where(ids >= 1000, ids // 1000, ids)
    if label_ids.min() < 0 or label_ids.max() >= len(_TRAIN_ID_OF_LABEL_ID):
        bad = int(ids[(label_ids < 0) | (label_ids >= len(_TRAIN_ID_OF_LABEL_ID))][0])
        raise DatasetError(f"Instance map {instance_file} has value {bad}, neither a Cityscapes label id nor id * 1000 + k")
    return ids


def _iou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)


def _nanmean(x: np.ndarray) -> float:
    valid = x[~np.isnan(x)]
    return float(valid.mean()) if valid.size else float("nan")


class CityscapesSemSegEvaluator(SemSegEvaluator):
    """Cityscapes' pixel-level scores of the 19 classes (train ids), from SemSegEvaluator's confusion
    matrix and the GT instances of `<gt_dir>/<city>/*_gtFine_instanceIds.png`.

    Results (percent) under "sem_seg", with Detectron2's names: IoU (mean over classes), iIoU (the
    8 instance classes, each GT instance's pixels weighted by the class's mean instance size over
    the instance's size), IoU_sup and iIoU_sup (the same over categories: flat, construction, ...;
    human and vehicle), and IoU-<class>. As in cityscapesScripts, a score is NaN and left out of
    its mean only when the class has neither GT nor predicted pixels (SemSegEvaluator's mIoU also
    leaves out classes that are only predicted).
    """

    def __init__(self, dataset_name: str):
        """
        Args:
            dataset_name: a dataset of `load_cityscapes_semantic` dicts whose metadata has Cityscapes'
                19 stuff_classes in train-id order, ignore_label and gt_dir.
        """
        super().__init__(dataset_name)
        if self._class_names != [label.name for label in _CLASSES]:
            raise ValueError(f"CityscapesSemSegEvaluator: dataset '{dataset_name}' must have Cityscapes' 19 "
                             f"stuff_classes in train-id order (road, sidewalk, ...), not {self._class_names[:3]}...")
        self._gt_dir = _gt_dir(dataset_name, "CityscapesSemSegEvaluator")

    def reset(self) -> None:
        super().reset()
        # (2, K) and (2, number of categories): the weighted (TP, FN) pixels of the GT instances
        self._class_instance_counts = np.zeros((2, len(_CLASSES)))
        self._category_instance_counts = np.zeros((2, len(_CATEGORIES)))

    def _process_image(self, file_name: str, pred: np.ndarray) -> None:
        super()._process_image(file_name, pred)
        ids = _read_instance_ids(file_name, self._gt_dir, pred.shape)
        instance = ids > 1000  # the instances, id * 1000 + k (cityscapesScripts' selection)
        values, pixel_instance = np.unique(ids[instance], return_inverse=True)
        classes = _TRAIN_ID_OF_LABEL_ID[values // 1000]  # -1: a class not evaluated (caravan, trailer)
        predicted = pred[instance]
        size = np.bincount(pixel_instance, minlength=len(values))
        tp = np.bincount(pixel_instance, weights=predicted == classes[pixel_instance], minlength=len(values))
        same_category = _CATEGORY_OF_CLASS[predicted] == _CATEGORY_OF_CLASS[classes[pixel_instance]]
        category_tp = np.bincount(pixel_instance, weights=same_category, minlength=len(values))
        evaluated = classes >= 0
        classes, size, tp, category_tp = classes[evaluated], size[evaluated], tp[evaluated], category_tp[evaluated]
        weight = np.array([_MEAN_INSTANCE_SIZE[_CLASSES[k].name] for k in classes]) / size
        np.add.at(self._class_instance_counts, (0, classes), tp * weight)
        np.add.at(self._class_instance_counts, (1, classes), (size - tp) * weight)
        categories = _CATEGORY_OF_CLASS[classes]
        np.add.at(self._category_instance_counts, (0, categories), category_tp * weight)
        np.add.at(self._category_instance_counts, (1, categories), (size - category_tp) * weight)

    def evaluate(self) -> Dict[str, Any]:
        comm.synchronize()
        conf_matrix = sum(comm.gather(self._conf_matrix, dst=0))
        class_instances = sum(comm.gather(self._class_instance_counts, dst=0))
        category_instances = sum(comm.gather(self._category_instance_counts, dst=0))
        if not comm.is_main_process():
            return {}
        counts = conf_matrix[:-1, :-1].astype(np.float64)  # (predicted, GT) pixels where GT is not ignored
        # TP, FP and FN pixels of groups of classes: FP are predictions of the group on GT of other
        # (evaluated) classes, FN the group's GT predicted as other classes.
        classes = [[k] for k in range(len(_CLASSES))]
        categories = [np.flatnonzero(_CATEGORY_OF_CLASS == i).tolist() for i in range(len(_CATEGORIES))]
        class_tp, class_fp, class_fn = _group_counts(counts, classes)
        category_tp, category_fp, category_fn = _group_counts(counts, categories)
        class_iou = _iou(class_tp, class_fp, class_fn)
        class_iiou = _iou(class_instances[0], class_fp, class_instances[1])[_THING_CLASSES]
        category_iiou = _iou(category_instances[0], category_fp, category_instances[1])[_INSTANCE_CATEGORIES]
        results = {
            "IoU": 100 * _nanmean(class_iou),
            "iIoU": 100 * _nanmean(class_iiou),
            "IoU_sup": 100 * _nanmean(_iou(category_tp, category_fp, category_fn)),
            "iIoU_sup": 100 * _nanmean(category_iiou),
        }
        results.update({f"IoU-{label.name}": 100 * float(iou) for label, iou in zip(_CLASSES, class_iou)})
        main = ["IoU", "iIoU", "IoU_sup", "iIoU_sup"]
        table = tabulate([[f"{results[k]:.3f}" for k in main]], headers=main, tablefmt="pipe")
        logger.info(f"Cityscapes semantic segmentation results on '{self._dataset_name}':\n{table}")
        return OrderedDict({"sem_seg": results})


def _group_counts(counts: np.ndarray, groups: List[List[int]]):
    """(TP, FP, FN) pixels, each `ndarray[len(groups)]`, of groups of classes in a (K, K) (predicted, GT) matrix."""
    tp = np.array([counts[np.ix_(g, g)].sum() for g in groups])
    fp = np.array([counts[g, :].sum() for g in groups]) - tp
    fn = np.array([counts[:, g].sum() for g in groups]) - tp
    return tp, fp, fn


class CityscapesInstanceEvaluator(DatasetEvaluator):
    """Cityscapes' instance-level AP of the predicted masks ("pred_masks" at the image's size), by
    the protocol of cityscapesScripts' evalInstanceLevelSemanticLabeling: for each class and mask
    IoU threshold t in 0.5:0.95, a prediction with IoU > t with a GT instance of its class matches it
    (the highest-scoring one is the true positive, the others false positives); an unmatched
    prediction is a false positive unless more than t of its pixels lie on void, crowd ("cargroup")
    or GT instances under 100 pixels, which are not counted as GT. AP is the area under the
    precision/recall curve integrated as cityscapesScripts does; NaN for a class without GT.

    Results (percent) under "segm", with Detectron2's names: AP (mean over classes and thresholds),
    AP50, and AP-<class>.
    """

    def __init__(self, dataset_name: str):
        """
        Args:
            dataset_name: a Cityscapes dataset whose metadata has gt_dir and thing_classes that are
                Cityscapes' instance classes (person, rider, car, ...) or, as Panoptic-DeepLab's
                (cityscapes_fine_panoptic_*), all 19 evaluated classes. Predictions of classes
                without instances are left out, as cityscapesScripts leaves them out.
        """
        meta = MetadataCatalog.get(dataset_name)
        things = {label.name: k for k, label in enumerate(_THINGS)}
        classes = {label.name for label in _CLASSES}
        unknown = [name for name in meta.get("thing_classes", []) if name not in classes]
        if not any(name in things for name in meta.get("thing_classes", [])) or unknown:
            raise ValueError(f"CityscapesInstanceEvaluator: dataset '{dataset_name}' must have thing_classes among "
                             f"Cityscapes' 19 evaluated classes, with some of its instance classes ({', '.join(things)}); "
                             f"not {unknown or 'none of those'}")
        self._dataset_name = dataset_name
        self._gt_dir = _gt_dir(dataset_name, "CityscapesInstanceEvaluator")
        # contiguous id -> index in _THINGS; -1 for a class without instances
        self._thing_index = np.array([things.get(name, -1) for name in meta.thing_classes])
        self.reset()

    def reset(self) -> None:
        self._images: List[Dict[str, np.ndarray]] = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            if "instances" in out:
                instances = out["instances"].to("cpu")
                masks = instances.pred_masks
                masks = (masks >= 0.5 if masks.is_floating_point() else masks.bool()).numpy()
                classes, scores = self._thing_index[instances.pred_classes.numpy()], instances.scores.numpy()
                keep = classes >= 0
                masks, classes, scores = masks[keep], classes[keep], scores[keep]
                ids = _read_instance_ids(inp["file_name"], self._gt_dir, masks.shape[1:])
            else:  # no predictions: the image's GT instances still count
                ids = _read_instance_ids(inp["file_name"], self._gt_dir)
                masks, classes, scores = np.zeros((0,) + ids.shape, dtype=bool), np.zeros(0, int), np.zeros(0)
            self._images.append(match_instances(ids, masks, classes, scores))

    def evaluate(self) -> Dict[str, Any]:
        comm.synchronize()
        images = [image for part in comm.gather(self._images, dst=0) for image in part]
        if not comm.is_main_process():
            return {}
        if not images:
            logger.warning(f"CityscapesInstanceEvaluator: no images of '{self._dataset_name}' were processed")
            return {}
        ap = instance_average_precision(images)  # (8, T)
        results = {"AP": 100 * _nanmean(ap), "AP50": 100 * _nanmean(ap[:, 0])}
        results.update({f"AP-{label.name}": 100 * float(ap[k].mean()) for k, label in enumerate(_THINGS)})
        table = tabulate([[f"{results[k]:.3f}" for k in ("AP", "AP50")]], headers=["AP", "AP50"], tablefmt="pipe")
        logger.info(f"Cityscapes instance segmentation results on '{self._dataset_name}':\n{table}")
        return OrderedDict({"segm": results})


def match_instances(ids: np.ndarray, masks: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> Dict[str, np.ndarray]:
    """What the AP needs of one image: each prediction's best GT instance of its class, and the GT
    instances that count.

    Args:
        ids: `ndarray[H, W]`, the image's `*_gtFine_instanceIds.png`.
        masks: `ndarray[R, H, W]` bool, the predicted masks.
        classes: `ndarray[R]`, each prediction's index among the 8 instance classes.
        scores: `ndarray[R]`.

    Returns:
        {"classes", "scores", "best_iou" (the largest mask IoU with a GT instance of its class, 0 if
        none), "best_gt" (that instance's index), "counts" (whether it is one that counts: not a
        crowd, at least MIN_REGION_SIZE pixels), "ignored" (the share of its pixels on void, crowds
        and small instances)}, each `ndarray[R']` over the R' non-empty predictions, and
        "num_gt": `ndarray[8]`, the instances that count, by class.
    """
    pixel_counts = masks.reshape(len(masks), ids.size).sum(axis=1)
    keep = pixel_counts > 0  # cityscapesScripts skips empty masks
    masks, classes, scores, pixel_counts = masks[keep], classes[keep], scores[keep], pixel_counts[keep]
    values, gt_index = np.unique(ids, return_inverse=True)
    gt_index = gt_index.reshape(-1)
    gt_pixels = np.bincount(gt_index)
    gt_class = np.full(len(values), -1)  # index among the 8 instance classes; -1 for other values
    for k, label in enumerate(_THINGS):
        gt_class[np.where(values >= 1000, values // 1000, values) == label.id] = k
    crowd, small = values < 1000, gt_pixels < MIN_REGION_SIZE
    # (R, U) pixels of each prediction on each GT value, from the predictions' pixels only
    pred_index, pixel = np.nonzero(masks.reshape(len(masks), ids.size))
    intersection = np.bincount(pred_index * len(values) + gt_index[pixel], minlength=len(masks) * len(values))
    intersection = intersection.reshape(len(masks), len(values))
    void_pixels = intersection @ np.isin(values, _VOID_IDS)
    intersection = intersection * (classes[:, None] == gt_class[None, :])  # only instances of its class
    iou = intersection / (pixel_counts[:, None] + gt_pixels[None, :] - intersection)
    best_gt = iou.argmax(axis=1)
    # A crowd under MIN_REGION_SIZE pixels counts twice, as in cityscapesScripts.
    ignored = void_pixels + intersection @ (crowd.astype(np.int64) + small)
    counts = ~crowd & ~small & (gt_class >= 0)
    return {
        "classes": classes, "scores": scores.astype(np.float64), "best_iou": iou.max(axis=1, initial=0.0),
        "best_gt": best_gt, "counts": counts[best_gt], "ignored": ignored / pixel_counts,
        "num_gt": np.bincount(gt_class[counts], minlength=len(_THINGS)),
    }


def instance_average_precision(images: List[Dict[str, np.ndarray]]) -> np.ndarray:
    """`ndarray[8, T]`: the AP of each instance class at each of the T IOU_THRESHOLDS, over the
    images' `match_instances` results; NaN for a class without GT instances that count."""
    # one array over all images, the best GT's index made unique across images
    offsets = np.cumsum([0] + [image["best_gt"].max(initial=-1) + 1 for image in images])
    cat = {key: np.concatenate([image[key] for image in images]) for key in ("classes", "scores", "best_iou", "counts", "ignored")}
    best_gt = np.concatenate([image["best_gt"] + offset for image, offset in zip(images, offsets)])
    num_gt = sum(image["num_gt"] for image in images)
    ap = np.full((len(_THINGS), len(IOU_THRESHOLDS)), np.nan)
    for k in range(len(_THINGS)):
        if num_gt[k] == 0:
            continue
        of_class = cat["classes"] == k
        for t, threshold in enumerate(IOU_THRESHOLDS):
            matched = of_class & (cat["best_iou"] > threshold)
            candidates = np.flatnonzero(matched & cat["counts"])
            # the highest-scoring candidate of each GT instance is its true positive
            order = candidates[np.lexsort((-cat["scores"][candidates], best_gt[candidates]))]
            first = np.r_[True, best_gt[order][1:] != best_gt[order][:-1]] if len(order) else np.zeros(0, bool)
            false_positive = of_class & ~matched & (cat["ignored"] <= threshold)
            scores = np.concatenate([cat["scores"][order], cat["scores"][false_positive]])
            is_true = np.concatenate([first, np.zeros(int(false_positive.sum()), bool)])
            ap[k, t] = _average_precision(scores, is_true, num_gt[k]) if of_class.any() else 0.0
    return ap


def _average_precision(scores: np.ndarray, is_true: np.ndarray, num_gt: int) -> float:
    """The area under the precision/recall curve of detections with `scores` and `is_true`, `num_gt`
    GT instances in all, integrated as cityscapesScripts does: one point per distinct score (the
    detections at or above it), then (precision 1, recall 0); point i weighs half the recall
    between its neighbours (the first one's left neighbour being itself)."""
    if not len(scores):  # every prediction was ignored (cityscapesScripts fails on this case)
        return 0.0
    order = np.argsort(scores, kind="stable")
    scores, is_true = scores[order], is_true[order]
    thresholds_at = np.unique(scores, return_index=True)[1]  # first index of each distinct score
    true_below = np.r_[0, np.cumsum(is_true)][thresholds_at]
    tp = is_true.sum() - true_below
    precision = np.r_[tp / (len(scores) - thresholds_at), 1.0]
    recall = np.r_[tp / num_gt, 0.0]
    widths = 0.5 * (np.r_[recall[0], recall[:-1]] - np.r_[recall[1:], 0.0])
    return float(precision @ widths)
