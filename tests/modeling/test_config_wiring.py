"""Every config key that shapes a model reaches it: set to a value other than its default, the built
model differs, and a float setting (threshold, beta, weight) is found as such in the model.

A model is compared through its "signature": every module's class, attributes (also the public ones
of the plain objects it holds: matcher, sampler, box coding), parameters and buffers. A key that
stops reaching its module leaves the signature unchanged. Each MODEL.* key is in the table, or among
the few exempt ones with the reason; a new key fails `test_every_model_key_is_covered` until added.
"""
import ast
import functools
from typing import Any, Dict

import pytest
import torch
from torch import nn

from d2mask.data import MetadataCatalog
from d2mask.modeling import (
    ANCHOR_GENERATOR_REGISTRY,
    ANCHOR_MATCHER_REGISTRY,
    BACKBONE_REGISTRY,
    PROPOSAL_GENERATOR_REGISTRY,
    RPN,
    SAMPLER_REGISTRY,
    DefaultAnchorGenerator,
    Matcher,
    RandomSampler,
    build_model,
    build_resnet_backbone,
)
from d2mask.modeling.meta_arch.semantic_seg import SEM_SEG_HEADS_REGISTRY, SemSegFPNHead
from d2mask.modeling.proposal_generator.rpn import RPN_HEAD_REGISTRY, StandardRPNHead
from d2mask.modeling.roi_heads.box_head import ROI_BOX_HEAD_REGISTRY, FastRCNNConvFCHead
from d2mask.modeling.roi_heads.keypoint_head import ROI_KEYPOINT_HEAD_REGISTRY, KRCNNConvDeconvUpsampleHead
from d2mask.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, MaskRCNNConvUpsampleHead
from tests.common import tiny_rcnn_cfg

# The federated loss counts the classes of its training set: 3 of them, in 1, 4 and 9 images.
MetadataCatalog.get("wiring_test_fed_loss").set(
    class_image_count=[{"id": 1, "image_count": 1}, {"id": 2, "image_count": 4}, {"id": 3, "image_count": 9}]
)
FED_LOSS_CONTEXT = ["DATASETS.TRAIN", ("wiring_test_fed_loss",), "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", True,
                    "MODEL.ROI_BOX_HEAD.USE_FED_LOSS", True]
FPN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
C4 = "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml"
CASCADE = "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml"
RETINANET = "COCO-Detection/retinanet_R_50_FPN_1x.yaml"
KEYPOINT = "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml"
PANOPTIC = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
BASE_NAMES = {FPN: "FPN", C4: "C4", CASCADE: "Cascade", RETINANET: "RetinaNet", KEYPOINT: "Keypoint", PANOPTIC: "Panoptic"}


# Registered subclasses, so that each NAME key has a second choice to select.
@BACKBONE_REGISTRY.register()
def wiring_test_backbone(cfg, input_shape):
    backbone = build_resnet_backbone(cfg, input_shape)
    backbone.built_by = "wiring_test_backbone"
    return backbone


@ANCHOR_MATCHER_REGISTRY.register()
class WiringTestMatcher(Matcher):
    pass


@SAMPLER_REGISTRY.register()
class WiringTestSampler(RandomSampler):
    pass


@ANCHOR_GENERATOR_REGISTRY.register()
class WiringTestAnchorGenerator(DefaultAnchorGenerator):
    pass


@RPN_HEAD_REGISTRY.register()
class WiringTestRPNHead(StandardRPNHead):
    pass


@PROPOSAL_GENERATOR_REGISTRY.register()
class WiringTestRPN(RPN):
    pass


@ROI_BOX_HEAD_REGISTRY.register()
class WiringTestBoxHead(FastRCNNConvFCHead):
    pass


@ROI_MASK_HEAD_REGISTRY.register()
class WiringTestMaskHead(MaskRCNNConvUpsampleHead):
    pass


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class WiringTestKeypointHead(KRCNNConvDeconvUpsampleHead):
    pass


@SEM_SEG_HEADS_REGISTRY.register()
class WiringTestSemSegHead(SemSegFPNHead):
    pass


