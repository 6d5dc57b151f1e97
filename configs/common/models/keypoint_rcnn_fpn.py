"""Keypoint R-CNN with a ResNet-50-FPN backbone: the model of
configs/COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml, written as the objects it is made of.

Mask R-CNN's model (mask_rcnn_fpn.py) with a keypoint branch in place of the mask branch, one class
(person) and COCO's 17 keypoints.
"""
from d2mask.config import LazyCall as L
from d2mask.layers import ShapeSpec
from d2mask.modeling import KRCNNConvDeconvUpsampleHead, ROIPooler

from .mask_rcnn_fpn import model

for key in ("mask_in_features", "mask_pooler", "mask_head"):
    model.roi_heads.pop(key)

model.roi_heads.update(
    num_classes=1,
    keypoint_in_features=["p2", "p3", "p4", "p5"],
    keypoint_pooler=L(ROIPooler)(
        output_size=14,
        scales=[1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32],
        sampling_ratio=0,
        pooler_type="ROIAlignV2",
    ),
    keypoint_head=L(KRCNNConvDeconvUpsampleHead)(
        input_shape=L(ShapeSpec)(channels="${....backbone.out_channels}", height=14, width=14),
        num_keypoints=17,
        conv_dims=[512] * 8,
        loss_normalizer="visible",
    ),
)

# 1500 proposals per image in training: Detectron1 kept 2000 per batch, and 1000 per image costs box AP
model.proposal_generator.post_nms_topk = [1500, 1000]
# plain L1 improves box AP but costs keypoint AP (Detectron2's finding)
model.roi_heads.box_predictor.smooth_l1_beta = 0.5
