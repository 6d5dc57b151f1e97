"""The ConvNeXt backbone: shapes and strides, its layers on hand-made inputs, and a training step of
the Mask R-CNN its project config describes."""
import math
import os

import pytest
import torch

from d2mask.config import ConfigError, get_cfg
from d2mask.data.datasets import register_shapes
from d2mask.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from d2mask.layers import ShapeSpec
from d2mask.modeling import BACKBONE_REGISTRY, FPN, build_backbone, build_model
from projects.ConvNeXt.convnext import ConvNeXt, ConvNeXtBlock
from tests.common import REPO

CONFIG = os.path.join(REPO, "projects/ConvNeXt/configs/mask_rcnn_ConvNeXt_FPN_shapes.yaml")


def test_stage_shapes_and_strides():
    net = ConvNeXt(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32], out_features=["res3", "res5"])
    out = net(torch.zeros(2, 3, 64, 96))
    assert list(out) == ["res3", "res5"]
    assert out["res3"].shape == (2, 16, 8, 12) and out["res5"].shape == (2, 32, 2, 3)
    assert {k: (s.channels, s.stride) for k, s in net.output_shape().items()} == {"res3": (16, 8), "res5": (32, 32)}
    # stages after the last requested one are not run
    assert list(ConvNeXt(depths=[1] * 4, dims=[8] * 4, out_features=["res2"])(torch.zeros(1, 3, 32, 32))) == ["res2"]


def test_block_with_zero_layer_scale_is_the_identity():
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(ConvNeXtBlock(8, layer_scale_init=0.0)(x), x)
    assert not torch.allclose(ConvNeXtBlock(8, layer_scale_init=1.0)(x), x)


def test_invalid_settings_are_named():
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        ConvNeXt(depths=[1] * 4, dims=[8] * 4, out_features=["p2"])
    with pytest.raises(ValueError, match="4 depths"):
        ConvNeXt(depths=[1] * 3, dims=[8] * 4, out_features=["res2"])
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_convnext_fpn_backbone"])
    with pytest.raises(ConfigError, match="projects.ConvNeXt.convnext"):
        build_backbone(cfg)


def _project_cfg(overrides=()):
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(list(overrides))
    return cfg


def test_config_selects_the_backbone_under_fpn():
    cfg = _project_cfg()
    assert BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME).__module__ == "projects.ConvNeXt.convnext"
    backbone = build_backbone(cfg)
    assert isinstance(backbone, FPN) and isinstance(backbone.bottom_up, ConvNeXt)
    assert [len(stage) for stage in backbone.bottom_up.stages] == [2, 2, 2, 2]
    shapes = backbone.output_shape()
    assert {k: s.stride for k, s in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert backbone.bottom_up.output_shape()["res5"] == ShapeSpec(channels=256, stride=32)


@pytest.fixture
def tiny_shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path))
    register_shapes("convnext_test_tiny", num_images=2, seed=3, image_size=64, object_size=(16, 32), max_objects=3)
    yield "convnext_test_tiny"
    DatasetCatalog.pop("convnext_test_tiny", None)
    MetadataCatalog.remove("convnext_test_tiny")


def test_mask_rcnn_from_the_project_config_trains_one_step(tiny_shapes):
    cfg = _project_cfg([
        f"DATASETS.TRAIN=('{tiny_shapes}',)", "INPUT.MIN_SIZE_TRAIN=(64,)", "INPUT.MAX_SIZE_TRAIN=64",
        "SOLVER.IMS_PER_BATCH=2", "DATALOADER.NUM_WORKERS=0", "MODEL.DEVICE=cpu", "MODEL.FPN.OUT_CHANNELS=32",
        "MODEL.CONVNEXT.DIMS=[8, 16, 24, 32]", "MODEL.CONVNEXT.DEPTHS=[1, 1, 1, 1]", "MODEL.ROI_BOX_HEAD.FC_DIM=32",
        "MODEL.ROI_MASK_HEAD.CONV_DIM=16",
    ])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    batch = next(iter(build_detection_train_loader(cfg)))
    losses = model(batch)
    assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"} == set(losses)
    # LayerNorm keeps the features near unit scale and the predictors start near zero, so the first
    # losses are those of uniform guesses: log 2 per sampled anchor (256 of each image's, which
    # normalise it) and per mask pixel, log(K + 1) per region
    assert losses["loss_rpn_cls"].item() == pytest.approx(math.log(2), rel=1e-3)
    assert losses["loss_cls"].item() == pytest.approx(math.log(cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1), rel=0.05)
    assert losses["loss_mask"].item() == pytest.approx(math.log(2), rel=0.01)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    backbone = model.backbone.bottom_up
    assert all(p.grad is not None for p in backbone.parameters())
    # the stem's gradient passes every block's identity path, so one step visibly moves it (the
    # blocks' own weights start with a 1e-6 layer scale and barely move in one step)
    stem = backbone.downsample_layers[0][0].weight
    before = stem.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert not torch.equal(before, stem)
