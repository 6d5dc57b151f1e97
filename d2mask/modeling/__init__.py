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
    MViT,
    ResNet,
    ResNetBlockBase,
    SimpleFeaturePyramid,
    SwinTransformer,
    ViT,
    build_backbone,
    build_resnet_backbone,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
    get_vit_lr_decay_rate,
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
    "MViT",
    "Matcher",
    "RandomSampler",
    "ResNet",
    "ResNetBlockBase",
    "SimpleFeaturePyramid",
    "StandardRPNHead",
    "SwinTransformer",
    "ViT",
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
    "get_vit_lr_decay_rate",
    "make_stage",
    "subsample_labels",
]

# Second stage, whole models and their post-processing.
from .meta_arch import (
    META_ARCH_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    DenseDetector,
    GeneralizedRCNN,
    PanopticFPN,
    ProposalNetwork,
    RetinaNet,
    RetinaNetHead,
    SemanticSegmentor,
    build_model,
    build_sem_seg_head,
)
from .poolers import ROIPooler
from .postprocessing import detector_postprocess, sem_seg_postprocess
from .roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_KEYPOINT_HEAD_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    BaseKeypointRCNNHead,
    BaseMaskRCNNHead,
    CascadeROIHeads,
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    KRCNNConvDeconvUpsampleHead,
    MaskRCNNConvUpsampleHead,
    Res5ROIHeads,
    ROIHeads,
    StandardROIHeads,
    build_box_head,
    build_keypoint_head,
    build_mask_head,
    build_roi_heads,
)

__all__ += [
    "META_ARCH_REGISTRY",
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_KEYPOINT_HEAD_REGISTRY",
    "ROI_MASK_HEAD_REGISTRY",
    "SEM_SEG_HEADS_REGISTRY",
    "BaseKeypointRCNNHead",
    "BaseMaskRCNNHead",
    "CascadeROIHeads",
    "DatasetMapperTTA",
    "DenseDetector",
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "GeneralizedRCNN",
    "GeneralizedRCNNWithTTA",
    "KRCNNConvDeconvUpsampleHead",
    "MaskRCNNConvUpsampleHead",
    "PanopticFPN",
    "ProposalNetwork",
    "ROIHeads",
    "ROIPooler",
    "Res5ROIHeads",
    "RetinaNet",
    "RetinaNetHead",
    "SemanticSegmentor",
    "StandardROIHeads",
    "build_box_head",
    "build_keypoint_head",
    "build_mask_head",
    "build_model",
    "build_sem_seg_head",
    "build_roi_heads",
    "detector_postprocess",
    "sem_seg_postprocess",
]


def __getattr__(name: str):
    # Test-time augmentation transforms images with the data package, which a model alone does not
    # load; its names are looked up here on first use instead of imported with the package.
    if name in ("DatasetMapperTTA", "GeneralizedRCNNWithTTA"):
        from . import test_time_augmentation

        return getattr(test_time_augmentation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
