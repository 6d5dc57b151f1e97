"""Anchor matchers: which ground-truth box, if any, each anchor (or proposal) is trained against.

Shape shorthand: `G` ground-truth boxes, `R` anchors or proposals.
"""
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor

from d2mask.config import ArgumentError, configurable
from d2mask.layers import nonzero_tuple
from d2mask.structures import Boxes, iter_pairwise_iou_chunks
from d2mask.utils.registry import Registry

__all__ = ["ANCHOR_MATCHER_REGISTRY", "Matcher", "build_anchor_matcher", "classes_of_matches", "stage_keys"]

ANCHOR_MATCHER_REGISTRY = Registry("ANCHOR_MATCHER")
ANCHOR_MATCHER_REGISTRY.__doc__ = """
Matchers of anchors/proposals to ground truth, selected by `<stage>.MATCHER.NAME` where the stage is
MODEL.RPN or MODEL.ROI_HEADS.

Each is called as `cls(cfg, stage_cfg)` and the object as
`matcher(gt_boxes: Boxes[G], boxes: Boxes[R], num_per_level: Optional[List[int]] = None)`, returning
`(matched_idxs: Tensor[R] int64, match_labels: Tensor[R] int8)` with labels 1 (foreground),
0 (background) or -1 (ignored). Anchors come with `num_per_level`, the L per-level counts of the
concatenated boxes (level by level, as the anchor generator makes them), for a level-aware matcher;
proposals, which have no levels, come without.
"""

# Each IoU chunk holds at most this many elements: 16 MB in float32, so the chunk and the few
# temporaries that compute it stay around 100 MB even for thousands of GT boxes.
_MAX_CHUNK_ELEMENTS = 1 << 22


