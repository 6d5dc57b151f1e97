"""Non-maximum suppression, from torchvision."""
from typing import Iterable, Optional

import torch
from torch import Tensor
from torchvision.ops import batched_nms as _tv_batched_nms
from torchvision.ops import nms

__all__ = ["batched_nms", "nms"]

# On the CPU, `batched_nms(..., max_kept=k)` runs NMS on the highest-scoring boxes first (see
# `_first_survivors`); False runs it on every box and keeps the first k (the tests' reference).
_HIGHEST_SCORES_FIRST_ON_CPU = True


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float,
    *,
    num_categories: Optional[int] = None,
    max_kept: Optional[int] = None,
) -> Tensor:
    """Non-maximum suppression run separately within each category.

    Args:
        boxes: `Tensor[R, 4]` (x0, y0, x1, y1).
        scores: `Tensor[R]`.
        idxs: `Tensor[R]` int, the category of each box; boxes of different categories never
            suppress each other.
        iou_threshold: a box is dropped when its IoU with a higher-scoring kept box of its category
            exceeds this.
        num_categories: the number of categories, when the caller knows it (every idx is then in
            `[0, num_categories)`; a box outside is dropped). A traced or exported model then runs NMS
            category by category, as eager mode does for many boxes; without it, it runs one NMS over
            all boxes, whose time grows with the square of their total number.
        max_kept: return only the first `max_kept` kept boxes (d2mask's addition). On the CPU they are
            then found among the highest-scoring boxes first, which on many boxes is far cheaper than
            suppressing them all and gives the same boxes.

    Returns:
        `Tensor[K]` int64: indices of the kept boxes, by decreasing score (equal scores in index order).
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"batched_nms expects boxes of shape [R, 4], got {tuple(boxes.shape)}")
    if not (len(boxes) == len(scores) == len(idxs)):
        raise ValueError(
            f"batched_nms got {len(boxes)} boxes, {len(scores)} scores and {len(idxs)} category ids"
        )
    if max_kept is not None and max_kept < 0:
        raise ValueError(f"batched_nms max_kept must be >= 0 (or None to keep every survivor), got {max_kept}")
    # Under mixed precision boxes and scores may arrive as float16; overlaps are compared in float32.
    boxes, scores = boxes.float(), scores.float()
    tracing = torch.jit.is_tracing() or torch.compiler.is_exporting()
    if max_kept is not None and _HIGHEST_SCORES_FIRST_ON_CPU and boxes.device.type == "cpu" and not tracing:
        return _first_survivors(boxes, scores, idxs, iou_threshold, max_kept)
    return _all_survivors(boxes, scores, idxs, iou_threshold, num_categories)[:max_kept]


def _all_survivors(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, num_categories: Optional[int]) -> Tensor:
    """`batched_nms` over every box."""
    if num_categories is not None and (torch.jit.is_tracing() or torch.compiler.is_exporting()):
        return _nms_per_category(boxes, scores, idxs, iou_threshold, range(num_categories))
    if torch.compiler.is_exporting():
        # torchvision chooses its algorithm by the number of boxes, which torch.export cannot branch
        # on; offsetting each category's boxes beyond all others' lets one NMS serve every size.
        # (The appended 0 gives the maximum of no boxes.)
        offsets = idxs.to(boxes.dtype) * (torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max() + 1)
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    return _tv_batched_nms(boxes, scores, idxs, iou_threshold)


def _nms_per_category(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, categories: Iterable[int]) -> Tensor:
    """`batched_nms` as one NMS per category of `categories` (boxes of other categories are dropped).
    Given `range(num_categories)`, tracing and torch.export record the loop in full (torchvision's own
    per-category loop runs over the categories present, a data-dependent count they cannot record).
    The result is torchvision's for many boxes: the kept boxes in index order, then sorted by
    decreasing score."""
    kept = torch.where(_kept_per_category(boxes, scores, idxs, iou_threshold, categories))[0]
    return kept[scores[kept].sort(descending=True)[1]]


def _kept_per_category(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, categories: Iterable[int]) -> Tensor:
    """`Tensor[R]` bool: the boxes NMS keeps, run separately on each category of `categories`."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for category in categories:
        members = torch.where(idxs == category)[0]
        keep[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    return keep


def _first_survivors(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, max_kept: int) -> Tensor:
    """The first `max_kept` boxes `batched_nms` keeps, found among the highest-scoring boxes.

    Whether NMS keeps a box depends only on the boxes that come before it by score (equal scores in
    index order, as torchvision's kernel sorts): NMS over the n highest-scoring boxes keeps exactly the
    boxes that NMS over all of them keeps among those n. So once it keeps `max_kept`, they are the
    answer; otherwise n doubles. NMS costs grow with the square of the boxes, so on the RPN's
    thousands of candidates per image, of which its 1000 (or the box head's 100) best survivors are
    all that is kept, this is several times cheaper. The NMS runs per category, as torchvision's for
    many boxes, so the IoUs are computed the same way.
    """
    order = scores.argsort(descending=True, stable=True)
    num = max(2 * max_kept, 1)
    while True:
        top = order[:num]  # by decreasing score, equal scores in index order
        top_idxs = idxs[top]
        kept = top[_kept_per_category(boxes[top], scores[top], top_idxs, iou_threshold, top_idxs.unique().tolist())]
        if len(kept) >= max_kept or num >= len(order):
            return kept[:max_kept]
        num *= 2
