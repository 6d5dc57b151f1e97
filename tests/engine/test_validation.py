"""Start-up validation of the YAML config: every invalid value in one line, before anything is built."""
import pytest
import torch

from d2mask.config import ConfigError, LazyConfig, get_cfg, load_config
from d2mask.engine.validation import check_device, validate_config, validate_lazy_config


# The shipped config whose model reads a key, for keys the default model (a Faster R-CNN) does not read.
_CONFIG_READING = {
    "MODEL.ROI_MASK_HEAD.": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "MODEL.RETINANET.": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "MODEL.ROI_BOX_CASCADE_HEAD.": "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml",
    "MODEL.SEM_SEG_HEAD.": "Shapes/semantic_R_18_FPN_shapes.yaml",
}


def _cfg(*overrides):
    cfg = get_cfg()
    configs = [config for prefix, config in _CONFIG_READING.items() if any(o.startswith(prefix) for o in overrides)]
    for config in configs:
        cfg.merge_from_file(f"configs/{config}")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *overrides])
    return cfg


def test_defaults_and_shipped_configs_are_valid():
    validate_config(_cfg())
    cfg = _cfg()
    cfg.merge_from_file("configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml")
    cfg.MODEL.DEVICE = "cpu"
    validate_config(cfg)
    for config in ("Shapes/cascade_mask_rcnn_R_18_FPN_shapes.yaml", "Shapes/retinanet_R_18_FPN_shapes.yaml",
                   "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml", "COCO-Detection/retinanet_R_50_FPN_1x.yaml"):
        cfg = _cfg()
        cfg.merge_from_file(f"configs/{config}")
        cfg.MODEL.DEVICE = "cpu"
        validate_config(cfg)


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("SOLVER.CHECKPOINT_PERIOD", "0", "an int > 0"),
        ("SOLVER.BASE_LR", "-0.01", "a number >= 0"),
        ("DATALOADER.NUM_WORKERS", "-1", "an int >= 0"),
        ("SOLVER.STEPS", "(500, 300)", "increasing iterations > 0"),
        ("MODEL.PIXEL_MEAN", "[1.0, 2.0]", "one value per channel: 3 for INPUT.FORMAT BGR"),
        ("MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]", "numbers > 0"),
        ("MODEL.RPN.IOU_THRESHOLDS", "[0.7, 0.3]", "increasing IoUs in [0, 1]"),
        ("MODEL.RPN.IOU_LABELS", "[0, 1]", "one label more than MODEL.RPN.IOU_THRESHOLDS"),
        ("MODEL.RESNETS.DEPTH", "42", "18, 34, 50, 101 or 152"),
        ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[True]", "4 booleans, res2..res5"),
        ("MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIPool", "one of ['ROIAlign', 'ROIAlignV2']"),
        ("MODEL.RETINANET.IOU_LABELS", "[0, 1]", "one label more than MODEL.RETINANET.IOU_THRESHOLDS"),
        ("MODEL.RETINANET.PRIOR_PROB", "0.0", "in (0, 1)"),
        ("MODEL.RETINANET.NORM", "BatchNorm", "one of ['', 'BN', 'SyncBN'"),
        ("MODEL.ROI_BOX_CASCADE_HEAD.IOUS", "(0.5, 1.5)", "IoUs in [0, 1]"),
        ("MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS", "[[10, 10, 5, 5]]", "as many as MODEL.ROI_BOX_CASCADE_HEAD.IOUS"),
        ("MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS", "[[10, 10, 5], [1, 1, 1, 1], [1, 1, 1, 1]]", "4 weights > 0"),
        # parts built in several places (matchers, samplers, box codings, poolers, norms) name the full key
        ("MODEL.ROI_HEADS.IOU_LABELS", "[0, 2]", "must be -1, 0 or 1"),
        ("MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.5", "must be in [0, 1]"),
        ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", "0", "must be an int > 0"),
        ("MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", "(10.0, 10.0, 5.0)", "must be 4 weights > 0"),
        ("MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", "0", "must be an int > 0"),
        ("MODEL.RESNETS.NORM", "XN", "must be one of ['', 'BN'"),
        ("MODEL.SEM_SEG_HEAD.NORM", "XN", "must be one of ['', 'BN'"),
        ("INPUT.MASK_FORMAT", "rle", "'polygon' or 'bitmask'"),
        ("INPUT.MAX_IMAGE_PIXELS", "0", "an int > 0"),
        ("MODEL.DEVICE", "gpu0", "a device such as 'cpu', 'cuda' or 'cuda:1'"),
    ],
)
def test_each_invalid_value_names_key_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as e:
        validate_config(_cfg(key, value))
    message = str(e.value)
    assert "\n" not in message
    assert key in message and allowed in message