# (key, non-default value, base config, overrides applied to both builds so that the key matters)
WIRING = [
    ("MODEL.META_ARCHITECTURE", "ProposalNetwork", FPN, []),
    ("MODEL.MASK_ON", False, FPN, []),
    ("MODEL.KEYPOINT_ON", True, FPN, []),
    ("MODEL.PIXEL_MEAN", [100.0, 110.0, 120.0], FPN, []),
    ("MODEL.PIXEL_STD", [57.0, 58.0, 59.0], FPN, []),
    ("MODEL.BACKBONE.NAME", "wiring_test_backbone", C4, []),
    ("MODEL.BACKBONE.FREEZE_AT", 3, FPN, []),
    ("MODEL.RESNETS.DEPTH", 101, FPN, []),
    ("MODEL.RESNETS.OUT_FEATURES", ["res3", "res4"], C4, []),
    ("MODEL.RESNETS.NUM_GROUPS", 2, FPN, []),
    ("MODEL.RESNETS.NORM", "BN", FPN, []),
    ("MODEL.RESNETS.WIDTH_PER_GROUP", 8, FPN, []),
    ("MODEL.RESNETS.STRIDE_IN_1X1", False, FPN, []),
    # a dilated res5 has res4's stride, so the pyramid stops at res4 and its top block (RetinaNet's
    # P6P7, which reads res5) adds the coarser levels
    ("MODEL.RESNETS.RES5_DILATION", 2, FPN, ["MODEL.BACKBONE.NAME", "build_retinanet_resnet_fpn_backbone",
                                              "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4"],
                                              "MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5"],
                                              "MODEL.ANCHOR_GENERATOR.SIZES", [[32]]]),
    ("MODEL.RESNETS.RES2_OUT_CHANNELS", 32, FPN, []),
    ("MODEL.RESNETS.STEM_OUT_CHANNELS", 12, FPN, []),
    ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, False, True], FPN, []),
    ("MODEL.RESNETS.DEFORM_MODULATED", True, FPN, ["MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, False, True, False]]),
    ("MODEL.RESNETS.DEFORM_NUM_GROUPS", 2, FPN, ["MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, False, True, False]]),
    # Res5ROIHeads builds its res5 stage from the RESNETS keys too
    ("MODEL.RESNETS.NUM_GROUPS", 2, C4, []),
    ("MODEL.RESNETS.WIDTH_PER_GROUP", 8, C4, []),
    ("MODEL.RESNETS.STRIDE_IN_1X1", False, C4, []),
    ("MODEL.RESNETS.NORM", "BN", C4, []),
    ("MODEL.FPN.IN_FEATURES", ["res3", "res4", "res5"], FPN,
     ["MODEL.RPN.IN_FEATURES", ["p3", "p4", "p5", "p6"], "MODEL.ROI_HEADS.IN_FEATURES", ["p3", "p4", "p5"],
      "MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256]]]),
    ("MODEL.FPN.OUT_CHANNELS", 24, FPN, []),
    ("MODEL.FPN.NORM", "BN", FPN, []),
    ("MODEL.FPN.FUSE_TYPE", "avg", FPN, []),
    ("MODEL.ANCHOR_GENERATOR.NAME", "WiringTestAnchorGenerator", FPN, []),
    ("MODEL.ANCHOR_GENERATOR.SIZES", [[24], [48], [96], [192], [384]], FPN, []),
    ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.25, 1.0, 4.0]], FPN, []),
    ("MODEL.ANCHOR_GENERATOR.OFFSET", 0.5, FPN, []),
    ("MODEL.PROPOSAL_GENERATOR.NAME", "WiringTestRPN", FPN, []),
    ("MODEL.PROPOSAL_GENERATOR.MIN_SIZE", 2.5, FPN, []),
    ("MODEL.RPN.HEAD_NAME", "WiringTestRPNHead", FPN, []),
    ("MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5"], FPN, ["MODEL.ANCHOR_GENERATOR.SIZES", [[32]]]),
    ("MODEL.RPN.BOUNDARY_THRESH", 3, FPN, []),
    ("MODEL.RPN.IOU_THRESHOLDS", [0.4, 0.6], FPN, []),
    ("MODEL.RPN.IOU_LABELS", [0, 0, 1], FPN, []),
    ("MODEL.RPN.MATCHER.NAME", "WiringTestMatcher", FPN, []),
    ("MODEL.RPN.MATCHER.ALLOW_LOW_QUALITY_MATCHES", False, FPN, []),
    ("MODEL.RPN.SAMPLER.NAME", "WiringTestSampler", FPN, []),
    ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", 64, FPN, []),
    ("MODEL.RPN.POSITIVE_FRACTION", 0.25, FPN, []),
    ("MODEL.RPN.BBOX_REG_LOSS_TYPE", "giou", FPN, []),
    ("MODEL.RPN.BBOX_REG_LOSS_WEIGHT", 3.0, FPN, []),
    ("MODEL.RPN.BBOX_REG_WEIGHTS", (2.0, 2.0, 1.0, 1.0), FPN, []),
    ("MODEL.RPN.SMOOTH_L1_BETA", 0.25, FPN, []),
    ("MODEL.RPN.LOSS_WEIGHT", 2.0, FPN, []),
    ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 123, FPN, []),
    ("MODEL.RPN.PRE_NMS_TOPK_TEST", 124, FPN, []),
    ("MODEL.RPN.POST_NMS_TOPK_TRAIN", 125, FPN, []),
    ("MODEL.RPN.POST_NMS_TOPK_TEST", 126, FPN, []),
    ("MODEL.RPN.NMS_THRESH", 0.6, FPN, []),
    ("MODEL.RPN.CONV_DIMS", [8, 8], FPN, []),
    ("MODEL.ROI_HEADS.NAME", "Res5ROIHeads", C4, ["MODEL.ROI_HEADS.NAME", "StandardROIHeads",
                                                   "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
                                                   "MODEL.ROI_BOX_HEAD.NUM_FC", 1]),
    ("MODEL.ROI_HEADS.NUM_CLASSES", 5, FPN, []),
    ("MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3"], FPN, []),
    ("MODEL.ROI_HEADS.IOU_THRESHOLDS", [0.6], FPN, []),
    ("MODEL.ROI_HEADS.IOU_LABELS", [-1, 1], FPN, []),
    ("MODEL.ROI_HEADS.MATCHER.NAME", "WiringTestMatcher", FPN, []),
    ("MODEL.ROI_HEADS.MATCHER.ALLOW_LOW_QUALITY_MATCHES", True, FPN, []),
    ("MODEL.ROI_HEADS.SAMPLER.NAME", "WiringTestSampler", FPN, []),
    ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, FPN, []),
    ("MODEL.ROI_HEADS.POSITIVE_FRACTION", 0.125, FPN, []),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.375, FPN, []),
    ("MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.625, FPN, []),
    ("MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", False, FPN, []),
    ("MODEL.ROI_BOX_HEAD.NAME", "WiringTestBoxHead", FPN, []),
    ("MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", "diou", FPN, []),
    ("MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT", 4.0, FPN, []),
    ("MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", (8.0, 8.0, 4.0, 4.0), FPN, []),
    ("MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", 0.75, FPN, []),
    ("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 5, FPN, []),
    ("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7, C4, []),
    ("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2, FPN, []),
    ("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2, C4, []),
    ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlign", FPN, []),
    ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlign", C4, []),
    ("MODEL.ROI_BOX_HEAD.NUM_FC", 1, FPN, []),
    ("MODEL.ROI_BOX_HEAD.FC_DIM", 24, FPN, []),
    ("MODEL.ROI_BOX_HEAD.NUM_CONV", 1, FPN, []),
    ("MODEL.ROI_BOX_HEAD.CONV_DIM", 12, FPN, ["MODEL.ROI_BOX_HEAD.NUM_CONV", 1]),
    ("MODEL.ROI_BOX_HEAD.NORM", "BN", FPN, ["MODEL.ROI_BOX_HEAD.NUM_CONV", 1]),
    ("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True, FPN, []),
    ("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", True, FPN, []),
    ("MODEL.ROI_MASK_HEAD.NAME", "WiringTestMaskHead", FPN, []),
    ("MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 7, FPN, []),
    ("MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", 2, FPN, []),
    ("MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlign", FPN, []),
    ("MODEL.ROI_MASK_HEAD.NUM_CONV", 2, FPN, []),
    ("MODEL.ROI_MASK_HEAD.CONV_DIM", 12, FPN, []),
    ("MODEL.ROI_MASK_HEAD.NORM", "BN", FPN, []),
    ("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", True, FPN, []),
    ("MODEL.ROI_KEYPOINT_HEAD.NAME", "WiringTestKeypointHead", KEYPOINT, []),
    ("MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION", 7, KEYPOINT, []),
    ("MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO", 2, KEYPOINT, []),
    ("MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE", "ROIAlign", KEYPOINT, []),
    ("MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [8], KEYPOINT, []),
    ("MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 5, KEYPOINT, []),
    ("MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS", False, KEYPOINT, []),
    ("MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT", 4.0, KEYPOINT, []),
    ("MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS", [[10.0, 10.0, 5.0, 5.0], [15.0, 15.0, 8.0, 8.0], [30.0, 30.0, 15.0, 15.0]],
     CASCADE, []),
    ("MODEL.ROI_BOX_CASCADE_HEAD.IOUS", (0.5, 0.65, 0.7), CASCADE, []),
    ("MODEL.RETINANET.NUM_CLASSES", 5, RETINANET, []),
    ("MODEL.RETINANET.IN_FEATURES", ["p3", "p4", "p5", "p6"], RETINANET, ["MODEL.ANCHOR_GENERATOR.SIZES", [[32]]]),
    ("MODEL.RETINANET.NUM_CONVS", 2, RETINANET, []),
    ("MODEL.RETINANET.IOU_THRESHOLDS", [0.3, 0.6], RETINANET, []),
    ("MODEL.RETINANET.IOU_LABELS", [0, 0, 1], RETINANET, []),
    ("MODEL.RETINANET.MATCHER.NAME", "WiringTestMatcher", RETINANET, []),
    ("MODEL.RETINANET.MATCHER.ALLOW_LOW_QUALITY_MATCHES", False, RETINANET, []),
    ("MODEL.RETINANET.PRIOR_PROB", 0.125, RETINANET, []),
    ("MODEL.RETINANET.SCORE_THRESH_TEST", 0.375, RETINANET, []),
    ("MODEL.RETINANET.TOPK_CANDIDATES_TEST", 77, RETINANET, []),
    ("MODEL.RETINANET.NMS_THRESH_TEST", 0.625, RETINANET, []),
    ("MODEL.RETINANET.BBOX_REG_WEIGHTS", (2.0, 2.0, 1.0, 1.0), RETINANET, []),
    ("MODEL.RETINANET.FOCAL_LOSS_GAMMA", 1.5, RETINANET, []),
    ("MODEL.RETINANET.FOCAL_LOSS_ALPHA", 0.375, RETINANET, []),
    ("MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", 0.25, RETINANET, []),
    ("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "giou", RETINANET, []),
    ("MODEL.RETINANET.NORM", "GN", RETINANET, ["MODEL.FPN.OUT_CHANNELS", 32]),
    ("MODEL.RETINANET.NORM", "BN", RETINANET, []),
    ("MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", True, FPN, []),
    ("MODEL.ROI_BOX_HEAD.USE_FED_LOSS", True, FPN, FED_LOSS_CONTEXT[:4]),
    ("MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER", 0.25, FPN, FED_LOSS_CONTEXT),
    ("MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES", 7, FPN, FED_LOSS_CONTEXT),
    ("MODEL.SEM_SEG_HEAD.NAME", "WiringTestSemSegHead", PANOPTIC, []),
    ("MODEL.SEM_SEG_HEAD.IN_FEATURES", ["p3", "p4"], PANOPTIC, []),
    ("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 254, PANOPTIC, []),
    ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", 7, PANOPTIC, []),
    ("MODEL.SEM_SEG_HEAD.CONVS_DIM", 64, PANOPTIC, []),
    ("MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 8, PANOPTIC, ["MODEL.SEM_SEG_HEAD.IN_FEATURES", ["p3", "p4", "p5"]]),
    ("MODEL.SEM_SEG_HEAD.NORM", "", PANOPTIC, []),
    ("MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", 0.75, PANOPTIC, []),
    ("MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT", 1.5, PANOPTIC, []),
    ("MODEL.PANOPTIC_FPN.COMBINE.ENABLED", False, PANOPTIC, []),
    ("MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH", 0.625, PANOPTIC, []),
    ("MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", 1000, PANOPTIC, []),
    ("MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", 0.375, PANOPTIC, []),
    ("TEST.DETECTIONS_PER_IMAGE", 17, FPN, []),
    ("TEST.DETECTIONS_PER_IMAGE", 17, RETINANET, []),
    ("INPUT.FORMAT", "RGB", FPN, []),
    ("VIS_PERIOD", 5, FPN, []),
]

# Float settings that only initialise weights: the model differs, but does not hold the value.
INIT_ONLY = {"MODEL.RETINANET.PRIOR_PROB", "MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER"}

EXEMPT = {
    "MODEL.DEVICE": "the tests run on the CPU only; tests/engine covers the device a trainer puts the model on",
    "MODEL.WEIGHTS": "read by the checkpointer, not by the model's constructors (tests/checkpoint)",
    "MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE": "read by the training loader (tests/data/test_build.py)",
}


# What every nn.Module holds for torch's own bookkeeping, left out of signatures.
_TORCH_INTERNALS = set(vars(nn.Module())) | {"_modules", "_parameters", "_buffers"}


def _describe(path: str, value: Any, out: Dict[str, Any], depth: int = 0) -> None:
    if isinstance(value, (bool, int, float, str, type(None))):
        out[path] = value
    elif isinstance(value, torch.Tensor):
        flat = value.detach().double().flatten()
        # a sum weighted by position: anchors centred on 0 sum to 0 whatever their sizes
        out[path] = (tuple(value.shape), float((flat * torch.arange(1, len(flat) + 1)).sum()))
    elif isinstance(value, (list, tuple)):
        out[path + ".len"] = len(value)
        for i, v in enumerate(value):
            _describe(f"{path}[{i}]", v, out, depth)
    elif isinstance(value, dict):
        for k, v in value.items():
            _describe(f"{path}[{k!r}]", v, out, depth)
    elif isinstance(value, nn.Module):
        pass  # described as a module of its own
    elif depth < 3 and hasattr(value, "__dict__"):
        out[path + ":class"] = type(value).__name__
        for k, v in vars(value).items():
            if not k.startswith("_"):
                _describe(f"{path}.{k}", v, out, depth + 1)
    else:
        out[path + ":class"] = type(value).__name__


def signature(model: nn.Module) -> Dict[str, Any]:
    """{path: value} of every module's class, attributes, parameters and buffers (shapes and a
    checksum of the values: models are built under one seed)."""
    out: Dict[str, Any] = {}
    for name, module in model.named_modules():
        out[f"{name}:class"] = type(module).__name__
        for key, value in vars(module).items():
            if key not in _TORCH_INTERNALS:
                _describe(f"{name}.{key}", value, out)
        for key, p in module.named_parameters(recurse=False):
            _describe(f"{name}.{key}", p, out)
            out[f"{name}.{key}.requires_grad"] = p.requires_grad
        for key, b in module.named_buffers(recurse=False):
            _describe(f"{name}.{key}", b, out)
    return out


@functools.lru_cache(maxsize=None)
def _build(base: str, overrides: str) -> Dict[str, Any]:
    """The signature of the tiny `base` model with `overrides`, a repr of [key, value, ...]."""
    cfg = tiny_rcnn_cfg(base)
    overrides = ast.literal_eval(overrides)
    for key, value in zip(overrides[::2], overrides[1::2]):
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    torch.manual_seed(0)
    return signature(build_model(cfg))


@pytest.mark.parametrize("key, value, base, context", WIRING, ids=[f"{k}-{BASE_NAMES[b]}" for k, _, b, _ in WIRING])
def test_key_reaches_the_model(key, value, base, context):
    default, changed = _build(base, repr(context)), _build(base, repr(context + [key, value]))
    diff = {p: changed.get(p, "<absent>") for p in default.keys() | changed.keys() if default.get(p, "<absent>") != changed.get(p, "<absent>")}
    assert diff, f"{key}={value!r} built the same model as its default"
    if isinstance(value, float) and key not in INIT_ONLY:
        assert any(isinstance(v, float) and v == pytest.approx(value) for v in diff.values()), \
            f"{key}={value!r}: the value is not in the model; changed: {sorted(diff)[:10]}"


def test_every_model_key_is_covered():
    def leaves(node, prefix):
        for k, v in node.items():
            if hasattr(v, "items"):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    keys = set(leaves(tiny_rcnn_cfg().MODEL, "MODEL."))
    covered = {k for k, _, _, _ in WIRING} | set(EXEMPT)
    assert sorted(keys - covered) == []
