"""Defaults of the model's trunk: meta-architecture, input normalisation, backbone, FPN, anchors."""
import torch

from ..key_docs import define


def add_model_defaults(cfg) -> None:
    define(cfg, "MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "Name in META_ARCH_REGISTRY of the model to build.")
    define(
        cfg, "MODEL.DEVICE", "cuda" if torch.cuda.is_available() else "cpu",
        "Device the model runs on.", shown_default='"cuda" if available, else "cpu"',
    )
    define(cfg, "MODEL.WEIGHTS", "", "Checkpoint to initialise the model from (d2mask/Detectron2 .pth, .pkl, converted torchvision).")
    define(cfg, "MODEL.MASK_ON", False, "Whether the ROI heads predict instance masks (Mask R-CNN).")
    define(cfg, "MODEL.KEYPOINT_ON", False, "Whether the ROI heads predict keypoints (keypoint R-CNN); the training sets need keypoint_names and keypoint_flip_map metadata.")
    define(cfg, "MODEL.PIXEL_MEAN", [103.530, 116.280, 123.675], "Per-channel mean subtracted from input images, in INPUT.FORMAT's channel order.")
    define(cfg, "MODEL.PIXEL_STD", [1.0, 1.0, 1.0], "Per-channel std dividing input images (1.0 for Caffe2-style MSRA weights).")

    define(cfg, "MODEL.BACKBONE.NAME", "build_resnet_backbone", "Name in BACKBONE_REGISTRY of the backbone builder.")
    define(cfg, "MODEL.BACKBONE.FREEZE_AT", 2, "Freeze the stem (1) and the first stages up to resN (N): no gradients, BN frozen. 0 freezes nothing.")

    define(cfg, "MODEL.RESNETS.DEPTH", 50, "ResNet depth: 18, 34, 50, 101 or 152.")
    define(cfg, "MODEL.RESNETS.OUT_FEATURES", ["res4"], "Stages whose outputs the backbone returns (res2..res5).")
    define(cfg, "MODEL.RESNETS.NUM_GROUPS", 1, "Groups of the 3x3 convs; > 1 gives ResNeXt.")
    define(cfg, "MODEL.RESNETS.NORM", "FrozenBN", "Normalisation of every conv: FrozenBN, BN, SyncBN, GN or ''.")
    define(cfg, "MODEL.RESNETS.WIDTH_PER_GROUP", 64, "Channels per group of res2's 3x3 conv (ResNeXt's d).")
    define(cfg, "MODEL.RESNETS.STRIDE_IN_1X1", True, "Put the stride of a bottleneck in its 1x1 conv (MSRA) rather than its 3x3 (torchvision).")
    define(cfg, "MODEL.RESNETS.RES5_DILATION", 1, "Dilation of res5 (1 or 2; 2 keeps res5 at stride 16).")
    define(cfg, "MODEL.RESNETS.RES2_OUT_CHANNELS", 256, "Output channels of res2 (64 for ResNet-18/34).")
    define(cfg, "MODEL.RESNETS.STEM_OUT_CHANNELS", 64, "Output channels of the stem.")
    define(cfg, "MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, False, False, False], "Per stage res2..res5, whether its bottlenecks use deformable 3x3 convs (DeformBottleneckBlock; not for ResNet-18/34).")
    define(cfg, "MODEL.RESNETS.DEFORM_MODULATED", False, "Modulated deformable convs (DCNv2) where DEFORM_ON_PER_STAGE is on.")
    define(cfg, "MODEL.RESNETS.DEFORM_NUM_GROUPS", 1, "Groups of channels with their own offsets in the deformable convs.")

    define(cfg, "MODEL.FPN.IN_FEATURES", [], "Bottom-up features the FPN reads, e.g. [res2, res3, res4, res5].")
    define(cfg, "MODEL.FPN.OUT_CHANNELS", 256, "Channels of every FPN output.")
    define(cfg, "MODEL.FPN.NORM", "", "Normalisation of the FPN's lateral and output convs.")
    define(cfg, "MODEL.FPN.FUSE_TYPE", "sum", "How a lateral is fused with the upsampled coarser level: sum or avg.")

    define(cfg, "MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator", "Name in ANCHOR_GENERATOR_REGISTRY.")
    define(cfg, "MODEL.ANCHOR_GENERATOR.SIZES", [[32, 64, 128, 256, 512]], "Anchor sizes (sqrt of area) in pixels, one list per feature level (or one list for all).")
    define(cfg, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]], "Anchor aspect ratios (h / w), one list per level (or one for all).")
    define(cfg, "MODEL.ANCHOR_GENERATOR.OFFSET", 0.0, "Anchor centres at (offset x stride) from each cell's top-left corner; 0.0 or 0.5.")
