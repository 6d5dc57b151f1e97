"""Turning dense RPN predictions into per-image proposals, and adding ground truth to proposals.

Shape shorthand: `N` images, `L` levels, `Hi x Wi` the size of level i, `A` anchors per location,
`T` candidates kept over all levels before NMS.
"""
import math
from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor

from d2mask.layers import batched_nms, bincount_bounded, cat, nonzero_tuple, shapes_to_tensor
from d2mask.structures import Boxes, Instances

__all__ = ["find_top_rpn_proposals", "add_ground_truth_to_proposals"]

# A logit whose sigmoid is 1 - 1e-10: ground-truth boxes added as proposals are certain objects.
_GT_LOGIT = math.log((1.0 - 1e-10) / 1e-10)


def find_top_rpn_proposals(
    proposals: List[Tensor],
    pred_objectness_logits: List[Tensor],
    image_sizes: Sequence[Tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
) -> List[Instances]:
    """Selects each image's proposals from the decoded boxes of every level.

    Per image: keep the `pre_nms_topk` highest-scoring boxes of each level; clip them to the image;
    drop non-finite boxes or scores and boxes with a side not larger than `min_box_size`; apply NMS
    within each level; keep the `post_nms_topk` highest-scoring survivors over all levels. On an
    accelerator all images go through one NMS (its groups are (image, level) pairs); on the CPU each
    image's NMS stops once it has those survivors.

    Args:
        proposals: L tensors `Tensor[N, Hi*Wi*A, 4]`, decoded XYXY boxes.
        pred_objectness_logits: L tensors `Tensor[N, Hi*Wi*A]`.
        image_sizes: N (height, width) pairs, the images' sizes before padding.
        nms_thresh: IoU above which NMS drops the lower-scoring box.
        pre_nms_topk: boxes kept per level and image before NMS.
        post_nms_topk: proposals kept per image after NMS.
        min_box_size: the smallest side a kept proposal may exceed, in input pixels.

    Returns:
        N Instances with fields `proposal_boxes` (Boxes) and `objectness_logits` (`Tensor[R_i]`),
        sorted by decreasing objectness.
    """
    num_images = len(image_sizes)
    device = proposals[0].device
    top_boxes, top_scores, level_ids = [], [], []
    for level, (boxes_i, logits_i) in enumerate(zip(proposals, pred_objectness_logits)):
        num_anchors = logits_i.shape[1]
        # Under tracing the size is a 0-d tensor: clamped, k stays traced; min() would fix its branch.
        k = num_anchors.clamp(max=pre_nms_topk) if isinstance(num_anchors, Tensor) else min(pre_nms_topk, num_anchors)
        scores, idx = logits_i.topk(k, dim=1)  # (N, k), sorted
        # (N, Hi*Wi*A, 4) -> (N, k, 4)
        top_boxes.append(boxes_i.gather(1, idx[:, :, None].expand(-1, -1, 4)))
        top_scores.append(scores)
        level_ids.append(torch.full((k,), level, dtype=torch.int64, device=device))
    boxes = cat(top_boxes, dim=1)  # (N, T, 4)
    scores = cat(top_scores, dim=1)  # (N, T)
    level_ids = cat(level_ids)  # (T,)
    num_levels, k_total = len(proposals), boxes.shape[1]

    finite = torch.isfinite(boxes).all(dim=2) & torch.isfinite(scores)
    # (w, h, w, h) per image -> (N, 1, 4), to clip x to [0, w] and y to [0, h].
    limits = shapes_to_tensor([s for h, w in image_sizes for s in (w, h, w, h)], device)
    limits = limits.view(-1, 1, 4).to(boxes.dtype)
    boxes = torch.minimum(boxes.clamp(min=0), limits)
    sides = boxes[:, :, 2:] - boxes[:, :, :2]
    valid = finite & (sides > min_box_size).all(dim=2)

    # (N, T, .) -> (N*T, .)
    flat_boxes, flat_scores = boxes.reshape(-1, 4), scores.reshape(-1)
    if num_images > 1 and (device.type != "cpu" or torch.jit.is_tracing() or torch.compiler.is_exporting()):
        per_image = _nms_all_images(boxes, scores, valid, level_ids, nms_thresh, num_levels, post_nms_topk)
    else:
        # One NMS per image: on the CPU each stops at its image's survivors, and a traced model of one
        # image keeps its proposal count dynamic (the split above is by Python ints, recorded as the
        # sample's).
        per_image = [
            _nms_one_image(boxes[i], scores[i], valid[i], level_ids, nms_thresh, num_levels, post_nms_topk) + i * k_total
            for i in range(num_images)
        ]
    results = []
    for size, idx in zip(image_sizes, per_image):
        results.append(Instances(size, proposal_boxes=Boxes(flat_boxes[idx]), objectness_logits=flat_scores[idx]))
    return results


def _nms_one_image(
    boxes: Tensor, scores: Tensor, valid: Tensor, level_ids: Tensor, nms_thresh: float, num_levels: int, post_nms_topk: int
) -> Tensor:
    """One image's `post_nms_topk` best NMS survivors among its valid candidates (`boxes` `Tensor[T, 4]`,
    `scores`, `valid`, `level_ids` `Tensor[T]`), as indices into T by decreasing score. On the CPU
    the NMS stops at those survivors (batched_nms's `max_kept`)."""
    candidates = nonzero_tuple(valid)[0]
    kept = batched_nms(
        boxes[candidates], scores[candidates], level_ids[candidates], nms_thresh,
        num_categories=num_levels, max_kept=post_nms_topk,
    )
    return candidates[kept]


def _nms_all_images(
    boxes: Tensor, scores: Tensor, valid: Tensor, level_ids: Tensor, nms_thresh: float, num_levels: int, post_nms_topk: int
) -> List[Tensor]:
    """`_nms_one_image` of every image (`boxes` `Tensor[N, T, 4]`, `scores`, `valid` `Tensor[N, T]`) in
    one NMS, grouped by (image, level), as indices into the N*T candidates: on an accelerator, one
    host sync in all."""
    num_images, k_total = scores.shape
    groups = (torch.arange(num_images, device=scores.device)[:, None] * num_levels + level_ids).reshape(-1)
    flat_valid = valid.reshape(-1)
    # Invalid boxes stay in the NMS rather than being selected out (a host sync on a GPU): as empty
    # boxes with the lowest score they suppress nothing, are suppressed by nothing, and come last.
    kept = batched_nms(
        torch.where(flat_valid[:, None], boxes.reshape(-1, 4), 0.0),
        torch.where(flat_valid, scores.reshape(-1), float("-inf")),
        groups,
        nms_thresh,
        num_categories=num_images * num_levels,
    )
    # A stable sort by image keeps the order by score within each image, valid boxes first.
    kept_images, order = torch.sort(kept // k_total, stable=True)
    kept = kept[order]
    counts = torch.stack([
        bincount_bounded(kept_images, num_images),
        bincount_bounded(kept_images, num_images, weights=flat_valid[kept].long()),
    ])
    num_kept, num_valid = counts.tolist()  # the selection's one host sync
    return [idx[: min(n, post_nms_topk)] for idx, n in zip(kept.split(num_kept), num_valid)]


def add_ground_truth_to_proposals(
    gt: Union[List[Instances], List[Boxes]], proposals: List[Instances]
) -> List[Instances]:
    """Appends each image's ground-truth boxes to its proposals, with a near-certain objectness.

    Early in training the proposals are poor; adding the GT boxes guarantees the second stage sees
    some good foreground (Detectron2's MODEL.ROI_HEADS.PROPOSAL_APPEND_GT).

    Args:
        gt: per image, Instances with `gt_boxes` or the Boxes themselves.
        proposals: per image, Instances with `proposal_boxes` and `objectness_logits`; any further field
            must also exist in the image's GT Instances, which provides its values for the GT rows.

    Returns:
        Per image, the proposals followed by the GT boxes.
    """
    if len(gt) != len(proposals):
        raise ValueError(f"add_ground_truth_to_proposals got GT for {len(gt)} images and proposals for {len(proposals)}")
    results = []
    for gt_i, proposals_i in zip(gt, proposals):
        gt_boxes = gt_i if isinstance(gt_i, Boxes) else gt_i.gt_boxes
        logits = proposals_i.objectness_logits
        fields = {}
        for name in proposals_i.get_fields():
            if name == "proposal_boxes":
                fields[name] = gt_boxes.to(logits.device)
            elif name == "objectness_logits":
                fields[name] = torch.full((len(gt_boxes),), _GT_LOGIT, dtype=logits.dtype, device=logits.device)
            elif isinstance(gt_i, Instances) and gt_i.has(name):
                fields[name] = gt_i.get(name)
            else:
                raise ValueError(f"Proposals have a field '{name}' that the ground truth lacks; cannot append GT to them")
        results.append(Instances.cat([proposals_i, Instances(proposals_i.image_size, **fields)]))
    return results
