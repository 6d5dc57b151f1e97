"""COCO's run-length encoding (RLE) of masks for evaluation: the encoding of predicted masks, and the
mask IoU of COCOEvaluator's faster-coco-eval path.

Evaluating masks is mostly this: every detection's mask is encoded once (process()), then compared
with the GT masks of its image and class (evaluate()). faster-coco-eval alone converts each mask
between compressed and decoded RLE several times (area, box, before evaluating, then per image and
class again), more than half of its mask evaluation on the coco_eval benchmark; here each mask is
decoded only where an IoU needs it, by pycocotools, and each GT mask is converted once per evaluator.
"""
import copy
import functools
from typing import Any, Dict, List

import numpy as np
import pycocotools.mask as mask_util
import torch

__all__ = ["encode_masks"]


def encode_masks(masks: torch.Tensor) -> List[Dict[str, Any]]:
    """Each mask of `Tensor[R, H, W]` (bool, CPU) as COCO's compressed RLE, as `pycocotools.mask.encode`
    gives it.

    COCO's runs go down the columns, so encoding a whole image needs a transposed copy of it. Here only
    each mask's bounding block (a detection's mask is zero outside its box) is copied, column by
    column, the blocks of all masks into one array whose runs are found at once. Background
    separators in that array stand for the pixels left out: one before each block (the columns before
    it and the rows above it), one after each column (the rows below it and above the next column's
    block; after the last column, the rest of the image). A run's count is the number of pixels it
    stands for. pycocotools compresses the counts.
    """
    num, h, w = masks.shape
    if num == 0:
        return []
    pixels = masks.numpy()
    # The rows with foreground, then the columns with foreground in the band of those rows (one pass
    # over the image; torch's any() is 8x slower). An empty mask gets no columns, and rows as if of
    # full height, so that the separator before its (empty) block stands for the whole image.
    rows = pixels.any(axis=2)  # (R, H, W) -> (R, H)
    nonempty = rows.any(axis=1)
    top = np.where(nonempty, rows.argmax(axis=1), 0)
    bottom = np.where(nonempty, h - 1 - rows[:, ::-1].argmax(axis=1), h - 1)
    first, last = np.full(num, w), np.full(num, w - 1)
    for i in np.flatnonzero(nonempty).tolist():
        columns = np.flatnonzero(pixels[i, top[i]:bottom[i] + 1].any(axis=0))
        first[i], last[i] = columns[0], columns[-1]
    height = bottom - top + 1
    # Blocks of full columns have no separators between columns (their runs go on down the next
    # one); they and empty masks end with a separator of their own.
    gap = (height < h) & nonempty
    stride = height + gap  # a column and its separator
    sizes = 1 + (last - first + 1) * stride + ~gap
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    flat = np.zeros(int(sizes.sum()), dtype=bool)
    weight = np.ones(flat.size, dtype=np.int64)  # the pixels each element stands for
    for i, start in zip(np.flatnonzero(nonempty).tolist(), starts[nonempty].tolist()):
        span = slice(start + 1, start + 1 + (last[i] - first[i] + 1) * stride[i])
        flat[span].reshape(-1, stride[i])[:, :height[i]] = pixels[i, top[i]:bottom[i] + 1, first[i]:last[i] + 1].T
        if gap[i]:
            weight[span].reshape(-1, stride[i])[:, height[i]] = h - height[i]
    weight[starts] = first * h + top
    weight[starts + sizes - 1] = h - 1 - bottom + (w - 1 - last) * h

    is_run_start = np.empty_like(flat)
    is_run_start[0] = True
    np.not_equal(flat[1:], flat[:-1], out=is_run_start[1:])
    is_run_start[starts] = True  # a mask's first separator never continues the previous mask's last run
    run_starts = np.flatnonzero(is_run_start)
    counts = np.add.reduceat(weight, run_starts)
    first_run = np.searchsorted(run_starts, starts)
    last_run = np.append(first_run[1:], counts.size) - 1
    # A mask set in the image's last pixel ends with an empty background run, which COCO's RLE omits;
    # an empty first run (a mask set in the first pixel) stays.
    end = last_run + 1 - ((counts[last_run] == 0) & (last_run > first_run))
    return mask_util.frPyObjects(
        [{"counts": counts[a:b], "size": [h, w]} for a, b in zip(first_run.tolist(), end.tolist())], h, w
    )


# pycocotools' area() keeps the number of masks in a uint8: at most 255 per call.
_AREA_BATCH = 255


