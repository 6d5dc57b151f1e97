"""Property test of the start-up validation: a config with random values for the keys users set
either starts (model, optimizer and schedule are built and one training step runs) or stops with one
ConfigError line, before anything is built. Nothing else may escape: a traceback from inside a
constructor or the first step means a value validate_config should have refused."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d2mask.config import ConfigError, get_cfg
from d2mask.engine import validate_config
from d2mask.modeling import build_model
from d2mask.solver import build_lr_scheduler, build_optimizer
from d2mask.structures import Boxes, Instances, PolygonMasks
from d2mask.utils.events import EventStorage

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values as typed on the command line: edge numbers, lists of several lengths and orders, names.
_NUMBERS = ["-1", "0", "1", "2", "3", "7", "0.5", "-0.5", "0.0", "1.5", "nan", "inf", "True"]
_LISTS = ["[]", "[0.5]", "[0.3, 0.7]", "[0.7, 0.3]", "[1.0, 2.0]", "[1.0, 2.0, 3.0]", "[0.0, 1.0, 1.0]",
          "[-1, 0, 1]", "[0, 1]", "[[16], [32]]", "[[0.5, 1.0]]", "(5, 3)", "(3, 5)", "(0,)", "[float('inf')]"]
_NAMES = ["cpu", "cuda", "cuda:9", "gpu", "BGR", "RGB", "L", "polygon", "bitmask", "x", "", "GN", "BN", "none",
          "range", "choice", "linear", "norm", "smooth_l1", "giou", "ROIAlign", "AdamW", "WarmupCosineLR"]
KEYS = [
    "MODEL.DEVICE", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "INPUT.FORMAT", "INPUT.MASK_FORMAT", "INPUT.MIN_SIZE_TRAIN",
    "INPUT.MIN_SIZE_TRAIN_SAMPLING", "INPUT.MAX_SIZE_TRAIN", "MODEL.RESNETS.DEPTH", "MODEL.RESNETS.NORM",
    "MODEL.RESNETS.RES5_DILATION", "MODEL.BACKBONE.FREEZE_AT", "MODEL.FPN.NORM", "MODEL.FPN.FUSE_TYPE",
    "MODEL.ANCHOR_GENERATOR.SIZES", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "MODEL.ANCHOR_GENERATOR.OFFSET",
    "MODEL.RPN.IOU_THRESHOLDS", "MODEL.RPN.IOU_LABELS", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "MODEL.RPN.POSITIVE_FRACTION",
    "MODEL.RPN.NMS_THRESH", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "MODEL.RPN.BBOX_REG_LOSS_TYPE",
    "MODEL.RPN.SMOOTH_L1_BETA", "MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.ROI_HEADS.IOU_THRESHOLDS",
    "MODEL.ROI_HEADS.IOU_LABELS", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "MODEL.ROI_HEADS.POSITIVE_FRACTION",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "MODEL.ROI_BOX_HEAD.POOLER_TYPE",
    "MODEL.ROI_BOX_HEAD.NUM_FC", "MODEL.ROI_BOX_HEAD.NUM_CONV", "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION",
    "MODEL.ROI_MASK_HEAD.NUM_CONV", "SOLVER.OPTIMIZER", "SOLVER.LR_SCHEDULER_NAME", "SOLVER.BASE_LR", "SOLVER.MOMENTUM",
    "SOLVER.WEIGHT_DECAY", "SOLVER.GAMMA", "SOLVER.STEPS", "SOLVER.WARMUP_FACTOR", "SOLVER.WARMUP_ITERS",
    "SOLVER.WARMUP_METHOD", "SOLVER.MAX_ITER", "SOLVER.CLIP_GRADIENTS.ENABLED", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "SOLVER.CHECKPOINT_PERIOD", "SOLVER.IMS_PER_BATCH", "DATALOADER.NUM_WORKERS",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "MODEL.RESNETS.STEM_OUT_CHANNELS", "MODEL.ROI_BOX_HEAD.FC_DIM",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "MODEL.ROI_MASK_HEAD.NORM", "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS",
    "MODEL.RPN.BBOX_REG_WEIGHTS", "MODEL.RPN.NMS_THRESH", "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
]
def _tiny_mask_rcnn():
    cfg = get_cfg()
    cfg.merge_from_file("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.WIDTH_PER_GROUP", "4",
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "16", "MODEL.ROI_MASK_HEAD.CONV_DIM", "8",
        "MODEL.ROI_HEADS.NUM_CLASSES", "3", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.BACKBONE.FREEZE_AT", "0",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "(5,)", "SOLVER.WARMUP_ITERS", "2",
    ])
    return cfg


BASE = _tiny_mask_rcnn()


_INTS = ["-1", "0", "1", "2", "3", "7", "32"]
_FLOATS = ["-0.5", "0.0", "0.5", "1.0", "1.5", "1e-3", "float('nan')", "float('inf')"]


def _value_for(key):
    """Mostly values of the key's type (so that they pass merging and reach the validation), some of any."""
    default = BASE
    for part in key.split("."):
        default = default[part]
    typed = {bool: ["True", "False"], int: _INTS, float: _FLOATS, str: _NAMES}.get(type(default), _LISTS)
    return st.one_of(st.sampled_from(typed), st.sampled_from(typed), st.sampled_from(_NUMBERS + _LISTS + _NAMES))


