"""ViTDet's Mask R-CNN with a ViT-B backbone on COCO, 100 epochs: MAE-pretrained weights, large-scale
jitter, AdamW with a layer-wise learning-rate decay of 0.7, mixed precision. The schedule is for 64
images per batch (e.g. 8 GPUs x 8 images).

    python tools/lazyconfig_train_net.py --config-file projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py --num-gpus 8
"""
from functools import partial

from fvcore.common.param_scheduler import MultiStepParamScheduler

from d2mask import model_zoo
from d2mask.config import LazyCall as L
from d2mask.modeling.backbone.vit import get_vit_lr_decay_rate
from d2mask.solver import WarmupParamScheduler

from ..common.coco_loader_lsj import dataloader

model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model

train = model_zoo.get_config("common/train.py").train
train.amp.enabled = True
train.ddp.fp16_compression = True
train.init_checkpoint = "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth?matching_heuristics=True"

# 100 epochs of COCO's 118k training images at 64 images per iteration: 184375 iterations, the
# learning rate divided by 10 at about 89% and 96% of them, after 250 warm-up iterations.
train.max_iter = 184375
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[163889, 177546],
        num_updates=train.max_iter,
    ),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
