"""Box coding (boxes as deltas from reference boxes) and the box-regression loss shared by the heads.

Shape shorthand: `R` reference boxes (anchors or proposals), `K` classes (a class-specific head predicts a
box per class, so `K` boxes per reference; a class-agnostic one, 1).
"""
import math
from typing import Tuple

import torch
from fvcore.nn import smooth_l1_loss
from torch import Tensor
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from d2mask.config import ArgumentError

__all__ = ["Box2BoxTransform", "box_regression_loss", "check_box_reg_loss_type", "BOX_REGRESSION_LOSS_TYPES"]

# Bounds exp(dw), exp(dh): a predicted box is at most 1000/16 times wider or taller than its reference.
_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)

BOX_REGRESSION_LOSS_TYPES = ("smooth_l1", "giou", "diou", "ciou")
_IOU_LOSSES = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss, "ciou": complete_box_iou_loss}


def check_box_reg_loss_type(loss_type: str, owner: str, key: str) -> None:
    """Raises ValueError unless `loss_type` is one of BOX_REGRESSION_LOSS_TYPES; the message names
    the constructor `owner` and the config `key` the value comes from. Heads check in __init__, so
    a wrong type is found when the model is built, not at the first loss."""
    if loss_type not in BOX_REGRESSION_LOSS_TYPES:
        raise ValueError(
            f"{owner} box_reg_loss_type ({key}) must be one of {list(BOX_REGRESSION_LOSS_TYPES)}, got {loss_type!r}"
        )


class Box2BoxTransform:
    """The R-CNN box coding (Girshick et al., 2014): a box relative to a reference box as
    (dx, dy, dw, dh) = (wx * (x - xr) / wr, wy * (y - yr) / hr, ww * log(w / wr), wh * log(h / hr)),
    from centres (x, y) and sizes (w, h)."""

    def __init__(self, weights: Tuple[float, float, float, float], scale_clamp: float = _DEFAULT_SCALE_CLAMP):
        """
        Args:
            weights: (wx, wy, ww, wh), scaling the deltas to a range that suits the loss.
            scale_clamp: the largest dw / ww and dh / wh applied when decoding.
        """
        positive = all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0 < w < math.inf for w in weights)
        if len(weights) != 4 or not positive:
            raise ArgumentError(
                f"Box2BoxTransform `weights` must be 4 weights > 0 (wx, wy, ww, wh), got {tuple(weights)}", "weights"
            )
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """The deltas that `apply_deltas` turns `src_boxes` into `target_boxes`.

        Args:
            src_boxes: `Tensor[R, 4]` XYXY reference boxes of positive width and height.
            target_boxes: `Tensor[R, 4]` XYXY boxes to encode.

        Returns:
            `Tensor[R, 4]` (dx, dy, dw, dh).
        """
        src_wh = src_boxes[:, 2:] - src_boxes[:, :2]
        src_ctr = src_boxes[:, :2] + 0.5 * src_wh
        tgt_wh = target_boxes[:, 2:] - target_boxes[:, :2]
        tgt_ctr = target_boxes[:, :2] + 0.5 * tgt_wh
        wx, wy, ww, wh = self.weights
        center = (tgt_ctr - src_ctr) / src_wh * src_wh.new_tensor([wx, wy])
        size = torch.log(tgt_wh / src_wh) * src_wh.new_tensor([ww, wh])
        return torch.cat((center, size), dim=1)

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Decodes deltas relative to reference boxes.

        Args:
            deltas: `Tensor[R, K * 4]`, K sets of (dx, dy, dw, dh) per box (e.g. one per class).
            boxes: `Tensor[R, 4]` XYXY reference boxes.

        Returns:
            `Tensor[R, K * 4]` XYXY boxes, in the dtype of `deltas` (at least float32).
        """
        deltas = deltas.float() if deltas.dtype in (torch.float16, torch.bfloat16) else deltas
        boxes = boxes.to(deltas.dtype)
        # (R, K*4) -> (R, K, 4); K is spelled out because -1 is ambiguous when R is 0.
        d = deltas.reshape(deltas.shape[0], deltas.shape[1] // 4, 4)
        wh = (boxes[:, 2:] - boxes[:, :2])[:, None, :]  # (R, 1, 2)
        ctr = boxes[:, None, :2] + 0.5 * wh
        wx, wy, ww, whh = self.weights
        d_ctr = d[..., :2] / d.new_tensor([wx, wy])
        d_size = (d[..., 2:] / d.new_tensor([ww, whh])).clamp(max=self.scale_clamp)
        pred_ctr = d_ctr * wh + ctr
        pred_half = 0.5 * torch.exp(d_size) * wh
        pred = torch.cat((pred_ctr - pred_half, pred_ctr + pred_half), dim=-1)
        return pred.reshape(deltas.shape)


def box_regression_loss(
    box2box_transform: Box2BoxTransform,
    anchors_or_proposals: Tensor,
    pred_deltas: Tensor,
    gt_boxes: Tensor,
    loss_type: str = "smooth_l1",
    smooth_l1_beta: float = 0.0,
) -> Tensor:
    """The summed box-regression loss over R positive reference boxes.

    Args:
        box2box_transform: the box coding of `pred_deltas`.
        anchors_or_proposals: `Tensor[R, 4]` XYXY reference boxes.
        pred_deltas: `Tensor[R, 4]` predicted deltas.
        gt_boxes: `Tensor[R, 4]` XYXY ground truth matched to each reference box.
        loss_type: "smooth_l1" on the deltas (Fast R-CNN), or "giou", "diou", "ciou" on the decoded
            boxes (Rezatofighi et al., 2019; Zheng et al., 2020).
        smooth_l1_beta: the smooth-L1 transition point; 0 gives exactly L1 with finite gradients.

    Returns:
        A scalar, the sum over all boxes (the caller normalises).
    """
    if loss_type == "smooth_l1":
        gt_deltas = box2box_transform.get_deltas(anchors_or_proposals, gt_boxes)
        return smooth_l1_loss(pred_deltas, gt_deltas, smooth_l1_beta, reduction="sum")
    if loss_type in _IOU_LOSSES:
        pred_boxes = box2box_transform.apply_deltas(pred_deltas, anchors_or_proposals)
        return _IOU_LOSSES[loss_type](pred_boxes, gt_boxes.to(pred_boxes.dtype), reduction="sum")
    raise ValueError(f"Unknown box regression loss type {loss_type!r}; expected one of {list(BOX_REGRESSION_LOSS_TYPES)}")