def _is_iou(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def stage_keys(stage: str) -> Dict[str, str]:
    """The config keys under `stage` (MODEL.RPN, MODEL.ROI_HEADS, MODEL.RETINANET) of the arguments
    that the stage's matcher and sampler take from it, for `config_keys` around building them."""
    keys = {"thresholds": "IOU_THRESHOLDS", "labels": "IOU_LABELS",
            "batch_size_per_image": "BATCH_SIZE_PER_IMAGE", "positive_fraction": "POSITIVE_FRACTION"}
    return {argument: f"{stage}.{key}" for argument, key in keys.items()}


def build_anchor_matcher(cfg, stage_cfg):
    """Builds the matcher named by `stage_cfg.MATCHER.NAME` (stage_cfg is cfg.MODEL.RPN or cfg.MODEL.ROI_HEADS)."""
    return ANCHOR_MATCHER_REGISTRY.get(stage_cfg.MATCHER.NAME)(cfg, stage_cfg)


def classes_of_matches(gt_classes: Tensor, matched_idxs: Tensor, match_labels: Tensor, num_classes: int) -> Tensor:
    """The class each matched box is trained to predict, from a matcher's output.

    Args:
        gt_classes: `Tensor[G]` int64, the classes of the GT boxes (may be empty).
        matched_idxs, match_labels: `Tensor[R]`, the matcher's output.
        num_classes: K; the background class is K.

    Returns:
        `Tensor[R]` int64: the matched GT's class for foreground (label 1), K for background (label 0),
        -1 for ignored (label -1).
    """
    classes = gt_classes[matched_idxs] if len(gt_classes) > 0 else torch.zeros_like(matched_idxs)
    classes = torch.where(match_labels == 0, num_classes, classes)
    return torch.where(match_labels == -1, -1, classes)


@ANCHOR_MATCHER_REGISTRY.register()
class Matcher:
    """Matches each box to the ground-truth box it overlaps most, labelled by IoU thresholds.

    With thresholds [0.3, 0.7] and labels [0, -1, 1], a box whose best IoU is below 0.3 is background,
    in [0.3, 0.7) ignored and from 0.7 foreground. With `allow_low_quality_matches`, every GT box also
    makes foreground of the boxes that overlap it most (all of them on ties), so that no GT box is left
    without a positive (Faster R-CNN, Ren et al., 2015). Such a box keeps its own best-overlap match.

    The IoU matrix is never held whole: it is reduced chunk by chunk over the boxes, each chunk only
    against the GT boxes that overlap its bounding box, once for the per-box maxima and, for
    low-quality matches, again for the chunks where a GT box reaches its maximum, to find the boxes
    that tie with it. Peak extra memory therefore stays bounded, and time grows about linearly, for
    thousands of GT boxes on hundreds of thousands of anchors.

    Detectron2's form works too: `Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)`
    called with an IoU matrix `Tensor[G, R]` gives the same result as with the boxes it came from.
    """

    @configurable
    def __init__(
        self,
        thresholds: List[float],
        labels: List[int],
        allow_low_quality_matches: bool = False,
        *,
        max_chunk_elements: int = _MAX_CHUNK_ELEMENTS,
    ):
        """
        Args:
            thresholds: increasing IoU thresholds splitting [0, 1] into len(thresholds) + 1 intervals,
                each closed below and open above.
            labels: the label (-1, 0 or 1) of each interval, lowest first.
            allow_low_quality_matches: also label 1 each GT box's highest-IoU boxes (ties included).
                A GT box overlapping no box at all has none.
            max_chunk_elements: the most IoU values computed at once; bounds the memory used.
        """
        if not all(_is_iou(t) for t in thresholds) or any(b < a for a, b in zip(thresholds, thresholds[1:])):
            raise ArgumentError(
                f"Matcher `thresholds` must be increasing IoUs in [0, 1], got {list(thresholds)}", "thresholds"
            )
        if len(labels) != len(thresholds) + 1:
            raise ArgumentError(
                f"Matcher `labels` {list(labels)} must have one label per IoU interval, one label more than "
                f"`thresholds` {list(thresholds)}", "labels", "thresholds",
            )
        if any(label not in (-1, 0, 1) or isinstance(label, bool) for label in labels):
            raise ArgumentError(f"Matcher `labels` must be -1, 0 or 1, got {list(labels)}", "labels")
        if max_chunk_elements < 1:
            raise ValueError(f"Matcher max_chunk_elements must be positive, got {max_chunk_elements}")
        thresholds = [float(t) for t in thresholds]
        labels = [int(label) for label in labels]
        self.thresholds = thresholds
        self.labels = labels
        self.allow_low_quality_matches = allow_low_quality_matches
        self.max_chunk_elements = max_chunk_elements

    @classmethod
    def from_config(cls, cfg, stage_cfg):
        return {
            "thresholds": list(stage_cfg.IOU_THRESHOLDS),
            "labels": list(stage_cfg.IOU_LABELS),
            "allow_low_quality_matches": stage_cfg.MATCHER.ALLOW_LOW_QUALITY_MATCHES,
        }

    def __call__(
        self, gt_boxes: Union[Boxes, Tensor], boxes: Optional[Boxes] = None, num_per_level: Optional[List[int]] = None
    ) -> Tuple[Tensor, Tensor]:
        """
        Args:
            gt_boxes: the G ground-truth boxes of one image; or, alone (Detectron2's form), the IoU
                matrix `Tensor[G, R]` of the GT boxes with the boxes.
            boxes: the R anchors or proposals of that image.
            num_per_level: the registry contract's anchor counts per level; IoU matching does not use them.

        Returns:
            matched_idxs: `Tensor[R]` int64, the index of each box's highest-IoU GT box (0 when G == 0).
            match_labels: `Tensor[R]` int8, 1 foreground, 0 background, -1 ignored.
        """
        if isinstance(gt_boxes, Tensor) and boxes is None:
            return self._match_iou_matrix(gt_boxes)
        if not isinstance(gt_boxes, Boxes) or not isinstance(boxes, Boxes):
            raise TypeError(
                f"Matcher takes (gt_boxes: Boxes, boxes: Boxes) or an IoU matrix Tensor[G, N]; got "
                f"({type(gt_boxes).__name__}, {type(boxes).__name__})"
            )
        if len(gt_boxes) == 0:
            return self._without_gt(len(boxes), boxes.device)
        if num_per_level is not None:  # anchors: already ordered by level and position
            return self._match_boxes(gt_boxes, boxes)
        # Proposals come in score order, spread over the image, so every chunk of them would overlap
        # every GT box. Sorted by their centres along the longer side, each chunk covers a narrow
        # band, and only the GT boxes in it are compared (7x faster at 10,000 GT). Each box's match
        # does not depend on the order, so unsorting the result gives the same labels.
        centres = boxes.get_centers()  # (R, 2)
        spread = centres.amax(dim=0) - centres.amin(dim=0) if len(boxes) else torch.zeros(2, device=boxes.device)
        order = torch.argsort(torch.where(spread[0] >= spread[1], centres[:, 0], centres[:, 1]))
        sorted_idxs, sorted_labels = self._match_boxes(gt_boxes, boxes[order])
        matched_idxs, match_labels = torch.empty_like(sorted_idxs), torch.empty_like(sorted_labels)
        matched_idxs[order], match_labels[order] = sorted_idxs, sorted_labels
        return matched_idxs, match_labels

    def _match_boxes(self, gt_boxes: Boxes, boxes: Boxes) -> Tuple[Tensor, Tensor]:
        """`__call__` for G > 0 boxes, in the boxes' order."""
        device = boxes.device
        n = len(boxes)

        # Boxes no GT box overlaps keep IoU 0 and match GT 0, as an argmax over a zero column does.
        matched_vals = torch.zeros(n, dtype=boxes.tensor.dtype, device=device)
        matched_idxs = torch.zeros(n, dtype=torch.int64, device=device)
        gt_best = torch.zeros(len(gt_boxes), dtype=boxes.tensor.dtype, device=device)
        blocks = []  # (start, end, rows, best IoU of each row in the block), for low-quality matches
        for start, end, rows, iou in self._overlapping_iou_blocks(gt_boxes, boxes):
            # iou: (len(rows), end - start); reduce over GT for each box, over boxes for each GT.
            vals, idxs = iou.max(dim=0)
            matched_vals[start:end] = vals
            # `rows` is ascending, so on ties the first GT still wins; a zero maximum means GT 0.
            matched_idxs[start:end] = torch.where(vals > 0, rows[idxs], 0)
            if self.allow_low_quality_matches:
                row_best = iou.max(dim=1).values
                gt_best[rows] = torch.maximum(gt_best[rows], row_best)
                blocks.append((start, end, rows, row_best))

        match_labels = self._label(matched_vals)
        if self.allow_low_quality_matches:
            match_labels.masked_fill_(self._low_quality_matches(gt_boxes, boxes, gt_best, blocks), 1)
        return matched_idxs, match_labels

    def _without_gt(self, n: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        # Without ground truth every box falls in the lowest interval (background for the RPN).
        matched_idxs = torch.zeros(n, dtype=torch.int64, device=device)
        return matched_idxs, torch.full((n,), self.labels[0], dtype=torch.int8, device=device)

    def _label(self, matched_vals: Tensor) -> Tensor:
        """`Tensor[R]` int8: the label of the interval of each box's best IoU."""
        thresholds = torch.tensor(self.thresholds, dtype=matched_vals.dtype, device=matched_vals.device)
        labels = torch.tensor(self.labels, dtype=torch.int8, device=matched_vals.device)
        # Interval i holds values v with thresholds[i - 1] <= v < thresholds[i].
        return labels[torch.bucketize(matched_vals, thresholds, right=True)]

    def _match_iou_matrix(self, iou: Tensor) -> Tuple[Tensor, Tensor]:
        """Detectron2's form: the same matching from a precomputed IoU matrix `Tensor[G, R]`."""
        if iou.dim() != 2:
            raise ValueError(f"Matcher takes an IoU matrix of shape [G, N], got {tuple(iou.shape)}")
        if iou.shape[0] == 0:
            return self._without_gt(iou.shape[1], iou.device)
        if iou.shape[1] == 0:
            return self._without_gt(0, iou.device)
        matched_vals, matched_idxs = iou.max(dim=0)
        match_labels = self._label(matched_vals)
        if self.allow_low_quality_matches:
            gt_best = iou.max(dim=1, keepdim=True).values  # (G, 1)
            # as in the boxes form, a GT box overlapping nothing (best 0) makes no positives
            match_labels.masked_fill_(((iou == gt_best) & (gt_best > 0)).any(dim=0), 1)
        return matched_idxs, match_labels

    def _overlapping_iou_blocks(self, gt_boxes: Boxes, boxes: Boxes) -> Iterator[Tuple[int, int, Tensor, Tensor]]:
        """Yields (start, end, rows, iou) over column chunks of the IoU matrix, `iou` being
        `Tensor[len(rows), end - start]` for only the GT boxes `rows` (ascending) that overlap the chunk's
        bounding box; every other GT box has IoU 0 with all of the chunk's boxes.

        Anchors come ordered by level and position, so a chunk covers a narrow band of the image and
        most GT boxes of a dense image are skipped: the work shrinks by that share. Selecting the rows
        costs one host sync per chunk, not per box.
        """
        gt = gt_boxes.tensor
        step = max(1, self.max_chunk_elements // len(gt_boxes))
        for start in range(0, len(boxes), step):
            chunk = boxes[start : start + step]
            lo, hi = chunk.tensor[:, :2].amin(dim=0), chunk.tensor[:, 2:].amax(dim=0)
            near = (gt[:, 0] < hi[0]) & (gt[:, 1] < hi[1]) & (gt[:, 2] > lo[0]) & (gt[:, 3] > lo[1])
            rows = nonzero_tuple(near)[0]
            if len(rows) == 0:
                continue
            for s, e, iou in iter_pairwise_iou_chunks(gt_boxes[rows], chunk, self.max_chunk_elements):
                yield start + s, start + e, rows, iou

    def _low_quality_matches(
        self, gt_boxes: Boxes, boxes: Boxes, gt_best: Tensor, blocks: List[Tuple[int, int, Tensor, Tensor]]
    ) -> Tensor:
        """`Tensor[R]` bool: the boxes whose IoU with some GT box equals that GT's best IoU `gt_best`.

        Only the blocks of the first pass in which a GT box reached its best IoU are recomputed, and
        only for those GT boxes: each GT box's best usually lies in one block, so this costs about one
        block per GT instead of a second pass over the whole matrix.
        """
        hit = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
        for start, end, rows, row_best in blocks:
            best = gt_best[rows]
            # A GT box overlapping nothing (best 0) would otherwise "match" every box at IoU 0.
            rows = rows[(row_best == best) & (best > 0)]
            if len(rows) == 0:
                continue
            target = gt_best[rows][:, None]
            for s, e, iou in iter_pairwise_iou_chunks(gt_boxes[rows], boxes[start:end], self.max_chunk_elements):
                # (len(rows), e - s) -> (e - s,)
                hit[start + s : start + e] |= torch.any(iou == target, dim=0)
        return hit
