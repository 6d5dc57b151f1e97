"""RetinaNet R50-FPN on COCO, the 1x schedule, as Detectron2's Python config: the model of
retinanet_R_50_FPN_1x.yaml, ImageNet-pretrained, boxes only, at half Mask R-CNN's learning rate.

    python tools/lazyconfig_train_net.py --config-file configs/COCO-Detection/retinanet_R_50_FPN_1x.py --num-gpus 8
"""
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.retinanet import model
from ..common.optim import SGD as optimizer
from ..common.train import train

dataloader.train.mapper.use_instance_mask = False  # no mask head to train
model.backbone.bottom_up.freeze_at = 2
optimizer.lr = 0.01
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
