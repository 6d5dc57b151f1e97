"""The full state dict of Mask R-CNN R50-FPN and R50-C4, Cascade Mask R-CNN R50-FPN, RetinaNet R50-FPN,
keypoint R-CNN R50-FPN and Panoptic FPN R50 has exactly Detectron2's names and shapes, so Detectron2
checkpoints load with nothing missing or unexpected, whether built from the YAML configs or from the
Python (LazyConfig) model files."""
import os

import pytest

from d2mask.config import LazyConfig, get_cfg, instantiate
from d2mask.modeling import build_model
from tests.common import REPO, read_reference


@pytest.mark.parametrize(
    "config, reference",
    [
        ("mask_rcnn_R_50_FPN_1x.yaml", "detectron2_mask_rcnn_R_50_FPN_state_dict.txt"),
        ("mask_rcnn_R_50_C4_1x.yaml", "detectron2_mask_rcnn_R_50_C4_state_dict.txt"),
        ("../Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml", "detectron2_cascade_mask_rcnn_R_50_FPN_state_dict.txt"),
        ("../COCO-Detection/retinanet_R_50_FPN_1x.yaml", "detectron2_retinanet_R_50_FPN_state_dict.txt"),
        ("../COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml", "detectron2_panoptic_fpn_R_50_state_dict.txt"),
    ],
)
def test_state_dict_matches_detectron2(config, reference):
    expected = dict(read_reference(reference))
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "COCO-InstanceSegmentation", config))
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == cfg.MODEL.RETINANET.NUM_CLASSES == 80
    got = {name: tuple(t.shape) for name, t in build_model(cfg).state_dict().items()}

    assert sorted(set(expected) - set(got)) == []  # missing names
    assert sorted(set(got) - set(expected)) == []  # extra names
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    # The input statistics come from the config and are not saved, as in Detectron2.
    assert not any("pixel_" in name for name in got)


def test_dilated_c5_mask_rcnn_has_detectron2s_names():
    """Detectron2 publishes no list for its DC5 models; their names and shapes follow from two that it
    does: the C4 model's ResNet with res5 moved from the ROI heads into the backbone (2048 channels at
    stride 16, which the RPN and the FPN model's box and mask heads then read instead of 1024 and 256)."""
    c4 = read_reference("detectron2_mask_rcnn_R_50_C4_state_dict.txt", ("backbone.", "roi_heads.res5.", "proposal_"))
    fpn_heads = read_reference("detectron2_mask_rcnn_R_50_FPN_state_dict.txt", ("roi_heads.",))
    expected = {name.replace("roi_heads.res5.", "backbone.res5."): shape for name, shape in c4}
    for name, shape in expected.items():
        if name.startswith("proposal_generator."):
            expected[name] = tuple(2048 if s == 1024 else s for s in shape)
    expected.update(fpn_heads)
    expected["roi_heads.box_head.fc1.weight"] = (1024, 2048 * 7 * 7)
    expected["roi_heads.mask_head.mask_fcn1.weight"] = (256, 2048, 3, 3)

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "COCO-InstanceSegmentation", "mask_rcnn_R_50_DC5_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == expected
    conv = model.backbone.res5[0].conv2
    assert (conv.stride, conv.dilation, conv.padding) == ((1, 1), (2, 2), (2, 2))
    assert model.backbone.output_shape()["res5"].stride == 16


@pytest.mark.parametrize(
    "config, reference",
    [
        ("cascade_rcnn.py", "detectron2_cascade_mask_rcnn_R_50_FPN_state_dict.txt"),
        ("retinanet.py", "detectron2_retinanet_R_50_FPN_state_dict.txt"),
        ("panoptic_fpn.py", "detectron2_panoptic_fpn_R_50_state_dict.txt"),
    ],
)
def test_lazy_config_models_match_detectron2(config, reference):
    expected = dict(read_reference(reference))
    model = instantiate(LazyConfig.load(os.path.join(REPO, "configs", "common", "models", config), "model"))
    got = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert got == expected


def test_keypoint_rcnn_matches_detectron2():
    expected = dict(read_reference("detectron2_keypoint_rcnn_R_50_FPN_state_dict.txt"))
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "COCO-Keypoints", "keypoint_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1 and cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS == 17
    from_yaml = {name: tuple(t.shape) for name, t in build_model(cfg).state_dict().items()}
    assert from_yaml == expected

    lazy = LazyConfig.load(os.path.join(REPO, "configs", "common", "models", "keypoint_rcnn_fpn.py"), "model")
    assert {name: tuple(t.shape) for name, t in instantiate(lazy).state_dict().items()} == expected


def test_lazy_semantic_fpn_is_panoptic_fpn_without_its_detector():
    expected = dict(read_reference("detectron2_panoptic_fpn_R_50_state_dict.txt", ("backbone.", "sem_seg_head.")))
    model = instantiate(LazyConfig.load(os.path.join(REPO, "configs", "common", "models", "semantic_fpn.py"), "model"))
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == expected
    assert model.sem_seg_head.loss_weight == 1.0
