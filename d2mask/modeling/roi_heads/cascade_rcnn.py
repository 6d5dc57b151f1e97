"""`CascadeROIHeads`: Cascade R-CNN (Cai and Vasconcelos, 2018), box heads in stages that each refine
the previous stage's boxes, trained at increasing IoU thresholds.

Shape shorthand: `R` regions over all images, `R_i` those of image i, `K` foreground classes (class `K`
is background), `C` channels, `S` the pooled side.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from d2mask.config import ConfigError, config_keys, configurable
from d2mask.layers import ShapeSpec
from d2mask.structures import Boxes, ImageList, Instances
from d2mask.utils.events import get_event_storage, has_event_storage

from ..box_regression import Box2BoxTransform
from ..matcher import build_anchor_matcher
from ..poolers import ROIPooler
from .box_head import build_box_head
from .fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from .roi_heads import ROI_HEADS_REGISTRY
from .standard_roi_heads import StandardROIHeads, _pooler_from_config

__all__ = ["CascadeROIHeads"]


class _ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by `scale` in the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


@ROI_HEADS_REGISTRY.register()
class CascadeROIHeads(StandardROIHeads):
    """Cascade R-CNN's ROI heads: stage k pools the boxes predicted by stage k - 1 (stage 0 the
    proposals), and has its own box head, predictor and matcher. Later stages match at higher IoU, so
    each trains on boxes as good as those it will see.

    In training every stage adds its losses (`loss_cls_stage{k}`, `loss_box_reg_stage{k}`); stages
    after the first train on all boxes of the previous stage, without sampling. In inference the class
    scores of the stages are averaged and the boxes are those of the last stage. The mask branch is
    the one of `StandardROIHeads`, trained on the first stage's sampled proposals.
    """

    @configurable
    def __init__(
        self,
        *,
        box_in_features: List[str],
        box_pooler: ROIPooler,
        box_heads: Sequence[nn.Module],
        box_predictors: Sequence[nn.Module],
        proposal_matchers: Sequence[Callable],
        **kwargs,
    ):
        """
        Args:
            box_in_features, box_pooler: see `StandardROIHeads`; one pooler serves every stage.
            box_heads: per stage, pooled features -> per-region features.
            box_predictors: per stage, a class-agnostic box predictor (one box per region, as a
                `FastRCNNOutputLayers` with cls_agnostic_bbox_reg=True), with its own box coding.
            proposal_matchers: per stage, `matcher(gt_boxes, boxes) -> (matched_idxs, match_labels)`.
                The first labels the sampled proposals, each later one the boxes of the stage before.
            kwargs: passed to `StandardROIHeads` (num_classes, proposal_sampler, the mask branch...);
                not `proposal_matcher`, which is `proposal_matchers[0]`.
        """
        if "proposal_matcher" in kwargs:
            raise ValueError("CascadeROIHeads takes one matcher per stage as proposal_matchers=, not proposal_matcher=")
        num_stages = len(proposal_matchers)
        if num_stages == 0 or not len(box_heads) == len(box_predictors) == num_stages:
            raise ValueError(
                f"CascadeROIHeads needs at least one stage, and one box head, box predictor and matcher per stage "
                f"(from the config: one entry per cascade stage in MODEL.ROI_BOX_CASCADE_HEAD.IOUS, and in "
                f"MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS as many as MODEL.ROI_BOX_CASCADE_HEAD.IOUS); got "
                f"{len(box_heads)} box heads, {len(box_predictors)} box predictors and {num_stages} matchers"
            )
        if kwargs.get("train_on_pred_boxes"):
            raise ValueError(
                "train_on_pred_boxes (MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES) is implemented by StandardROIHeads, "
                "not CascadeROIHeads"
            )
        super().__init__(
            box_in_features=box_in_features,
            box_pooler=box_pooler,
            box_head=nn.ModuleList(box_heads),
            box_predictor=nn.ModuleList(box_predictors),
            proposal_matcher=proposal_matchers[0],
            **kwargs,
        )
        self.num_cascade_stages = num_stages
        self.proposal_matchers = list(proposal_matchers)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        del ret["proposal_matcher"]  # one per stage, built in _init_box_head
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        cascade = cfg.MODEL.ROI_BOX_CASCADE_HEAD
        if not cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG:
            raise ConfigError(
                "CascadeROIHeads needs MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG: True (each stage passes one box "
                "per region to the next)"
            )
        first = cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS[:1]
        if cascade.IOUS and list(first) != [cascade.IOUS[0]]:
            raise ConfigError(
                f"MODEL.ROI_BOX_CASCADE_HEAD.IOUS[0] ({cascade.IOUS[0]}) is the first stage's threshold and must equal "
                f"MODEL.ROI_HEADS.IOU_THRESHOLDS[0] ({first[0] if first else 'none given'})"
            )
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        pooler, channels = _pooler_from_config(cfg, "ROI_BOX_HEAD", in_features, input_shape)
        side = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        pooled_shape = ShapeSpec(channels=channels, height=side, width=side)
        # A matcher and a box head per IoU, a predictor per box coding: the constructor checks they agree.
        matchers, box_heads, box_predictors = [], [], []
        for k, iou in enumerate(cascade.IOUS):
            with config_keys(thresholds=f"MODEL.ROI_BOX_CASCADE_HEAD.IOUS[{k}]"):
                matchers.append(build_anchor_matcher(cfg, _stage_matcher_cfg(cfg.MODEL.ROI_HEADS, iou)))
            box_heads.append(build_box_head(cfg, pooled_shape))
        head_shape = box_heads[0].output_shape if box_heads else pooled_shape  # the stages' heads are alike
        for k, stage_weights in enumerate(cascade.BBOX_REG_WEIGHTS):
            with config_keys(weights=f"MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS[{k}]"):
                box2box_transform = Box2BoxTransform(weights=stage_weights)
            box_predictors.append(FastRCNNOutputLayers(cfg, head_shape, box2box_transform=box2box_transform))
        return {
            "box_in_features": in_features,
            "box_pooler": pooler,
            "box_heads": box_heads,
            "box_predictors": box_predictors,
            "proposal_matchers": matchers,
        }

    def forward(
        self,
        images: ImageList,
        features: Dict[str, Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, Tensor]]:
        """See `ROIHeads.forward`; the losses are per stage, `loss_cls_stage0`, `loss_box_reg_stage0`, ..."""
        del images
        if self.training:
            proposals = self.label_and_sample_proposals(proposals, targets)
            losses = self._forward_box(features, proposals, targets)
            losses.update(self._forward_mask(features, proposals))
            losses.update(self._forward_keypoint(features, proposals))
            return proposals, losses
        detections = self._forward_box(features, proposals)
        return self.forward_with_given_boxes(features, detections), {}

    def _forward_box(
        self, features: Dict[str, Tensor], proposals: List[Instances], targets: Optional[List[Instances]] = None
    ):
        """The cascade: {loss name: Tensor} in training, per-image detections in inference.

        Args:
            features: the backbone's features.
            proposals: per image, the first stage's regions (sampled and labelled in training).
            targets: per image, the GT instances that later stages match their boxes to (training).
        """
        x = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        stages = []  # (predictor, predictions, proposals) of each stage
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(prev_boxes, image_sizes)
                if self.training:
                    proposals = self._match_and_label_boxes(proposals, k, targets)
            predictions = self._run_stage(x, proposals, k)
            prev_boxes = self.box_predictor[k].predict_boxes(predictions, proposals)  # R_i x (R_i, 4)
            stages.append((self.box_predictor[k], predictions, proposals))

        if self.training:
            losses = {}
            for k, (predictor, predictions, stage_proposals) in enumerate(stages):
                losses.update({f"{name}_stage{k}": v for name, v in predictor.losses(predictions, stage_proposals).items()})
            return losses
        # Per image, the mean over stages of `Tensor[R_i, K+1]` probabilities; boxes of the last stage.
        probs_per_stage = [predictor.predict_probs(predictions, p) for predictor, predictions, p in stages]
        scores = [sum(per_image) / self.num_cascade_stages for per_image in zip(*probs_per_stage)]
        predictor, predictions, last_proposals = stages[-1]
        boxes = predictor.predict_boxes(predictions, last_proposals)
        detections, _ = fast_rcnn_inference(
            boxes, scores, image_sizes,
            predictor.test_score_thresh, predictor.test_nms_thresh, predictor.test_topk_per_image,
        )
        return detections

    def _run_stage(self, features: List[Tensor], proposals: List[Instances], stage: int) -> Tuple[Tensor, Tensor]:
        """Stage `stage`'s predictions for the regions of `proposals`: (R, K+1) logits, (R, 4) deltas."""
        x = self.box_pooler(features, [p.proposal_boxes for p in proposals])
        if self.training:
            # The paper averages the stages' losses but multiplies each head's gradients by the
            # number of stages; summing the losses and scaling down only the gradient reaching the
            # shared features is the same.
            x = _ScaleGradient.apply(x, 1.0 / self.num_cascade_stages)
        return self.box_predictor[stage](self.box_head[stage](x))

    def _create_proposals_from_boxes(self, boxes: Sequence[Tensor], image_sizes: List[Tuple[int, int]]) -> List[Instances]:
        """Per image, the previous stage's `Tensor[R_i, 4]` boxes, clipped and without gradient, as the
        next stage's proposals. Training drops empty boxes; inference keeps every box so that the
        stages' scores stay aligned region by region."""
        proposals = []
        for boxes_i, image_size in zip(boxes, image_sizes):
            boxes_i = Boxes(boxes_i.detach())
            boxes_i.clip(image_size)
            if self.training:
                boxes_i = boxes_i[boxes_i.nonempty()]
            proposals.append(Instances(image_size, proposal_boxes=boxes_i))
        return proposals

    @torch.no_grad()
    def _match_and_label_boxes(self, proposals: List[Instances], stage: int, targets: List[Instances]) -> List[Instances]:
        """Labels every box of a later stage with that stage's matcher (no sampling); boxes the matcher
        ignores are dropped. Only `gt_boxes` and `gt_classes` are set: the mask branch trains on the
        first stage's proposals."""
        labelled = []
        for proposals_i, targets_i in zip(proposals, targets):
            targets_i = Instances(targets_i.image_size, gt_boxes=targets_i.gt_boxes, gt_classes=targets_i.gt_classes)
            matched_idxs, match_labels = self.proposal_matchers[stage](targets_i.gt_boxes, proposals_i.proposal_boxes)
            keep = match_labels != -1
            labelled.append(self._label_proposals(proposals_i[keep], targets_i, matched_idxs[keep], match_labels[keep]))
        if has_event_storage():
            fg = [float(((p.gt_classes >= 0) & (p.gt_classes < self.num_classes)).sum()) for p in labelled]
            total = [float(len(p)) for p in labelled]
            storage = get_event_storage()
            storage.put_scalar(f"stage{stage}/roi_head/num_fg_samples", sum(fg) / len(fg))
            storage.put_scalar(f"stage{stage}/roi_head/num_bg_samples", (sum(total) - sum(fg)) / len(fg))
        return labelled


def _stage_matcher_cfg(roi_heads_cfg, iou: float):
    """The ROI heads' matcher settings with one stage's threshold: foreground from `iou`, background below."""
    stage_cfg = roi_heads_cfg.clone()
    stage_cfg.defrost()
    stage_cfg.IOU_THRESHOLDS = [iou]
    stage_cfg.IOU_LABELS = [0, 1]
    return stage_cfg
