"""`Res5ROIHeads`: the C4 design of Faster/Mask R-CNN, where ResNet's last stage runs per region.

Shape shorthand: `R` regions over all images, `C` channels of res4, `S` the pooled side (14).
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from d2mask.config import ConfigError, config_keys, configurable
from d2mask.layers import ShapeSpec
from d2mask.structures import Boxes, ImageList, Instances

from ..backbone.resnet import RESNET_CONFIG_KEYS, BottleneckBlock, ResNet, default_stage_specs
from ..poolers import ROIPooler, roi_pooler_from_config
from .fast_rcnn import FastRCNNOutputLayers
from .mask_head import build_mask_head
from .roi_heads import ROI_HEADS_REGISTRY, ROIHeads, select_foreground_proposals

__all__ = ["Res5ROIHeads"]


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeads(ROIHeads):
    """The C4 ROI heads: ResNet's res5 runs on every pooled region, shared by the box and mask branches.

    Regions are pooled S x S from one feature map (res4) and run through `res5`, which halves their
    side; the result feeds the box predictor (after average pooling) and the mask head.
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        pooler: ROIPooler,
        res5: nn.Module,
        box_predictor: nn.Module,
        mask_head: Optional[nn.Module] = None,
        **kwargs,
    ):
        """
        Args:
            in_features: the single feature map pooled from, e.g. ["res4"].
            pooler: a one-level ROIPooler over it.
            res5: `Tensor[R, C, S, S]` -> `Tensor[R, C', S/2, S/2]`, ResNet's res5 stage.
            box_predictor: mean-pooled res5 features -> predictions (a `FastRCNNOutputLayers`).
            mask_head: res5 features -> masks, or None for a box-only model.
            kwargs: passed to `ROIHeads` (num_classes, proposal_matcher, ...).
        """
        super().__init__(**kwargs)
        if len(in_features) != 1:
            raise ValueError(
                f"Res5ROIHeads pools from exactly one feature map, got in_features (MODEL.ROI_HEADS.IN_FEATURES) "
                f"{in_features}"
            )
        self.in_features = in_features
        self.pooler = pooler
        self.res5 = res5
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_head = mask_head

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg)
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        box_cfg = cfg.MODEL.ROI_BOX_HEAD
        if box_cfg.TRAIN_ON_PRED_BOXES:
            # Detectron2's Res5ROIHeads ignores the key; here a set key always does something or fails.
            raise ConfigError("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES is implemented by StandardROIHeads, not Res5ROIHeads")
        if cfg.MODEL.KEYPOINT_ON:
            raise ConfigError("MODEL.KEYPOINT_ON is implemented by StandardROIHeads (FPN configs), not Res5ROIHeads")
        ret["in_features"] = in_features
        scales = [1.0 / input_shape[f].stride for f in in_features[:1]]  # more than one feature: __init__ says so
        ret["pooler"] = roi_pooler_from_config(cfg, "ROI_BOX_HEAD", scales)
        ret["res5"], out_channels = cls._build_res5_block(cfg)
        ret["box_predictor"] = FastRCNNOutputLayers(cfg, ShapeSpec(channels=out_channels, height=1, width=1))
        if cfg.MODEL.MASK_ON:
            side = box_cfg.POOLER_RESOLUTION
            ret["mask_head"] = build_mask_head(cfg, ShapeSpec(channels=out_channels, height=side, width=side))
        return ret

    @classmethod
    def _build_res5_block(cls, cfg) -> Tuple[nn.Sequential, int]:
        """ResNet's res5 stage (3 bottleneck blocks, the first with stride 2) from MODEL.RESNETS.*, so
        that its parameters are named `roi_heads.res5.*` as in Detectron2's checkpoints."""
        r = cfg.MODEL.RESNETS
        if r.RES5_DILATION != 1:
            raise ConfigError(f"MODEL.RESNETS.RES5_DILATION must be 1 with Res5ROIHeads, got {r.RES5_DILATION}")
        # the res5 of a bottleneck ResNet, 3 blocks at every depth, as in Detectron2's C4 heads
        with config_keys(**RESNET_CONFIG_KEYS):
            res5 = default_stage_specs(
                50,
                stem_out_channels=r.STEM_OUT_CHANNELS,
                res2_out_channels=r.RES2_OUT_CHANNELS,
                bottleneck_channels=r.NUM_GROUPS * r.WIDTH_PER_GROUP,
            )[-1]
            blocks = ResNet.make_stage(
                BottleneckBlock, **res5, num_groups=r.NUM_GROUPS, norm=r.NORM, stride_in_1x1=r.STRIDE_IN_1X1
            )
        out_channels = res5["out_channels"]
        return nn.Sequential(*blocks), out_channels

    def _shared_roi_transform(self, features: Dict[str, Tensor], boxes: List[Boxes]) -> Tensor:
        """`Tensor[R, C', S/2, S/2]`: res5 applied to the regions pooled at `boxes`."""
        x = self.pooler([features[f] for f in self.in_features], boxes)  # (R, C, S, S)
        return self.res5(x)

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
        box_features = self._shared_roi_transform(features, [p.proposal_boxes for p in proposals])
        predictions = self.box_predictor(box_features.mean(dim=[2, 3]))  # (R, C', S/2, S/2) -> (R, C')

        if self.training:
            losses = self.box_predictor.losses(predictions, proposals)
            if self.mask_on:
                foreground, fg_masks = select_foreground_proposals(proposals, self.num_classes)
                losses.update(self.mask_head(box_features[torch.cat(fg_masks)], foreground))
            return proposals, losses
        detections, _ = self.box_predictor.inference(predictions, proposals)
        return self.forward_with_given_boxes(features, detections), {}

    def forward_with_given_boxes(self, features: Dict[str, Tensor], instances: List[Instances]) -> List[Instances]:
        """Runs the mask branch, when there is one, on given detections (see
        `StandardROIHeads.forward_with_given_boxes`)."""
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference; call model.eval() first")
        if not self.mask_on:
            return instances
        x = self._shared_roi_transform(features, [i.pred_boxes for i in instances])
        return self.mask_head(x, instances)
