"""Defaults of the detection heads: proposal generator (RPN), ROI heads (box, cascade, mask and keypoint) and
the RetinaNet head."""
from ..key_docs import define


def add_rpn_defaults(cfg) -> None:
    define(cfg, "MODEL.PROPOSAL_GENERATOR.NAME", "RPN", "Name in PROPOSAL_GENERATOR_REGISTRY.")
    define(cfg, "MODEL.PROPOSAL_GENERATOR.MIN_SIZE", 0, "Proposals with a side smaller than this (input pixels) are dropped.")

    define(cfg, "MODEL.RPN.HEAD_NAME", "StandardRPNHead", "Name in RPN_HEAD_REGISTRY.")
    define(cfg, "MODEL.RPN.IN_FEATURES", ["res4"], "Backbone features the RPN reads.")
    define(cfg, "MODEL.RPN.BOUNDARY_THRESH", -1, "Anchors reaching more than this many pixels outside the image are ignored; < 0 keeps all.")
    define(cfg, "MODEL.RPN.IOU_THRESHOLDS", [0.3, 0.7], "IoU thresholds splitting anchors into IOU_LABELS intervals.")
    define(cfg, "MODEL.RPN.IOU_LABELS", [0, -1, 1], "Label of each IoU interval: 0 negative, -1 ignored, 1 positive.")
    define(cfg, "MODEL.RPN.MATCHER.NAME", "Matcher", "Name in ANCHOR_MATCHER_REGISTRY of the anchor-to-GT matcher.")
    define(cfg, "MODEL.RPN.MATCHER.ALLOW_LOW_QUALITY_MATCHES", True, "Every GT box keeps its highest-IoU anchors (ties included) as positives.")
    define(cfg, "MODEL.RPN.SAMPLER.NAME", "RandomSampler", "Name in SAMPLER_REGISTRY of the anchor sampler.")
    define(cfg, "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 256, "Anchors sampled per image for the RPN losses.")
    define(cfg, "MODEL.RPN.POSITIVE_FRACTION", 0.5, "Largest share of positives among the sampled anchors.")
    define(cfg, "MODEL.RPN.BBOX_REG_LOSS_TYPE", "smooth_l1", "Box regression loss: smooth_l1, giou, diou or ciou.")
    define(cfg, "MODEL.RPN.BBOX_REG_LOSS_WEIGHT", 1.0, "Weight of loss_rpn_loc.")
    define(cfg, "MODEL.RPN.BBOX_REG_WEIGHTS", (1.0, 1.0, 1.0, 1.0), "Weights (wx, wy, ww, wh) of the anchor box deltas.")
    define(cfg, "MODEL.RPN.SMOOTH_L1_BETA", 0.0, "Beta of the smooth-L1 loss; 0 is exactly L1.")
    define(cfg, "MODEL.RPN.LOSS_WEIGHT", 1.0, "Weight of both RPN losses.")
    define(cfg, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 12000, "Proposals kept per level before NMS, in training.")
    define(cfg, "MODEL.RPN.PRE_NMS_TOPK_TEST", 6000, "Proposals kept per level before NMS, in inference.")
    define(cfg, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 2000, "Proposals kept per image after NMS, in training.")
    define(cfg, "MODEL.RPN.POST_NMS_TOPK_TEST", 1000, "Proposals kept per image after NMS, in inference.")
    define(cfg, "MODEL.RPN.NMS_THRESH", 0.7, "IoU threshold of the NMS over proposals.")
    define(cfg, "MODEL.RPN.CONV_DIMS", [-1], "Channels of the RPN head's shared convs; -1 means the previous layer's channels (the input's for the first).")


def add_roi_heads_defaults(cfg) -> None:
    define(cfg, "MODEL.ROI_HEADS.NAME", "Res5ROIHeads", "Name in ROI_HEADS_REGISTRY.")
    define(cfg, "MODEL.ROI_HEADS.NUM_CLASSES", 80, "Number of foreground classes.")
    define(cfg, "MODEL.ROI_HEADS.IN_FEATURES", ["res4"], "Backbone features the ROI heads pool from.")
    define(cfg, "MODEL.ROI_HEADS.IOU_THRESHOLDS", [0.5], "IoU thresholds splitting proposals into IOU_LABELS intervals.")
    define(cfg, "MODEL.ROI_HEADS.IOU_LABELS", [0, 1], "Label of each IoU interval: 0 background, 1 foreground, -1 ignored.")
    define(cfg, "MODEL.ROI_HEADS.MATCHER.NAME", "Matcher", "Name in ANCHOR_MATCHER_REGISTRY of the proposal-to-GT matcher.")
    define(cfg, "MODEL.ROI_HEADS.MATCHER.ALLOW_LOW_QUALITY_MATCHES", False, "Every GT box keeps its highest-IoU proposals as foreground.")
    define(cfg, "MODEL.ROI_HEADS.SAMPLER.NAME", "RandomSampler", "Name in SAMPLER_REGISTRY of the proposal sampler.")
    define(cfg, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 512, "Proposals sampled per image for the box head's losses.")
    define(cfg, "MODEL.ROI_HEADS.POSITIVE_FRACTION", 0.25, "Largest share of foreground among the sampled proposals.")
    define(cfg, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.05, "Detections scoring below this are dropped in inference.")
    define(cfg, "MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.5, "IoU threshold of the per-class NMS in inference.")
    define(cfg, "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", True, "Add the GT boxes to the proposals in training.")

    define(cfg, "MODEL.ROI_BOX_HEAD.NAME", "", "Name in ROI_BOX_HEAD_REGISTRY (unused by Res5ROIHeads).")
    define(cfg, "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", "smooth_l1", "Box regression loss: smooth_l1, giou, diou or ciou.")
    define(cfg, "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT", 1.0, "Weight of loss_box_reg.")
    define(cfg, "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", (10.0, 10.0, 5.0, 5.0), "Weights (wx, wy, ww, wh) of the proposal box deltas.")
    define(cfg, "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", 0.0, "Beta of the smooth-L1 loss; 0 is exactly L1.")
    define(cfg, "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 14, "Side of the pooled box features.")
    define(cfg, "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 0, "ROIAlign samples per bin side; 0 adapts to the box.")
    define(cfg, "MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignV2", "ROIAlign (legacy, unaligned) or ROIAlignV2 (aligned).")
    define(cfg, "MODEL.ROI_BOX_HEAD.NUM_FC", 0, "Fully connected layers of the box head.")
    define(cfg, "MODEL.ROI_BOX_HEAD.FC_DIM", 1024, "Width of the box head's fully connected layers.")
    define(cfg, "MODEL.ROI_BOX_HEAD.NUM_CONV", 0, "Convs of the box head before its fully connected layers.")
    define(cfg, "MODEL.ROI_BOX_HEAD.CONV_DIM", 256, "Channels of the box head's convs.")
    define(cfg, "MODEL.ROI_BOX_HEAD.NORM", "", "Normalisation of the box head's convs.")
    define(cfg, "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False, "Predict one box per ROI instead of one per class.")
    define(cfg, "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", False, "Classify with one sigmoid cross-entropy per class instead of the softmax over K+1.")
    define(cfg, "MODEL.ROI_BOX_HEAD.USE_FED_LOSS", False, "Federated loss (for LVIS): the sigmoid loss of each batch only over its GT classes and sampled negative classes; needs USE_SIGMOID_CE.")
    define(cfg, "MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER", 0.5, "Negative classes of the federated loss are drawn with probability image count ** this, counted over DATASETS.TRAIN.")
    define(cfg, "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES", 50, "Classes (GT and sampled) in each batch's federated loss.")
    define(cfg, "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", False, "Train the mask head on the box head's predicted boxes (for each proposal's GT class) instead of the proposals.")

    define(
        # lists, not Detectron2's tuples, so that a dumped config.yaml reloads to an equal config
        cfg, "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS", [[10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0], [30.0, 30.0, 15.0, 15.0]],
        "CascadeROIHeads: box delta weights (wx, wy, ww, wh) of each stage; one entry per stage, like IOUS.",
    )
    define(cfg, "MODEL.ROI_BOX_CASCADE_HEAD.IOUS", (0.5, 0.6, 0.7), "CascadeROIHeads: the foreground IoU threshold of each stage's matcher; IOUS[0] must equal ROI_HEADS.IOU_THRESHOLDS[0].")

    define(cfg, "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead", "Name in ROI_MASK_HEAD_REGISTRY.")
    define(cfg, "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14, "Side of the pooled mask features.")
    define(cfg, "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", 0, "ROIAlign samples per bin side; 0 adapts to the box.")
    define(cfg, "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlignV2", "ROIAlign (legacy, unaligned), ROIAlignV2 (aligned), or '' for no pooler: the mask head gets the features of ROI_HEADS.IN_FEATURES as a dict (StandardROIHeads).")
    define(cfg, "MODEL.ROI_MASK_HEAD.NUM_CONV", 0, "3x3 convs of the mask head before its upsampling.")
    define(cfg, "MODEL.ROI_MASK_HEAD.CONV_DIM", 256, "Channels of the mask head's convs.")
    define(cfg, "MODEL.ROI_MASK_HEAD.NORM", "", "Normalisation of the mask head's convs.")
    define(cfg, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", False, "Predict one mask per ROI instead of one per class.")

    define(cfg, "MODEL.ROI_KEYPOINT_HEAD.NAME", "KRCNNConvDeconvUpsampleHead", "Name in ROI_KEYPOINT_HEAD_REGISTRY.")
    define(cfg, "MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION", 14, "Side of the pooled keypoint features (the heatmaps are 4x this).")
    define(cfg, "MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO", 0, "ROIAlign samples per bin side; 0 adapts to the box.")
    define(cfg, "MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE", "ROIAlignV2", "ROIAlign (legacy, unaligned), ROIAlignV2 (aligned), or '' for no pooler: the keypoint head gets the features of ROI_HEADS.IN_FEATURES as a dict.")
    define(cfg, "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [512] * 8, "Output channels of each 3x3 conv of the keypoint head.")
    define(cfg, "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 17, "Keypoints per instance (17 in COCO); must equal the length of the datasets' keypoint_names.")
    define(cfg, "MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE", 1, "Training images with fewer labelled keypoints (visibility > 0) are dropped; 0 keeps all.")
    define(cfg, "MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS", True, "Divide the keypoint loss by the labelled keypoints in the batch; False: by NUM_KEYPOINTS x ROI_HEADS.BATCH_SIZE_PER_IMAGE x POSITIVE_FRACTION per image, so a batch with few keypoints weighs less (then Detectron2 recommends LOSS_WEIGHT 4).")
    define(cfg, "MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT", 1.0, "Weight of loss_keypoint.")


def add_retinanet_defaults(cfg) -> None:
    define(cfg, "MODEL.RETINANET.NUM_CLASSES", 80, "Number of foreground classes of RetinaNet.")
    define(cfg, "MODEL.RETINANET.IN_FEATURES", ["p3", "p4", "p5", "p6", "p7"], "Backbone features the RetinaNet head reads.")
    define(cfg, "MODEL.RETINANET.NUM_CONVS", 4, "3x3 convs of each RetinaNet subnet (classification, box) before its output conv.")
    define(cfg, "MODEL.RETINANET.IOU_THRESHOLDS", [0.4, 0.5], "IoU thresholds splitting anchors into IOU_LABELS intervals.")
    define(cfg, "MODEL.RETINANET.IOU_LABELS", [0, -1, 1], "Label of each IoU interval: 0 background, -1 ignored, 1 foreground.")
    define(cfg, "MODEL.RETINANET.MATCHER.NAME", "Matcher", "Name in ANCHOR_MATCHER_REGISTRY of RetinaNet's anchor-to-GT matcher.")
    define(cfg, "MODEL.RETINANET.MATCHER.ALLOW_LOW_QUALITY_MATCHES", True, "Every GT box keeps its highest-IoU anchors (ties included) as foreground.")
    define(cfg, "MODEL.RETINANET.PRIOR_PROB", 0.01, "Initial foreground probability of every anchor and class (sets the classifier's bias).")
    define(cfg, "MODEL.RETINANET.SCORE_THRESH_TEST", 0.05, "Anchor-class scores at or below this are dropped in inference.")
    define(cfg, "MODEL.RETINANET.TOPK_CANDIDATES_TEST", 1000, "Highest-scoring candidates kept per level before NMS.")
    define(cfg, "MODEL.RETINANET.NMS_THRESH_TEST", 0.5, "IoU threshold of the per-class NMS in inference.")
    define(cfg, "MODEL.RETINANET.BBOX_REG_WEIGHTS", (1.0, 1.0, 1.0, 1.0), "Weights (wx, wy, ww, wh) of the anchor box deltas.")
    define(cfg, "MODEL.RETINANET.FOCAL_LOSS_GAMMA", 2.0, "Focusing parameter gamma of the focal loss.")
    define(cfg, "MODEL.RETINANET.FOCAL_LOSS_ALPHA", 0.25, "Weight alpha of the positives in the focal loss.")
    define(cfg, "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", 0.1, "Beta of the smooth-L1 box loss; 0 is exactly L1.")
    define(cfg, "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "smooth_l1", "Box regression loss: smooth_l1, giou, diou or ciou.")
    define(
        cfg,
        "MODEL.RETINANET.NORM",
        "",
        "Normalisation of the subnets' convs: BN and SyncBN keep statistics per level (one shared affine "
        "transform, as Detectron2); other norms are shared over levels.",
    )
