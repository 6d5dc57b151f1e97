"""The quick start of configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml as a Python config: the same
model, data, schedule and seed, so it trains to the same losses.

    python tools/lazyconfig_train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.py
"""
from ..common.data.shapes import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.models.resnet import resnet_stages
from ..common.optim import SGD as optimizer
from ..common.schedules import multistep as lr_scheduler
from ..common.train import train

# the shapes' colours spread over the whole range: centre and scale them to about [-1, 1]
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [64.0, 64.0, 64.0]
# ResNet-18 with GroupNorm, from scratch: batch statistics of 4 images are too noisy to train BN
bottom_up = model.backbone.bottom_up
bottom_up.stem.norm = "GN"
bottom_up.stages = resnet_stages(18, norm="GN")
bottom_up.freeze_at = 0  # nothing pretrained to keep
model.backbone.out_channels = 64  # and so the RPN head's and ROI heads' input channels
model.backbone.norm = "GN"

rpn = model.proposal_generator
rpn.anchor_generator.sizes = [[16], [32], [64], [128], [256]]  # objects from a few pixels to the whole 256 px image
rpn.pre_nms_topk = [1000, 500]
rpn.post_nms_topk = [500, 300]
rpn.sampler.batch_size_per_image = 128

roi_heads = model.roi_heads
roi_heads.num_classes = 3
roi_heads.proposal_sampler.batch_size_per_image = 64
roi_heads.box_pooler.sampling_ratio = 2  # bounds ROIAlign's cost (its CPU backward is slow) on large boxes
roi_heads.box_head.fc_dims = [256, 256]
roi_heads.box_predictor.input_shape.channels = 256
roi_heads.mask_pooler.sampling_ratio = 2
roi_heads.mask_head.conv_dims = [64, 64, 64]  # two 3x3 convs, then the transposed conv

optimizer.lr = 0.02
lr_scheduler.milestones = [500, 630]
lr_scheduler.warmup_iters = 100

train.output_dir = "./output/shapes_mask_rcnn_R_18_FPN_lazy"
train.max_iter = 700
train.eval_period = 250
train.checkpointer.period = 250
train.clip_gradients = dict(enabled=True, clip_type="norm", clip_value=5.0, norm_type=2.0)
train.seed = 42