overrides = st.lists(st.sampled_from(KEYS).flatmap(lambda k: st.tuples(st.just(k), _value_for(k))), min_size=1,
                     max_size=3)


def _one_step(cfg):
    """Builds what the trainer builds from the model's keys and runs one training step on one image."""
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    channels = 1 if cfg.INPUT.FORMAT == "L" else 3
    instances = Instances((64, 64))
    instances.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]]))
    instances.gt_classes = torch.tensor([1])
    instances.gt_masks = PolygonMasks([[[8.0, 8.0, 40.0, 8.0, 40.0, 40.0]]])
    image = torch.randint(0, 255, (channels, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with EventStorage():
        losses = model([{"image": image, "instances": instances, "height": 64, "width": 64}])
        sum(losses.values()).backward()
    optimizer.step()
    scheduler.step()


@SETTINGS
@given(overrides)
def test_random_values_either_start_or_stop_with_one_config_error_line(items):
    cfg = BASE.clone()
    try:
        cfg.merge_from_list([text for item in items for text in item])
        validate_config(cfg)
        _one_step(cfg)
    except ConfigError as e:
        assert "\n" not in str(e), str(e)


_MASK_RCNN = "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml"
_RETINANET = "configs/Shapes/retinanet_R_18_FPN_shapes.yaml"


@pytest.mark.parametrize("config, key, value", [
    # Values that building the model crashed on (negative dimensions, division by zero) ...
    (_MASK_RCNN, "MODEL.ROI_HEADS.NUM_CLASSES", "-1"),
    (_MASK_RCNN, "MODEL.ROI_BOX_HEAD.FC_DIM", "-1"),
    (_MASK_RCNN, "MODEL.ROI_MASK_HEAD.CONV_DIM", "-1"),
    (_MASK_RCNN, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.0, 1.0]]"),
    (_RETINANET, "MODEL.RETINANET.PRIOR_PROB", "0.0"),
    (_RETINANET, "MODEL.RETINANET.NUM_CLASSES", "-1"),
    # ... or built a model from silently
    (_MASK_RCNN, "MODEL.RESNETS.WIDTH_PER_GROUP", "-1"),
    (_MASK_RCNN, "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "0"),
    (_MASK_RCNN, "MODEL.RPN.BBOX_REG_WEIGHTS", "(1.0, 1.0, 1.0, 0.0)"),
    (_MASK_RCNN, "MODEL.RPN.IOU_THRESHOLDS", "[0.3, 1.5]"),
    (_MASK_RCNN, "MODEL.BACKBONE.FREEZE_AT", "7"),
    (_RETINANET, "MODEL.RETINANET.FOCAL_LOSS_ALPHA", "1.5"),
])
def test_the_model_refuses_a_bad_value_in_one_line_naming_its_key(config, key, value):
    """Without validate_config (a user's script calling build_model): the constructors refuse it."""
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", key, value])
    with pytest.raises(ConfigError) as e:
        build_model(cfg)
    assert key in str(e.value) and "\n" not in str(e.value)
