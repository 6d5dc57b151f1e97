"""Semantic FPN with a ResNet-50-FPN backbone: the model of Detectron2's
Misc/semantic_R_50_FPN_1x.yaml (`SemanticSegmentor` with the semantic head of Panoptic FPN), written
as the objects it is made of. panoptic_fpn.py puts this semantic head on Mask R-CNN.
"""
from d2mask.config import LazyCall as L
from d2mask.layers import ShapeSpec
from d2mask.modeling import SemanticSegmentor
from d2mask.modeling.meta_arch.semantic_seg import SemSegFPNHead

from .mask_rcnn_fpn import model as _mask_rcnn

model = L(SemanticSegmentor)(
    backbone=_mask_rcnn.backbone,
    sem_seg_head=L(SemSegFPNHead)(
        input_shape={
            name: L(ShapeSpec)(stride=stride, channels="${....backbone.out_channels}")
            for name, stride in zip(["p2", "p3", "p4", "p5"], [4, 8, 16, 32])
        },
        ignore_value=255,
        num_classes=54,  # COCO's 53 stuff classes and one for all things
        conv_dims=128,
        common_stride=4,
        loss_weight=1.0,
        norm="GN",
    ),
    pixel_mean=_mask_rcnn.pixel_mean,
    pixel_std=_mask_rcnn.pixel_std,
)
