"""RetinaNet with a ResNet-50-FPN backbone (p3-p7): the model of
configs/COCO-Detection/retinanet_R_50_FPN_1x.yaml, written as the objects it is made of.

`model.num_classes` sets the classes of the head too, and `model.backbone.out_channels` its input
channels.
"""
from d2mask.config import LazyCall as L
from d2mask.layers import ShapeSpec
from d2mask.modeling import (
    FPN,
    BasicStem,
    Box2BoxTransform,
    DefaultAnchorGenerator,
    LastLevelP6P7,
    Matcher,
    ResNet,
    RetinaNet,
    RetinaNetHead,
)

from .resnet import resnet_stages

model = L(RetinaNet)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=resnet_stages(50, norm="FrozenBN", stride_in_1x1=True),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features=["res3", "res4", "res5"],
        out_channels=256,
        top_block=L(LastLevelP6P7)(in_channels=2048, out_channels="${..out_channels}"),
    ),
    head=L(RetinaNetHead)(
        input_shape=[L(ShapeSpec)(channels="${....backbone.out_channels}")] * 5,  # p3..p7
        num_classes="${..num_classes}",
        num_anchors=9,  # 3 sizes x 3 aspect ratios
        conv_dims=[256, 256, 256, 256],
        prior_prob=0.01,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    anchor_generator=L(DefaultAnchorGenerator)(
        # three sizes per octave
        sizes=[[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]],
        aspect_ratios=[[0.5, 1.0, 2.0]] * 5,
        strides=[8, 16, 32, 64, 128],
        offset=0.0,
    ),
    box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
    anchor_matcher=L(Matcher)(thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True),
    num_classes=80,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    smooth_l1_beta=0.0,
    box_reg_loss_type="smooth_l1",
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_nms_thresh=0.5,
    max_detections_per_image=100,
    pixel_mean=[103.53, 116.28, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",
    vis_period=0,
)
