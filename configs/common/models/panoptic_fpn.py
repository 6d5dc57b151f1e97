"""Panoptic FPN with a ResNet-50-FPN backbone: the model of
configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml, written as the objects it is made of:
Mask R-CNN (mask_rcnn_fpn.py) with the semantic-segmentation head of semantic_fpn.py on p2-p5.
"""
from d2mask.modeling import PanopticFPN

from .mask_rcnn_fpn import model
from .semantic_fpn import model as _semantic_fpn

model._target_ = PanopticFPN
# Beside the detector's losses the semantic loss counts half (SEM_SEG_HEAD.LOSS_WEIGHT of the YAML config).
model.sem_seg_head = dict(_semantic_fpn.sem_seg_head, loss_weight=0.5)
