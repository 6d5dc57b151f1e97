"""Mask heads: per-region, per-class mask logits, their loss and the inference that attaches them to
detections.

Shape shorthand: `R` regions over all images, `C` channels, `S` the pooled side, `M` the mask side
(2S after the upsampling), `K` classes (1 when masks are class-agnostic).
"""
from typing import Dict, List, Union

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import Tensor, nn

from d2mask.config import config_keys, configurable
from d2mask.layers import Conv2d, ConvTranspose2d, ShapeSpec, get_norm
from d2mask.layers.wrappers import channels_last_on_cpu, channels_last_weights_on_cpu
from d2mask.structures import Instances
from d2mask.utils.events import get_event_storage, has_event_storage
from d2mask.utils.registry import Registry

__all__ = [
    "ROI_MASK_HEAD_REGISTRY",
    "build_mask_head",
    "BaseMaskRCNNHead",
    "MaskRCNNConvUpsampleHead",
    "mask_rcnn_loss",
    "mask_rcnn_inference",
]

ROI_MASK_HEAD_REGISTRY = Registry("ROI_MASK_HEAD")
ROI_MASK_HEAD_REGISTRY.__doc__ = """
Mask heads, named by MODEL.ROI_MASK_HEAD.NAME. An entry is called as `obj(cfg, input_shape)` with the
ShapeSpec of the pooled features (or, when MODEL.ROI_MASK_HEAD.POOLER_TYPE is "", the
{name: ShapeSpec} of the image features it pools itself) and returns a module called as
`head(features, instances)`, `features` being the pooled `Tensor[R, C, S, S]` (or the dict of image
features): in training it returns {"loss_mask": Tensor}, in inference the instances with
`pred_masks` set.
"""


def mask_rcnn_loss(pred_mask_logits: Tensor, instances: List[Instances], vis_period: int = 0) -> Tensor:
    """The mask loss of Mask R-CNN (He et al. 2017): mean per-pixel binary cross-entropy between the
    logits of each region's GT class and its GT mask cropped to the region and resampled to M x M.

    Args:
        pred_mask_logits: `Tensor[R, K, M, M]` for the foreground regions of `instances`, in order.
        instances: per image, foreground regions with fields proposal_boxes, gt_classes and gt_masks
            (BitMasks or PolygonMasks, anything with `crop_and_resize(boxes, M)`).
        vis_period: when > 0, every this many iterations (of the active event storage), the predicted
            mask of each region beside its GT target goes to the storage as an image (see
            `_put_mask_images`).

    Returns:
        A scalar; 0 (still attached to the graph) when there is no region.
    """
    mask_side = pred_mask_logits.shape[2]
    if pred_mask_logits.shape[3] != mask_side:
        raise ValueError(f"mask_rcnn_loss expects square mask logits, got {tuple(pred_mask_logits.shape)}")
    class_agnostic = pred_mask_logits.shape[1] == 1
    gt_classes, gt_masks = [], []
    for per_image in instances:
        if len(per_image) == 0:
            continue
        gt_classes.append(per_image.gt_classes.to(torch.int64))
        targets = per_image.gt_masks.crop_and_resize(per_image.proposal_boxes.tensor, mask_side)
        gt_masks.append(targets.to(device=pred_mask_logits.device))
    if not gt_masks:
        return pred_mask_logits.sum() * 0.0

    gt_masks = torch.cat(gt_masks).to(pred_mask_logits.dtype)  # (R, M, M)
    if class_agnostic:
        logits = pred_mask_logits[:, 0]
    else:
        regions = torch.arange(len(pred_mask_logits), device=pred_mask_logits.device)
        logits = pred_mask_logits[regions, torch.cat(gt_classes)]  # (R, K, M, M) -> (R, M, M)
    if vis_period > 0 and has_event_storage() and get_event_storage().iter % vis_period == 0:
        _put_mask_images(logits, gt_masks)
    return F.binary_cross_entropy_with_logits(logits, gt_masks, reduction="mean")


def _put_mask_images(logits: Tensor, gt_masks: Tensor, max_regions: int = 16) -> None:
    """Puts in the active event storage, for each of the first `max_regions` regions, one grey image
    `[3, M, 2M]`: the predicted mask probabilities (left) beside the GT target (right), named as
    Detectron2 names them. Detectron2 puts every region (hundreds per iteration); a few show the same."""
    with torch.no_grad():
        both = torch.cat([logits[:max_regions].sigmoid(), gt_masks[:max_regions]], dim=2).float()  # (R', M, 2M)
    storage = get_event_storage()
    for i, image in enumerate(both):
        storage.put_image(f"Left: mask prediction;   Right: mask GT ({i})", image.expand(3, -1, -1))


def mask_rcnn_inference(pred_mask_logits: Tensor, pred_instances: List[Instances]) -> None:
    """Sets `pred_masks`, `Tensor[D_i, 1, M, M]` probabilities of the predicted class, on each image's
    detections.

    Args:
        pred_mask_logits: `Tensor[R, K, M, M]` for the detections of all images, in order.
        pred_instances: per image, detections with `pred_classes`; modified in place.
    """
    if pred_mask_logits.shape[1] == 1:
        probs = pred_mask_logits.sigmoid()
    else:
        classes = torch.cat([i.pred_classes for i in pred_instances])
        regions = torch.arange(len(pred_mask_logits), device=pred_mask_logits.device)
        probs = pred_mask_logits[regions, classes][:, None].sigmoid()  # (R, K, M, M) -> (R, 1, M, M)
    for instances, masks in zip(pred_instances, probs.split([len(i) for i in pred_instances])):
        instances.pred_masks = masks


