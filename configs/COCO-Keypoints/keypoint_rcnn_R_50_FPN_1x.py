"""Keypoint R-CNN R50-FPN on COCO's person keypoints, the 1x schedule, as Detectron2's Python config:
the model of keypoint_rcnn_R_50_FPN_1x.yaml, ImageNet-pretrained.

    python tools/lazyconfig_train_net.py --config-file configs/COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.py --num-gpus 8
"""
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco_keypoint import dataloader
from ..common.models.keypoint_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
