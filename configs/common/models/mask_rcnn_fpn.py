"""Mask R-CNN with a ResNet-50-FPN backbone: the model of
configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml, written as the objects it is made of.

`model.roi_heads.num_classes` sets the classes of the box predictor and the mask head too, and
`model.backbone.out_channels` the input channels of the RPN head and the ROI heads.
"""
from d2mask.config import LazyCall as L
from d2mask.layers import ShapeSpec
from d2mask.modeling import (
    FPN,
    RPN,
    BasicStem,
    Box2BoxTransform,
    DefaultAnchorGenerator,
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    GeneralizedRCNN,
    LastLevelMaxPool,
    MaskRCNNConvUpsampleHead,
    Matcher,
    RandomSampler,
    ResNet,
    ROIPooler,
    StandardROIHeads,
    StandardRPNHead,
)

from .resnet import resnet_stages

model = L(GeneralizedRCNN)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=resnet_stages(50, norm="FrozenBN", stride_in_1x1=True),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=256,
        norm="",
        top_block=L(LastLevelMaxPool)(),
        fuse_type="sum",
    ),
    proposal_generator=L(RPN)(
        in_features=["p2", "p3", "p4", "p5", "p6"],
        head=L(StandardRPNHead)(in_channels="${...backbone.out_channels}", num_anchors=3, box_dim=4, conv_dims=[-1]),
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[32], [64], [128], [256], [512]],
            aspect_ratios=[[0.5, 1.0, 2.0]] * 5,
            strides=[4, 8, 16, 32, 64],
            offset=0.0,
        ),
        anchor_matcher=L(Matcher)(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True),
        sampler=L(RandomSampler)(batch_size_per_image=256, positive_fraction=0.5),
        box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
        batch_size_per_image="${.sampler.batch_size_per_image}",  # the loss normaliser follows the sampler
        pre_nms_topk=[2000, 1000],  # (training, inference), per level
        post_nms_topk=[1000, 1000],  # (training, inference), per image
        nms_thresh=0.7,
        min_box_size=0.0,
        anchor_boundary_thresh=-1.0,
        loss_weight={"loss_rpn_cls": 1.0, "loss_rpn_loc": 1.0},
        box_reg_loss_type="smooth_l1",
        smooth_l1_beta=0.0,
    ),
    roi_heads=L(StandardROIHeads)(
        num_classes=80,
        proposal_matcher=L(Matcher)(thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False),
        proposal_sampler=L(RandomSampler)(batch_size_per_image=512, positive_fraction=0.25),
        proposal_append_gt=True,
        box_in_features=["p2", "p3", "p4", "p5"],
        box_pooler=L(ROIPooler)(
            output_size=7,
            scales=[1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32],
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        box_head=L(FastRCNNConvFCHead)(
            input_shape=L(ShapeSpec)(channels="${....backbone.out_channels}", height=7, width=7),
            conv_dims=[],
            fc_dims=[1024, 1024],
            conv_norm="",
        ),
        box_predictor=L(FastRCNNOutputLayers)(
            input_shape=L(ShapeSpec)(channels=1024),
            box2box_transform=L(Box2BoxTransform)(weights=[10.0, 10.0, 5.0, 5.0]),
            num_classes="${..num_classes}",
            test_score_thresh=0.05,
            test_nms_thresh=0.5,
            test_topk_per_image=100,
            cls_agnostic_bbox_reg=False,
            smooth_l1_beta=0.0,
            box_reg_loss_type="smooth_l1",
            loss_weight={"loss_box_reg": 1.0},
        ),
        mask_in_features=["p2", "p3", "p4", "p5"],
        mask_pooler=L(ROIPooler)(
            output_size=14,
            scales=[1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32],
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        mask_head=L(MaskRCNNConvUpsampleHead)(
            input_shape=L(ShapeSpec)(channels="${....backbone.out_channels}", height=14, width=14),
            num_classes="${..num_classes}",
            conv_dims=[256, 256, 256, 256, 256],  # four 3x3 convs, then the 2x transposed conv
            conv_norm="",
            loss_weight=1.0,
        ),
    ),
    pixel_mean=[103.53, 116.28, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",  # as the data loaders' image_format
    vis_period=0,
)
