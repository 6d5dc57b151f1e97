"""Models: backbones, anchors, matchers, samplers, box coding and the region proposal network.

Importing this package registers every built-in module in its registry.
"""
from .anchor_generator import ANCHOR_GENERATOR_REGISTRY, DefaultAnchorGenerator, build_anchor_generator
from .backbone import (
    BACKBONE_REGISTRY,
    FPN,
    Backbone,
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    CNNBlockBase,
    LastLevelMaxPool,
    LastLevelP6P7,
    ResNet,
    ResNetBlockBase,
    build_backbone,
    build_resnet_backbone,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
    make_stage,
)
from .box_regression import Box2BoxTransform, box_regression_loss
from .matcher import ANCHOR_MATCHER_REGISTRY, Matcher, build_anchor_matcher
from .proposal_generator import (
    PROPOSAL_GENERATOR_REGISTRY,
    RPN,
    RPN_HEAD_REGISTRY,
    StandardRPNHead,
    build_proposal_generator,
    build_rpn_head,
)
from .sampling import SAMPLER_REGISTRY, RandomSampler, build_sampler, subsample_labels

__all__ = [
    "ANCHOR_GENERATOR_REGISTRY",
    "ANCHOR_MATCHER_REGISTRY",
    "BACKBONE_REGISTRY",
    "PROPOSAL_GENERATOR_REGISTRY",
    "RPN_HEAD_REGISTRY",
    "SAMPLER_REGISTRY",
    "FPN",
    "RPN",
    "Backbone",
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "Box2BoxTransform",
    "CNNBlockBase",
    "DefaultAnchorGenerator",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "Matcher",
    "RandomSampler",
    "ResNet",
    "ResNetBlockBase",
    "StandardRPNHead",
    "box_regression_loss",
    "build_anchor_generator",
    "build_anchor_matcher",
    "build_backbone",
    "build_proposal_generator",
    "build_resnet_backbone",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
    "build_rpn_head",
    "build_sampler",
    "make_stage",
    "subsample_labels",
]

# Second stage, whole models and their post-processing.
from .meta_arch import (
    META_ARCH_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    DenseDetector,
    GeneralizedRCNN,
    ProposalNetwork,
    RetinaNet,
    RetinaNetHead,
    build_model,
    build_sem_seg_head,
)
from .poolers import ROIPooler
from .postprocessing import detector_postprocess
from .roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    BaseMaskRCNNHead,
    CascadeROIHeads,
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    MaskRCNNConvUpsampleHead,
    Res5ROIHeads,
    ROIHeads,
    StandardROIHeads,
    build_box_head,
    build_mask_head,
    build_roi_heads,
)

__all__ += [
    "META_ARCH_REGISTRY",
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_MASK_HEAD_REGISTRY",
    "SEM_SEG_HEADS_REGISTRY",
    "BaseMaskRCNNHead",
    "CascadeROIHeads",
    "DenseDetector",
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "GeneralizedRCNN",
    "MaskRCNNConvUpsampleHead",
    "ProposalNetwork",
    "ROIHeads",
    "ROIPooler",
    "Res5ROIHeads",
    "RetinaNet",
    "RetinaNetHead",
    "StandardROIHeads",
    "build_box_head",
    "build_mask_head",
    "build_model",
    "build_sem_seg_head",
    "build_roi_heads",
    "detector_postprocess",
]
