"""Keypoint heads (Mask R-CNN, He et al. 2017, Sec. 5): per region, one heatmap of logits per keypoint,
their loss and the inference that turns them into keypoints on the detections.

Shape letters (d2mask/__init__.py): `R` regions over all images, `C` channels, `S` the pooled side;
this module's own: `J` keypoints per instance, `M` the heatmap side (4S after the upsampling).
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from d2mask.config import configurable
from d2mask.layers import Conv2d, ConvTranspose2d, ShapeSpec, interpolate
from d2mask.structures import Instances, heatmaps_to_keypoints
from d2mask.utils.registry import Registry

__all__ = [
    "ROI_KEYPOINT_HEAD_REGISTRY",
    "build_keypoint_head",
    "BaseKeypointRCNNHead",
    "KRCNNConvDeconvUpsampleHead",
    "keypoint_rcnn_loss",
    "keypoint_rcnn_inference",
]

ROI_KEYPOINT_HEAD_REGISTRY = Registry("ROI_KEYPOINT_HEAD")
ROI_KEYPOINT_HEAD_REGISTRY.__doc__ = """
Keypoint heads, named by MODEL.ROI_KEYPOINT_HEAD.NAME. An entry is called as `obj(cfg, input_shape)`
with the ShapeSpec of the pooled features and returns a module called as `head(features, instances)`,
`features` being the pooled `Tensor[R, C, S, S]`: in training it returns {"loss_keypoint": Tensor}, in
inference the instances with `pred_keypoints` and `pred_keypoint_heatmaps` set.
"""


def keypoint_rcnn_loss(pred_keypoint_logits: Tensor, instances: List[Instances], normalizer: Optional[float]) -> Tensor:
    """The keypoint loss of Mask R-CNN: for each labelled keypoint inside its region, the cross-entropy
    of a softmax over the M x M cells of its heatmap against the cell the keypoint falls in.

    Args:
        pred_keypoint_logits: `Tensor[R, J, M, M]` for the regions of `instances`, in order.
        instances: per image, regions with `proposal_boxes` and `gt_keypoints` (`Keypoints`).
        normalizer: the summed loss is divided by this; None divides by the number of keypoints that
            count (labelled and inside their region) in the batch.

    Returns:
        A scalar; 0 (still attached to the graph) when no keypoint counts.
    """
    side = pred_keypoint_logits.shape[2]
    targets, valid = [], []
    for per_image in instances:
        if len(per_image) == 0:
            continue
        cells, valid_i = per_image.gt_keypoints.to_heatmap(per_image.proposal_boxes.tensor, side)
        targets.append(cells.flatten())
        valid.append(valid_i.flatten())
    if not targets:
        return pred_keypoint_logits.sum() * 0.0
    targets = torch.cat(targets).to(pred_keypoint_logits.device)  # (R*J,)
    valid = torch.cat(valid).to(pred_keypoint_logits.device, pred_keypoint_logits.dtype)  # (R*J,)
    # Masking instead of selecting the valid keypoints keeps the shapes static: no host sync.
    logits = pred_keypoint_logits.flatten(0, 1).flatten(1)  # (R, J, M, M) -> (R*J, M*M)
    loss = (F.cross_entropy(logits, targets, reduction="none") * valid).sum()
    if normalizer is None:
        return loss / valid.sum().clamp(min=1)
    return loss / normalizer


def keypoint_rcnn_inference(pred_keypoint_logits: Tensor, pred_instances: List[Instances]) -> None:
    """Sets on each image's detections `pred_keypoints`, `Tensor[D_i, J, 3]` of (x, y, score) in image
    pixels (see `heatmaps_to_keypoints`), and `pred_keypoint_heatmaps`, `Tensor[D_i, J, M, M]` logits.

    Args:
        pred_keypoint_logits: `Tensor[R, J, M, M]` for the detections of all images, in order.
        pred_instances: per image, detections with `pred_boxes`; modified in place.
    """
    logits = pred_keypoint_logits.detach()
    boxes = torch.cat([i.pred_boxes.tensor for i in pred_instances]).detach()
    keypoints = heatmaps_to_keypoints(logits, boxes)[..., [0, 1, 3]]  # (x, y, logit, score) -> (x, y, score)
    sizes = [len(i) for i in pred_instances]
    for instances, keypoints_i, logits_i in zip(pred_instances, keypoints.split(sizes), logits.split(sizes)):
        instances.pred_keypoints = keypoints_i
        instances.pred_keypoint_heatmaps = logits_i


class BaseKeypointRCNNHead(nn.Module):
    """Owns the train/inference split of a keypoint head; a subclass defines `layers` only."""

    @configurable
    def __init__(self, *, num_keypoints: int, loss_weight: float = 1.0, loss_normalizer: Union[float, str] = 1.0):
        """
        Args:
            num_keypoints: J, the keypoints predicted per region.
            loss_weight: the weight of `loss_keypoint`.
            loss_normalizer: a number: the summed loss is divided by it times the number of images;
                "visible": by the number of labelled keypoints inside their regions in the batch.
        """
        super().__init__()
        if isinstance(num_keypoints, bool) or not isinstance(num_keypoints, int) or num_keypoints < 1:
            raise ValueError(f"{type(self).__name__}: num_keypoints must be a positive int, got {num_keypoints!r}")
        if loss_normalizer != "visible" and (
            isinstance(loss_normalizer, bool) or not isinstance(loss_normalizer, (int, float)) or loss_normalizer <= 0
        ):
            raise ValueError(
                f"{type(self).__name__}: loss_normalizer must be 'visible' or a positive number, got {loss_normalizer!r}"
            )
        self.num_keypoints = num_keypoints
        self.loss_weight = loss_weight
        self.loss_normalizer = loss_normalizer

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.ROI_KEYPOINT_HEAD
        ret = {"num_keypoints": head.NUM_KEYPOINTS, "loss_weight": head.LOSS_WEIGHT}
        if head.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS:
            ret["loss_normalizer"] = "visible"
        else:
            # Detectron2's fixed normaliser: the keypoints of the foreground regions of a full batch.
            roi = cfg.MODEL.ROI_HEADS
            ret["loss_normalizer"] = float(head.NUM_KEYPOINTS * roi.BATCH_SIZE_PER_IMAGE * roi.POSITIVE_FRACTION)
        return ret

    def forward(self, x: Tensor, instances: List[Instances]) -> Union[Dict[str, Tensor], List[Instances]]:
        """
        Args:
            x: `Tensor[R, C, S, S]` pooled features of the regions of `instances`, in order.
            instances: in training, the foreground proposals with `gt_keypoints`; in inference, the
                detections with `pred_boxes`.

        Returns:
            In training {"loss_keypoint": Tensor}; in inference `instances`, each with `pred_keypoints`
            and `pred_keypoint_heatmaps`.
        """
        x = self.layers(x)
        if self.training:
            normalizer = None if self.loss_normalizer == "visible" else len(instances) * self.loss_normalizer
            return {"loss_keypoint": keypoint_rcnn_loss(x, instances, normalizer) * self.loss_weight}
        keypoint_rcnn_inference(x, instances)
        return instances

    def layers(self, x: Tensor) -> Tensor:
        """`Tensor[R, C, S, S]` -> `Tensor[R, J, M, M]` heatmap logits."""
        raise NotImplementedError


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class KRCNNConvDeconvUpsampleHead(BaseKeypointRCNNHead, nn.Sequential):
    """Mask R-CNN's keypoint head: 3x3 convs with ReLU (`conv_fcn1..n`), a stride-2 transposed conv to J
    heatmaps (`score_lowres`), then a 2x bilinear upsampling: S -> 4S.

    A `nn.Sequential` of its layers in the order they run, as in Detectron2 (its state dict names).
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, num_keypoints: int, conv_dims: Sequence[int], **kwargs):
        """
        Args:
            input_shape: channels of the pooled features.
            num_keypoints: J.
            conv_dims: output channels of each 3x3 conv, e.g. [512] * 8.
            kwargs: passed to `BaseKeypointRCNNHead`.
        """
        super().__init__(num_keypoints=num_keypoints, **kwargs)
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in conv_dims):
            raise ValueError(
                f"{type(self).__name__}: conv_dims (MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS) must be positive ints, "
                f"got {list(conv_dims)}"
            )
        channels = input_shape.channels
        for k, dim in enumerate(conv_dims, start=1):
            self.add_module(f"conv_fcn{k}", Conv2d(channels, dim, kernel_size=3, padding=1))
            self.add_module(f"conv_fcn_relu{k}", nn.ReLU())
            channels = dim
        self.score_lowres = ConvTranspose2d(channels, num_keypoints, kernel_size=4, stride=2, padding=1)
        self.up_scale = 2.0
        for name, param in self.named_parameters():
            if name.endswith("bias"):
                nn.init.constant_(param, 0)
            else:  # Caffe2's MSRAFill, which Detectron2's weights were trained from
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {
            **super().from_config(cfg, input_shape),
            "input_shape": input_shape,
            "conv_dims": list(cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS),
        }

    def layers(self, x: Tensor) -> Tensor:
        for layer in self:
            x = layer(x)  # (R, C, S, S) -> ... -> (R, J, 2S, 2S)
        return interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)


def build_keypoint_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """The keypoint head named by `cfg.MODEL.ROI_KEYPOINT_HEAD.NAME`, built for pooled features of `input_shape`."""
    return ROI_KEYPOINT_HEAD_REGISTRY.get(cfg.MODEL.ROI_KEYPOINT_HEAD.NAME)(cfg, input_shape)
