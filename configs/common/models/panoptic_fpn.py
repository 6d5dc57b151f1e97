"""Panoptic FPN with a ResNet-50-FPN backbone: the model of
configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml, written as the objects it is made of:
Mask R-CNN (mask_rcnn_fpn.py) with a semantic-segmentation head on p2-p5.
"""
from d2mask.config import LazyCall as L
from d2mask.layers import ShapeSpec
from d2mask.modeling import PanopticFPN
from d2mask.modeling.meta_arch.semantic_seg import SemSegFPNHead

from .mask_rcnn_fpn import model

model._target_ = PanopticFPN
model.sem_seg_head = L(SemSegFPNHead)(
    input_shape={
        name: L(ShapeSpec)(stride=stride, channels="${....backbone.out_channels}")
        for name, stride in zip(["p2", "p3", "p4", "p5"], [4, 8, 16, 32])
    },
    ignore_value=255,
    num_classes=54,  # COCO's 53 stuff classes and one for all things
    conv_dims=128,
    common_stride=4,
    loss_weight=0.5,
    norm="GN",
)
