"""Cascade Mask R-CNN with a ResNet-50-FPN backbone: the model of
configs/Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml, written as the objects it is made of.

The Mask R-CNN of mask_rcnn_fpn.py with its box branch replaced by three stages, each with its own box
head, class-agnostic predictor (box deltas weighted more at later stages) and matcher (IoU 0.5, 0.6, 0.7).
"""
from d2mask.config import LazyCall as L
from d2mask.layers import ShapeSpec
from d2mask.modeling import Box2BoxTransform, CascadeROIHeads, FastRCNNConvFCHead, FastRCNNOutputLayers, Matcher

from .mask_rcnn_fpn import model

# one of each per stage instead
for key in ("box_head", "box_predictor", "proposal_matcher"):
    model.roi_heads.pop(key)

model.proposal_generator.post_nms_topk = [2000, 1000]
model.roi_heads.update(
    _target_=CascadeROIHeads,
    box_heads=[
        L(FastRCNNConvFCHead)(
            input_shape=L(ShapeSpec)(channels="${.....backbone.out_channels}", height=7, width=7),
            conv_dims=[],
            fc_dims=[1024, 1024],
        )
        for _ in range(3)
    ],
    box_predictors=[
        L(FastRCNNOutputLayers)(
            input_shape=L(ShapeSpec)(channels=1024),
            box2box_transform=L(Box2BoxTransform)(weights=[w_xy, w_xy, w_wh, w_wh]),
            num_classes="${...num_classes}",
            test_score_thresh=0.05,
            cls_agnostic_bbox_reg=True,
        )
        for w_xy, w_wh in [(10.0, 5.0), (20.0, 10.0), (30.0, 15.0)]
    ],
    proposal_matchers=[
        L(Matcher)(thresholds=[iou], labels=[0, 1], allow_low_quality_matches=False) for iou in [0.5, 0.6, 0.7]
    ],
)
