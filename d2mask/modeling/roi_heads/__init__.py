"""ROI heads: the second stage of R-CNN, which classifies, refines and segments each proposal."""
from .box_head import ROI_BOX_HEAD_REGISTRY, FastRCNNConvFCHead, build_box_head
from .cascade_rcnn import CascadeROIHeads
from .fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference, fast_rcnn_inference_single_image
from .keypoint_head import (
    ROI_KEYPOINT_HEAD_REGISTRY,
    BaseKeypointRCNNHead,
    KRCNNConvDeconvUpsampleHead,
    build_keypoint_head,
    keypoint_rcnn_inference,
    keypoint_rcnn_loss,
)
from .mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    BaseMaskRCNNHead,
    MaskRCNNConvUpsampleHead,
    build_mask_head,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from .res5_roi_heads import Res5ROIHeads
from .roi_heads import (
    ROI_HEADS_REGISTRY,
    ROIHeads,
    build_roi_heads,
    select_foreground_proposals,
    select_proposals_with_visible_keypoints,
)
from .standard_roi_heads import StandardROIHeads

__all__ = [
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_KEYPOINT_HEAD_REGISTRY",
    "ROI_MASK_HEAD_REGISTRY",
    "BaseKeypointRCNNHead",
    "BaseMaskRCNNHead",
    "CascadeROIHeads",
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "KRCNNConvDeconvUpsampleHead",
    "MaskRCNNConvUpsampleHead",
    "ROIHeads",
    "Res5ROIHeads",
    "StandardROIHeads",
    "build_box_head",
    "build_keypoint_head",
    "build_mask_head",
    "build_roi_heads",
    "fast_rcnn_inference",
    "fast_rcnn_inference_single_image",
    "keypoint_rcnn_inference",
    "keypoint_rcnn_loss",
    "mask_rcnn_inference",
    "mask_rcnn_loss",
    "select_foreground_proposals",
    "select_proposals_with_visible_keypoints",
]
