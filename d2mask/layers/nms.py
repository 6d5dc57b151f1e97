"""Non-maximum suppression, from torchvision."""
from typing import Optional

import torch
from torch import Tensor
from torchvision.ops import batched_nms as _tv_batched_nms
from torchvision.ops import nms

__all__ = ["batched_nms", "nms"]


def batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, *, num_categories: Optional[int] = None
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

    Returns:
        `Tensor[K]` int64: indices of the kept boxes, by decreasing score.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"batched_nms expects boxes of shape [R, 4], got {tuple(boxes.shape)}")
    if not (len(boxes) == len(scores) == len(idxs)):
        raise ValueError(
            f"batched_nms got {len(boxes)} boxes, {len(scores)} scores and {len(idxs)} category ids"
        )
    # Under mixed precision boxes and scores may arrive as float16; overlaps are compared in float32.
    boxes, scores = boxes.float(), scores.float()
    if num_categories is not None and (torch.jit.is_tracing() or torch.compiler.is_exporting()):
        return _nms_per_category(boxes, scores, idxs, iou_threshold, num_categories)
    if torch.compiler.is_exporting():
        # torchvision chooses its algorithm by the number of boxes, which torch.export cannot branch
        # on; offsetting each category's boxes beyond all others' lets one NMS serve every size.
        # (The appended 0 gives the maximum of no boxes.)
        offsets = idxs.to(boxes.dtype) * (torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max() + 1)
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    return _tv_batched_nms(boxes, scores, idxs, iou_threshold)


def _nms_per_category(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, num_categories: int) -> Tensor:
    """`batched_nms` as one NMS per category in `range(num_categories)`, a loop that tracing and
    torch.export record in full (torchvision's own per-category loop runs over the categories present,
    a data-dependent count they cannot record). The result is torchvision's for many boxes: the kept
    boxes in index order, then sorted by decreasing score."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for category in range(num_categories):
        members = torch.where(idxs == category)[0]
        keep[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    kept = torch.where(keep)[0]
    return kept[scores[kept].sort(descending=True)[1]]