def mask_results_as_coco(coco_gt, coco_results: List[Dict[str, Any]]):
    """The COCO object (of `coco_gt`'s class) of mask results, as `coco_gt.loadRes` makes it of them
    without their "bbox" (each detection's area is its mask's), but without the masks' boxes, which
    evaluating masks never reads. loadRes calls the mask API once per detection; here it is one
    pycocotools call per 255 detections."""
    rles = [r["segmentation"] for r in coco_results]
    areas = [a for i in range(0, len(rles), _AREA_BATCH) for a in mask_util.area(rles[i:i + _AREA_BATCH]).tolist()]
    annotations = [
        {"id": i, "image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
         "segmentation": rle, "area": area, "iscrowd": 0}
        for i, (r, rle, area) in enumerate(zip(coco_results, rles, areas), start=1)
    ]
    coco_dt = type(coco_gt)()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": annotations,
                       "categories": copy.deepcopy(coco_gt.dataset["categories"])}
    coco_dt.createIndex()
    return coco_dt


def annotation_rle(segmentation, height: int, width: int) -> Dict[str, Any]:
    """A COCO annotation's "segmentation" (polygons, or RLE compressed or not) as one compressed RLE."""
    if isinstance(segmentation, list):  # polygons of one object; merging one is a fifth of the time
        rles = mask_util.frPyObjects(segmentation, height, width)
        return rles[0] if len(rles) == 1 else mask_util.merge(rles)
    if isinstance(segmentation["counts"], list):
        return mask_util.frPyObjects(segmentation, height, width)
    return segmentation


@functools.lru_cache(maxsize=None)
def fast_mask_cocoeval_class():
    """faster-coco-eval's COCOeval for masks ("segm"), with the IoU computed by pycocotools from the
    masks' compressed RLE once per image (its detections against its GT objects, of the classes both
    have), each class's IoU taken from it; the GT masks are converted once and kept in `gt_rles`
    (annotation id -> RLE), which the evaluations of one COCOEvaluator share.

    faster-coco-eval's own path re-encodes every GT and detection mask before evaluating (decoding
    each, then compressing it again) and decodes them again for each image and class. With
    `compute_rle` off its preparation leaves the masks alone; the matching and accumulation stay its own.
    """
    from faster_coco_eval import COCOeval_faster

    class MaskCOCOevalFaster(COCOeval_faster):
        def __init__(self, coco_gt, coco_dt, gt_rles: Dict[int, Dict[str, Any]], **kwargs):
            super().__init__(coco_gt, coco_dt, "segm", **kwargs)
            self.params.compute_rle = False
            self._gt_rles = gt_rles
            self._image = (None, None, {}, {})  # image id, its IoU [detections, GT], their rows and columns

        def computeIoU(self, imgId, catId):
            p = self.params
            cat_ids = [catId] if p.useCats else p.catIds
            gt = self.gt_dataset.get_instances([imgId], cat_ids, bool(p.useCats))[0][0]
            dt = self.dt_dataset.get_instances([imgId], cat_ids, bool(p.useCats))[0][0]
            if not gt or not dt:
                return []
            # The rows COCOeval matches: the detections by decreasing score (ties in order), at most maxDets.
            dt = sorted(dt, key=lambda d: -d["score"])[:p.maxDets[-1]]
            if self._image[0] != imgId:  # COCOeval goes through the classes of one image, then the next
                self._image = self._image_ious(imgId)
            _, ious, rows, columns = self._image
            columns = [columns[g["id"]] for g in gt]
            return [[row[j] for j in columns] for row in (ious[rows[d["id"]]] for d in dt)]

        def _image_ious(self, image_id):
            dts, gts = self.cocoDt.imgToAnns[image_id], self.cocoGt.imgToAnns[image_id]
            if self.params.useCats:  # only the objects of classes both have are ever compared
                shared = {d["category_id"] for d in dts} & {g["category_id"] for g in gts}
                dts = [d for d in dts if d["category_id"] in shared]
                gts = [g for g in gts if g["category_id"] in shared]
            ious = mask_util.iou([d["segmentation"] for d in dts], [self._gt_rle(g) for g in gts],
                                 [int(g.get("iscrowd", 0)) for g in gts]).tolist()  # lists: sliced per class
            return (image_id, ious, {d["id"]: i for i, d in enumerate(dts)},
                    {g["id"]: j for j, g in enumerate(gts)})

        def _gt_rle(self, annotation: Dict[str, Any]) -> Dict[str, Any]:
            rle = self._gt_rles.get(annotation["id"])
            if rle is None:
                image = self.cocoGt.imgs[annotation["image_id"]]
                rle = annotation_rle(annotation["segmentation"], image["height"], image["width"])
                self._gt_rles[annotation["id"]] = rle
            return rle

    return MaskCOCOevalFaster
