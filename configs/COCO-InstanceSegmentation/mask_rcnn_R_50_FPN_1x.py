"""Mask R-CNN R50-FPN on COCO, the 1x schedule (90k iterations of 16 images), as Detectron2's Python
config: the model of mask_rcnn_R_50_FPN_1x.yaml, ImageNet-pretrained, its schedule an `lr_multiplier`.

    python tools/lazyconfig_train_net.py --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py --num-gpus 8
"""
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up.freeze_at = 2  # the stem and res2 keep their ImageNet weights
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