def test_a_config_equal_to_the_last_that_passed_is_not_checked_again(monkeypatch):
    from d2mask.engine import validation

    builds = []
    build_on_meta = validation._model_problems
    monkeypatch.setattr(validation, "_model_problems", lambda cfg: builds.append(1) or build_on_meta(cfg))
    monkeypatch.setattr(validation, "_last_passed", "")
    validate_config(_cfg())
    validate_config(_cfg())  # another object, with the same values
    assert len(builds) == 1
    with pytest.raises(ConfigError, match="MODEL.ROI_HEADS.POSITIVE_FRACTION must be in"):
        validate_config(_cfg("MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.5"))
    # == holds 5000.0 equal to 5000; the period must be an int all the same
    cfg = _cfg()
    cfg.SOLVER.CHECKPOINT_PERIOD = float(cfg.SOLVER.CHECKPOINT_PERIOD)
    with pytest.raises(ConfigError, match="SOLVER.CHECKPOINT_PERIOD = 5000.0"):
        validate_config(cfg)
    assert len(builds) == 3


def test_a_mask_head_without_pooler_is_valid():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "''"])
    validate_config(cfg)


def test_without_pooler_the_mask_head_must_pool_for_itself():
    with pytest.raises(ConfigError, match="MaskRCNNConvUpsampleHead takes pooled features and pools none itself"):
        validate_config(_cfg("MODEL.ROI_MASK_HEAD.POOLER_TYPE", "''"))


def test_every_violation_is_reported_at_once():
    cfg = _cfg("SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.BASE_LR", "-1", "DATALOADER.NUM_WORKERS", "-1")
    with pytest.raises(ConfigError, match="Invalid config 3 values") as e:
        validate_config(cfg)
    for key in ("SOLVER.CHECKPOINT_PERIOD = 0", "SOLVER.BASE_LR = -1.0", "DATALOADER.NUM_WORKERS = -1"):
        assert key in str(e.value)


def test_a_grayscale_model_needs_one_mean_and_std():
    validate_config(_cfg("INPUT.FORMAT", "L", "MODEL.PIXEL_MEAN", "[128.0]", "MODEL.PIXEL_STD", "[1.0]"))
    with pytest.raises(ConfigError, match=r"MODEL.PIXEL_MEAN = \[103"):
        validate_config(_cfg("INPUT.FORMAT", "L", "MODEL.PIXEL_STD", "[1.0]"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_missing_gpu_is_a_config_error():
    assert check_device("cpu") == []
    assert "no CUDA device" in check_device("cuda")[0]
    assert "no CUDA device" in check_device("cuda:3")[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_gpu_index_beyond_the_machine_is_a_config_error():
    assert check_device("cuda:0") == []
    assert "indices 0 to" in check_device(f"cuda:{torch.cuda.device_count()}")[0]


def test_a_python_config_has_its_run_settings_checked_alike():
    cfg = LazyConfig.load("configs/Shapes/mask_rcnn_R_18_FPN_shapes.py")
    cfg.train.device = "cpu"
    validate_lazy_config(cfg)
    cfg.train.checkpointer.period = 0
    cfg.train.checkpoint_signals = ["SIGTERM", "SIGKILL"]
    cfg.dataloader.train.total_batch_size = -2
    del cfg.train["max_iter"]
    with pytest.raises(ConfigError) as e:
        validate_lazy_config(cfg)
    assert str(e.value) == (
        "Invalid config 4 values: train.max_iter is missing (an int >= 0; see configs/common/train.py); "
        "train.checkpointer.period = 0 (an int > 0); train.checkpoint_signals = ['SIGTERM', 'SIGKILL'] "
        "(signal names such as 'SIGTERM' or 'SIGUSR1'); dataloader.train.total_batch_size = -2 (an int > 0)"
    )


def test_project_configs_are_checked_by_their_modules_constructors():
    """validate_config builds the model on the meta device, so a project's modules check their
    arguments too; PortExample's keys exist once its config function ran, as in its train_net.py."""
    from d2mask.projects.port_example import add_port_example_config

    cfg = get_cfg()
    add_port_example_config(cfg)
    cfg.merge_from_file("projects/PortExample/configs/mask_rcnn_SE_R_18_FPN_shapes.yaml")
    cfg.MODEL.DEVICE = "cpu"
    validate_config(cfg)
    for config in ("projects/ConvNeXt/configs/mask_rcnn_ConvNeXt_FPN_shapes.yaml",
                   "projects/DenseText/configs/faster_rcnn_R_18_FPN_dense_atss.yaml"):
        validate_config(load_config(config, ["MODEL.DEVICE", "cpu"]))
    cfg = load_config("projects/ConvNeXt/configs/mask_rcnn_ConvNeXt_FPN_shapes.yaml", ["MODEL.DEVICE", "cpu"])
    cfg.MODEL.FPN.NORM = "XN"
    with pytest.raises(ConfigError, match=r"^Invalid config value: MODEL.FPN.NORM must be one of \['', 'BN'"):
        validate_config(cfg)