class BaseMaskRCNNHead(nn.Module):
    """Owns the train/inference split of a mask head; a subclass defines `layers` only."""

    @configurable
    def __init__(self, *, loss_weight: float = 1.0, vis_period: int = 0):
        """
        Args:
            loss_weight: the weight of `loss_mask`.
            vis_period: every this many iterations, put predicted and GT masks in the event storage
                (`mask_rcnn_loss`); 0: never.
        """
        super().__init__()
        self.loss_weight = loss_weight
        self.vis_period = vis_period

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {"vis_period": cfg.VIS_PERIOD}

    def forward(self, x: Tensor, instances: List[Instances]) -> Union[Dict[str, Tensor], List[Instances]]:
        """
        Args:
            x: `Tensor[R, C, S, S]` pooled features of the regions of `instances`, in order.
            instances: in training, the foreground proposals with their GT fields; in inference, the
                detections with `pred_classes`.

        Returns:
            In training {"loss_mask": Tensor}; in inference `instances`, each with `pred_masks`.
        """
        x = self.layers(x)
        if self.training:
            return {"loss_mask": mask_rcnn_loss(x, instances, self.vis_period) * self.loss_weight}
        mask_rcnn_inference(x, instances)
        return instances

    def layers(self, x: Tensor) -> Tensor:
        """`Tensor[R, C, S, S]` -> `Tensor[R, K, M, M]` mask logits."""
        raise NotImplementedError


@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNConvUpsampleHead(BaseMaskRCNNHead):
    """Mask R-CNN's mask head: 3x3 convs, a 2x transposed conv, and a 1x1 conv with a mask per class.

    The layers are `mask_fcn1..n`, `deconv` and `predictor`, all but the last followed by ReLU.
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, num_classes: int, conv_dims: List[int], conv_norm: str = "", **kwargs):
        """
        Args:
            input_shape: channels of the pooled features.
            num_classes: masks predicted per region (1 for class-agnostic masks).
            conv_dims: output channels of each 3x3 conv, then as last entry those of the transposed conv.
            conv_norm: normalisation of the 3x3 convs, a `get_norm` name; "" for none.
            kwargs: passed to `BaseMaskRCNNHead`.
        """
        super().__init__(**kwargs)
        name = type(self).__name__
        if not isinstance(input_shape, ShapeSpec):
            raise ValueError(
                f"{name} takes pooled features and pools none itself: it needs a pooler (MODEL.ROI_MASK_HEAD.POOLER_TYPE "
                f"'ROIAlign' or 'ROIAlignV2'), got the shapes of feature maps {sorted(input_shape)}"
            )
        if len(conv_dims) < 1:
            raise ValueError(f"{name} conv_dims needs at least the transposed conv's channels as its last entry")
        if not all(dim > 0 for dim in conv_dims):
            raise ValueError(f"{name} conv_dims (MODEL.ROI_MASK_HEAD.CONV_DIM) must be channels > 0, got {list(conv_dims)}")
        if not num_classes > 0:
            raise ValueError(f"{name} num_classes (MODEL.ROI_HEADS.NUM_CLASSES) must be an int > 0, got {num_classes}")
        channels = input_shape.channels
        self.conv_norm_relus = []
        for k, dim in enumerate(conv_dims[:-1], start=1):
            conv = Conv2d(
                channels, dim, kernel_size=3, padding=1, bias=not conv_norm,
                norm=get_norm(conv_norm, dim), activation=F.relu_,
            )
            weight_init.c2_msra_fill(conv)
            self.add_module(f"mask_fcn{k}", conv)
            self.conv_norm_relus.append(conv)
            channels = dim
        self.deconv = ConvTranspose2d(channels, conv_dims[-1], kernel_size=2, stride=2)
        weight_init.c2_msra_fill(self.deconv)
        self.predictor = Conv2d(conv_dims[-1], num_classes, kernel_size=1)
        # Small initial logits: every mask starts near probability 0.5 with little class preference.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.ROI_MASK_HEAD
        return {
            **super().from_config(cfg, input_shape),
            "input_shape": input_shape,
            "num_classes": 1 if head.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dims": [head.CONV_DIM] * (head.NUM_CONV + 1),
            "conv_norm": head.NORM,
        }

    def layers(self, x: Tensor) -> Tensor:
        channels_last_weights_on_cpu(self)
        x = channels_last_on_cpu(x)  # ROIAlign gives NCHW; R regions' convolutions are much of inference
        for conv in self.conv_norm_relus:
            x = conv(x)
        x = F.relu_(self.deconv(x))  # (R, C, S, S) -> (R, C', 2S, 2S)
        return self.predictor(x)


def build_mask_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """The mask head named by `cfg.MODEL.ROI_MASK_HEAD.NAME`, built for pooled features of `input_shape`."""
    with config_keys(norm="MODEL.ROI_MASK_HEAD.NORM"):
        return ROI_MASK_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASK_HEAD.NAME)(cfg, input_shape)
