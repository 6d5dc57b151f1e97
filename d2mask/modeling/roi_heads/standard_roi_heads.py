"""`StandardROIHeads`: separate box, mask and keypoint branches, each with its own multi-level pooler (FPN).

Shape shorthand: `R` regions over all images, `C` channels, `S` the pooled side.
"""
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from d2mask.config import configurable
from d2mask.layers import ShapeSpec
from d2mask.structures import Boxes, ImageList, Instances

from ..poolers import ROIPooler, roi_pooler_from_config
from .box_head import build_box_head
from .fast_rcnn import FastRCNNOutputLayers
from .keypoint_head import build_keypoint_head
from .mask_head import build_mask_head
from .roi_heads import (
    ROI_HEADS_REGISTRY,
    ROIHeads,
    select_foreground_proposals,
    select_proposals_with_visible_keypoints,
)

__all__ = ["StandardROIHeads"]


def _pooler_from_config(
    cfg, head: str, in_features: List[str], input_shape: Dict[str, ShapeSpec]
) -> Tuple[ROIPooler, int]:
    """The pooler of one branch (`head` "ROI_BOX_HEAD", "ROI_MASK_HEAD" or "ROI_KEYPOINT_HEAD") and the channels
    of the features it pools."""
    channels = {input_shape[f].channels for f in in_features}
    if len(channels) != 1:
        raise ValueError(
            f"MODEL.ROI_HEADS.IN_FEATURES {in_features} have different channel counts {sorted(channels)}; "
            f"one pooler needs equal channels on every level"
        )
    return roi_pooler_from_config(cfg, head, [1.0 / input_shape[f].stride for f in in_features]), channels.pop()


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(ROIHeads):
    """The FPN ROI heads: a box branch and optional mask and keypoint branches, each pooling by box size.

    The box branch is a pooler, a box head and a predictor; the mask and keypoint branches each a pooler
    and a head. In training the mask branch sees only the foreground proposals, the keypoint branch
    only those of them with a labelled keypoint inside; in inference both run on the detections of
    the box branch.
    """

    @configurable
    def __init__(
        self,
        *,
        box_in_features: List[str],
        box_pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: nn.Module,
        mask_in_features: Optional[List[str]] = None,
        mask_pooler: Optional[ROIPooler] = None,
        mask_head: Optional[nn.Module] = None,
        keypoint_in_features: Optional[List[str]] = None,
        keypoint_pooler: Optional[ROIPooler] = None,
        keypoint_head: Optional[nn.Module] = None,
        train_on_pred_boxes: bool = False,
        **kwargs,
    ):
        """
        Args:
            box_in_features: the features the box branch pools from, finest first.
            box_pooler: pools `Tensor[R, C, S, S]` per region from those features.
            box_head: pooled features -> per-region features.
            box_predictor: per-region features -> predictions, with `losses` and `inference`
                (a `FastRCNNOutputLayers`).
            mask_in_features, mask_pooler, mask_head: the mask branch; None for a box-only model.
                Without a pooler (None), the mask head gets {name: features} of `mask_in_features`
                and pools them itself, as in Detectron2.
            keypoint_in_features, keypoint_pooler, keypoint_head: the keypoint branch; None for a model
                without keypoints. Without a pooler, the keypoint head gets {name: features} as the mask
                head does.
            train_on_pred_boxes: in training, the mask branch sees the box branch's predicted boxes
                (for each proposal's GT class) instead of the proposals.
            kwargs: passed to `ROIHeads` (num_classes, proposal_matcher, ...).
        """
        super().__init__(**kwargs)
        self.box_in_features = box_in_features
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_in_features = mask_in_features
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head
        self.keypoint_on = keypoint_head is not None
        if self.keypoint_on:
            self.keypoint_in_features = keypoint_in_features
            self.keypoint_pooler = keypoint_pooler
            self.keypoint_head = keypoint_head
        self.train_on_pred_boxes = train_on_pred_boxes

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg)
        ret["train_on_pred_boxes"] = cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES
        ret.update(cls._init_box_head(cfg, input_shape))
        if cfg.MODEL.MASK_ON:
            ret.update(cls._init_mask_head(cfg, input_shape))
        if cfg.MODEL.KEYPOINT_ON:
            ret.update(cls._init_keypoint_head(cfg, input_shape))
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        head_cfg = cfg.MODEL.ROI_BOX_HEAD
        pooler, channels = _pooler_from_config(cfg, "ROI_BOX_HEAD", in_features, input_shape)
        side = head_cfg.POOLER_RESOLUTION
        box_head = build_box_head(cfg, ShapeSpec(channels=channels, height=side, width=side))
        return {
            "box_in_features": in_features,
            "box_pooler": pooler,
            "box_head": box_head,
            "box_predictor": FastRCNNOutputLayers(cfg, box_head.output_shape),
        }

    @classmethod
    def _init_mask_head(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_features, pooler, head = cls._init_pooled_branch(cfg, input_shape, "ROI_MASK_HEAD", build_mask_head)
        return {"mask_in_features": in_features, "mask_pooler": pooler, "mask_head": head}

    @classmethod
    def _init_keypoint_head(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_features, pooler, head = cls._init_pooled_branch(cfg, input_shape, "ROI_KEYPOINT_HEAD", build_keypoint_head)
        return {"keypoint_in_features": in_features, "keypoint_pooler": pooler, "keypoint_head": head}

    @classmethod
    def _init_pooled_branch(
        cls, cfg, input_shape: Dict[str, ShapeSpec], head: str, build_head: Callable
    ) -> Tuple[List[str], Optional[ROIPooler], nn.Module]:
        """The in_features, pooler and head of the mask or keypoint branch (`head` "ROI_MASK_HEAD" or
        "ROI_KEYPOINT_HEAD"). With POOLER_TYPE "" there is no pooler and the head, built for the
        features' {name: ShapeSpec}, pools them itself."""
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        if not cfg.MODEL[head].POOLER_TYPE:
            return in_features, None, build_head(cfg, {f: input_shape[f] for f in in_features})
        pooler, channels = _pooler_from_config(cfg, head, in_features, input_shape)
        side = cfg.MODEL[head].POOLER_RESOLUTION
        return in_features, pooler, build_head(cfg, ShapeSpec(channels=channels, height=side, width=side))

    def forward(
        self,
        images: ImageList,
        features: Dict[str, Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, Tensor]]:
        """See `ROIHeads.forward`."""
        del images
        if self.training:
            proposals = self.label_and_sample_proposals(proposals, targets)
            losses = self._forward_box(features, proposals)
            losses.update(self._forward_mask(features, proposals))
            losses.update(self._forward_keypoint(features, proposals))
            return proposals, losses
        detections = self._forward_box(features, proposals)
        return self.forward_with_given_boxes(features, detections), {}

    def forward_with_given_boxes(self, features: Dict[str, Tensor], instances: List[Instances]) -> List[Instances]:
        """Runs the branches other than the box branch (mask, keypoints) on given detections.

        Args:
            features: the backbone's features.
            instances: per image, Instances(pred_boxes, pred_classes, ...).

        Returns:
            `instances`, with `pred_masks` set when the mask branch exists, `pred_keypoints` and
            `pred_keypoint_heatmaps` when the keypoint branch does.
        """
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference; call model.eval() first")
        instances = self._forward_mask(features, instances)
        return self._forward_keypoint(features, instances)

    def _forward_box(self, features: Dict[str, Tensor], proposals: List[Instances]):
        """The box branch: losses in training, per-image detections in inference."""
        x = self.box_pooler([features[f] for f in self.box_in_features], [p.proposal_boxes for p in proposals])
        predictions = self.box_predictor(self.box_head(x))  # (R, C, S, S) -> (R, K+1), (R, B*4)
        if self.training:
            losses = self.box_predictor.losses(predictions, proposals)
            if self.train_on_pred_boxes:  # after the losses, which read the proposals
                with torch.no_grad():
                    boxes = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                for per_image, boxes_i in zip(proposals, boxes):
                    per_image.proposal_boxes = Boxes(boxes_i)
            return losses
        detections, _ = self.box_predictor.inference(predictions, proposals)
        return detections

    def _forward_mask(self, features: Dict[str, Tensor], instances: List[Instances]):
        """The mask branch: {"loss_mask"} in training (on the foreground proposals), the instances with
        `pred_masks` in inference; without a mask branch, {} or the instances unchanged."""
        if not self.mask_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        return self.mask_head(self._branch_input(features, self.mask_in_features, self.mask_pooler, instances), instances)

    def _forward_keypoint(self, features: Dict[str, Tensor], instances: List[Instances]):
        """The keypoint branch: {"loss_keypoint"} in training (on the foreground proposals with a
        labelled keypoint inside), the instances with `pred_keypoints` in inference; without a keypoint
        branch, {} or the instances unchanged."""
        if not self.keypoint_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
            instances = select_proposals_with_visible_keypoints(instances)
        x = self._branch_input(features, self.keypoint_in_features, self.keypoint_pooler, instances)
        return self.keypoint_head(x, instances)

    def _branch_input(
        self, features: Dict[str, Tensor], in_features: List[str], pooler: Optional[ROIPooler], instances: List[Instances]
    ) -> Union[Tensor, Dict[str, Tensor]]:
        """What the mask or keypoint head reads: the features of `in_features` pooled from the regions of
        `instances` (proposals in training, detections in inference), `Tensor[R, C, S, S]`; without a
        pooler, the features themselves by name."""
        if pooler is None:
            return {f: features[f] for f in in_features}
        boxes = [i.proposal_boxes if self.training else i.pred_boxes for i in instances]
        return pooler([features[f] for f in in_features], boxes)
