"""ResNet / FPN backbones: Detectron2 names, shapes, freezing, config errors, torchvision conversion."""
import os
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

from d2mask.config import ConfigError, get_cfg
from d2mask.layers import FrozenBatchNorm2d, ShapeSpec
from d2mask.modeling import (
    BACKBONE_REGISTRY,
    FPN,
    Backbone,
    BottleneckBlock,
    LastLevelMaxPool,
    LastLevelP6P7,
    ResNet,
    build_backbone,
    build_proposal_generator,
)
from tests.common import REPO, read_reference

FPN_LEVELS = "['res2', 'res3', 'res4', 'res5']"
BACKBONE_AND_RPN = ("backbone.", "proposal_generator.")


def fpn_cfg(*overrides):
    """Detectron2's Base-RCNN-FPN settings for the backbone and RPN."""
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
        "MODEL.RESNETS.OUT_FEATURES", FPN_LEVELS,
        "MODEL.FPN.IN_FEATURES", FPN_LEVELS,
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64], [128], [256], [512]]",
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0, 2.0]]",
        "MODEL.RPN.IN_FEATURES", "['p2', 'p3', 'p4', 'p5', 'p6']",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "2000",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "1000",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "1000",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "1000",
        *overrides,
    ])
    return cfg


def r18_cfg(*overrides):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", *overrides])
    return cfg


def model_entries(cfg):
    model = nn.Module()
    model.backbone = build_backbone(cfg)
    model.proposal_generator = build_proposal_generator(cfg, model.backbone.output_shape())
    return [(name, tuple(t.shape)) for name, t in model.state_dict().items()]


def test_r50_fpn_backbone_and_rpn_names_equal_detectron2():
    expected = read_reference("detectron2_mask_rcnn_R_50_FPN_state_dict.txt", BACKBONE_AND_RPN)
    assert len(expected) == 287
    assert model_entries(fpn_cfg()) == expected


def test_r50_c4_backbone_and_rpn_names_equal_detectron2():
    # Detectron2's Base-RCNN-C4 backbone and RPN settings are d2mask's defaults.
    expected = read_reference("detectron2_mask_rcnn_R_50_C4_state_dict.txt", BACKBONE_AND_RPN)
    assert len(expected) == 221
    assert model_entries(get_cfg()) == expected


def test_c4_res5_built_by_make_stage_has_detectron2_names():
    blocks = ResNet.make_stage(
        BottleneckBlock, 3, stride_per_block=[2, 1, 1], in_channels=1024, out_channels=2048,
        bottleneck_channels=512, norm="FrozenBN", stride_in_1x1=True,
    )
    res5 = nn.Sequential(*blocks)
    got = [("roi_heads.res5." + n, tuple(t.shape)) for n, t in res5.state_dict().items()]
    assert got == read_reference("detectron2_mask_rcnn_R_50_C4_state_dict.txt", ("roi_heads.res5.",))
    assert blocks[0].stride == 2 and [b.stride for b in blocks[1:]] == [1, 1]


def test_make_default_stages_is_detectron2s_r50_and_r18():
    stages = ResNet.make_default_stages(50, norm="FrozenBN", stride_in_1x1=True)
    assert [len(s) for s in stages] == [3, 4, 6, 3]
    assert [(s[0].in_channels, s[-1].out_channels) for s in stages] == [(64, 256), (256, 512), (512, 1024), (1024, 2048)]
    assert [[b.stride for b in s] for s in stages] == [[1, 1, 1], [2, 1, 1, 1], [2] + [1] * 5, [2, 1, 1]]
    assert [s[0].conv1.out_channels for s in stages] == [64, 128, 256, 512]  # bottlenecks: a quarter of the output
    basic = ResNet.make_default_stages(18)
    assert [type(b).__name__ for b in basic[0]] == ["BasicBlock", "BasicBlock"]
    assert [(s[0].in_channels, s[0].out_channels, s[0].stride) for s in basic] == [
        (64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)
    ]


def test_r18_feature_shapes_and_strides():
    cfg = r18_cfg("MODEL.RESNETS.OUT_FEATURES", "['stem', 'res2', 'res3', 'res4', 'res5']")
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "stem": (64, 4), "res2": (64, 4), "res3": (128, 8), "res4": (256, 16), "res5": (512, 32),
    }
    out = backbone(torch.zeros(1, 3, 64, 96))
    for name, t in out.items():
        assert tuple(t.shape) == (1, shapes[name].channels, 64 // shapes[name].stride, 96 // shapes[name].stride)


def test_only_stages_up_to_the_deepest_output_are_built():
    backbone = build_backbone(r18_cfg("MODEL.RESNETS.OUT_FEATURES", "['res3']"))
    assert backbone.stage_names == ("res2", "res3")
    assert not hasattr(backbone, "res4")


@pytest.mark.parametrize("freeze_at, frozen", [(0, []), (1, ["stem"]), (2, ["stem", "res2"]), (5, ["stem", "res2", "res3", "res4", "res5"])])
def test_freeze_at_stops_gradients_and_freezes_batch_norm(freeze_at, frozen):
    cfg = r18_cfg("MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", str(freeze_at),
                  "MODEL.RESNETS.OUT_FEATURES", "['res5']")
    backbone = build_backbone(cfg)
    for part in ["stem", "res2", "res3", "res4", "res5"]:
        module = getattr(backbone, part)
        is_frozen = part in frozen
        assert all(p.requires_grad != is_frozen for p in module.parameters()), part
        norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
        assert norms and all(isinstance(m, FrozenBatchNorm2d) == is_frozen for m in norms), part
    out = backbone(torch.randn(2, 3, 32, 32))["res5"]
    assert out.requires_grad == ("res5" not in frozen)
    if out.requires_grad:
        out.sum().backward()
        assert (backbone.res2[0].conv1.weight.grad is None) == ("res2" in frozen)
        assert backbone.res5[0].conv1.weight.grad is not None


def test_resnext_groups_and_stride_placement():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RESNETS.NUM_GROUPS", "32", "MODEL.RESNETS.WIDTH_PER_GROUP", "4",
                         "MODEL.RESNETS.OUT_FEATURES", "['res3']"])
    backbone = build_backbone(cfg)
    # ResNeXt 32x4d: res2's 3x3 conv has 128 channels in 32 groups of 4.
    assert tuple(backbone.res2[0].conv2.weight.shape) == (128, 4, 3, 3)
    assert backbone.res3[0].conv1.stride == (2, 2) and backbone.res3[0].conv2.stride == (1, 1)
    cfg.merge_from_list(["MODEL.RESNETS.STRIDE_IN_1X1", "False"])
    backbone = build_backbone(cfg)
    assert backbone.res3[0].conv1.stride == (1, 1) and backbone.res3[0].conv2.stride == (2, 2)


def test_res5_dilation_keeps_stride_16():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.RES5_DILATION", "2",
                         "MODEL.RESNETS.OUT_FEATURES", "['res4', 'res5']", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                         "MODEL.RESNETS.WIDTH_PER_GROUP", "8", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16"])
    backbone = build_backbone(cfg)
    assert backbone.output_shape()["res5"].stride == 16
    assert backbone.res5[0].conv2.dilation == (2, 2)
    out = backbone(torch.zeros(1, 3, 64, 64))
    assert out["res5"].shape[-2:] == out["res4"].shape[-2:] == (4, 4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["MODEL.RESNETS.DEPTH", "42"], "MODEL.RESNETS.DEPTH"),
        (["MODEL.RESNETS.DEPTH", "18"], "MODEL.RESNETS.RES2_OUT_CHANNELS"),
        (["MODEL.RESNETS.OUT_FEATURES", "['res6']"], "MODEL.RESNETS.OUT_FEATURES"),
        (["MODEL.RESNETS.RES5_DILATION", "3"], "MODEL.RESNETS.RES5_DILATION"),
        (["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[True]"], "MODEL.RESNETS.DEFORM_ON_PER_STAGE"),
        (["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
          "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, False, False]"], "all False for ResNet-18/34"),
    ],
)
def test_bad_resnet_config_names_the_key(overrides, message):
    cfg = get_cfg()
    cfg.merge_from_list(overrides)
    with pytest.raises(ConfigError, match=message):
        build_backbone(cfg)


def test_fpn_config_errors_name_the_key():
    cfg = fpn_cfg("MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                  "MODEL.RESNETS.OUT_FEATURES", "['res4', 'res5']")
    with pytest.raises(ConfigError, match="MODEL.FPN.IN_FEATURES"):
        build_backbone(cfg)
    cfg = fpn_cfg("MODEL.FPN.FUSE_TYPE", "max")
    with pytest.raises(ConfigError, match="MODEL.FPN.FUSE_TYPE"):
        build_backbone(cfg)


def test_unknown_backbone_name_lists_registered_names():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbones"])
    with pytest.raises(KeyError, match="build_resnet_fpn_backbone"):
        build_backbone(cfg)


def test_r18_fpn_outputs_and_size_divisibility():
    cfg = fpn_cfg("MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "16")
    backbone = build_backbone(cfg)
    assert backbone.size_divisibility == 32
    assert {k: (s.channels, s.stride) for k, s in backbone.output_shape().items()} == {
        "p2": (16, 4), "p3": (16, 8), "p4": (16, 16), "p5": (16, 32), "p6": (16, 64),
    }
    out = backbone(torch.zeros(2, 3, 64, 96))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert [tuple(t.shape[-2:]) for t in out.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]


def test_fpn_positional_arguments_and_square_pad_as_detectron2():
    fpn = FPN(_ConstantFeatures(), ["res4", "res5"], 4, "", LastLevelMaxPool(), "sum", 96)
    assert fpn.padding_constraints == {"square_size": 96} and fpn.size_divisibility == 32
    assert FPN(_ConstantFeatures(), ["res4", "res5"], 4).padding_constraints == {}


def test_fpn_refuses_a_top_block_reading_no_feature_it_has():
    # p6 is a level the top block adds, not one it can read
    for in_feature in ("res6", "p6"):
        top_block = LastLevelP6P7(1, 4, in_feature=in_feature)
        with pytest.raises(ValueError, match=rf"FPN top_block reads '{in_feature}', which is neither an output of "
                                             r"bottom_up \['res4', 'res5'\] nor a level \['p4', 'p5'\]"):
            FPN(_ConstantFeatures(), ["res4", "res5"], 4, top_block=top_block)
    fpn = FPN(_ConstantFeatures(), ["res4", "res5"], 4, top_block=LastLevelP6P7(4, 4, in_feature="p5"))
    assert list(fpn.output_shape()) == ["p4", "p5", "p6", "p7"]


def test_backbone_base_reports_padding_needs_its_subclass_sets():
    assert _ConstantFeatures().size_divisibility == 0 and _ConstantFeatures().padding_constraints == {}

    class Padded(_ConstantFeatures):
        _size_divisibility = 64
        _square_pad = 512

    assert Padded().size_divisibility == 64 and Padded().padding_constraints == {"square_size": 512}


class _ConstantFeatures(Backbone):
    """Two 1-channel levels: res4 (4x4, all 1) and res5 (2x2, all 2)."""

    def __init__(self):
        super().__init__()
        self._out_features = ["res4", "res5"]
        self._out_feature_channels = {"res4": 1, "res5": 1}
        self._out_feature_strides = {"res4": 16, "res5": 32}

    def forward(self, x):
        return {"res4": torch.ones(1, 1, 4, 4), "res5": torch.full((1, 1, 2, 2), 2.0)}


@pytest.mark.parametrize("fuse_type, p4_value", [("sum", 3.0), ("avg", 1.5)])
def test_fpn_top_down_fusion_by_hand(fuse_type, p4_value):
    fpn = FPN(bottom_up=_ConstantFeatures(), in_features=["res4", "res5"], out_channels=1,
              top_block=LastLevelMaxPool(), fuse_type=fuse_type)
    with torch.no_grad():
        for name in ["fpn_lateral4", "fpn_lateral5", "fpn_output4", "fpn_output5"]:
            conv = getattr(fpn, name)
            conv.weight.zero_()
            conv.bias.zero_()
            # identity: 1x1 weight 1, or the centre tap of the 3x3 kernel
            conv.weight[0, 0, conv.weight.shape[2] // 2, conv.weight.shape[3] // 2] = 1.0
    out = fpn(torch.zeros(1, 3, 64, 64))
    assert list(out) == ["p4", "p5", "p6"]
    # p5 = lateral(res5) = 2; p4 = res4 + upsampled p5 (halved for avg); p6 = p5 subsampled.
    assert torch.equal(out["p5"], torch.full((1, 1, 2, 2), 2.0))
    assert torch.equal(out["p4"], torch.full((1, 1, 4, 4), p4_value))
    assert torch.equal(out["p6"], torch.full((1, 1, 1, 1), 2.0))


def test_torchvision_resnet18_converts_and_computes_the_same_features(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong mapping shows in the outputs
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    src, dst = tmp_path / "r18.pth", tmp_path / "r18.pkl"
    torch.save(tv.state_dict(), src)
    script = os.path.join(REPO, "tools", "convert-torchvision-to-d2mask.py")
    subprocess.run([sys.executable, script, str(src), str(dst)], check=True, capture_output=True)
    with open(dst, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "torchvision" and data["matching_heuristics"] is True

    cfg = r18_cfg("MODEL.RESNETS.OUT_FEATURES", "['res5']", "MODEL.RESNETS.STRIDE_IN_1X1", "False")
    backbone = build_backbone(cfg).eval()
    expected_shapes = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in data["model"].items()} == expected_shapes
    backbone.load_state_dict({k: torch.as_tensor(v) for k, v in data["model"].items()})

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(t))))
        got = backbone(x)["res5"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_converter_model_layouts_prefix_names():
    from d2mask.checkpoint import torchvision_model_loading as convert

    sd = {"conv1.weight": 0, "bn1.running_var": 1, "layer4.0.downsample.1.weight": 2, "fc.bias": 3,
          "layer1.0.bn2.num_batches_tracked": 4}
    assert convert.convert_torchvision_resnet(sd, "c4") == {
        "backbone.stem.conv1.weight": 0, "backbone.stem.conv1.norm.running_var": 1,
        "roi_heads.res5.0.shortcut.norm.weight": 2,
    }
    assert list(convert.convert_torchvision_resnet(sd, "fpn")) == [
        "backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.stem.conv1.norm.running_var",
        "backbone.bottom_up.res5.0.shortcut.norm.weight",
    ]
    with pytest.raises(ValueError, match="not a parameter of a torchvision ResNet"):
        convert.convert_torchvision_resnet({"head.weight": 0})


@BACKBONE_REGISTRY.register()
def _test_only_plain_module_builder(cfg, input_shape: ShapeSpec):
    return nn.Identity()


def test_build_backbone_rejects_a_non_backbone():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "_test_only_plain_module_builder"])
    with pytest.raises(TypeError, match="must return a d2mask.modeling.Backbone"):
        build_backbone(cfg)


@pytest.mark.parametrize("modulated, offset_channels", [(False, 18), (True, 27)])
def test_deformable_stages_have_detectron2_names_and_shapes(modulated, offset_channels):
    """MODEL.RESNETS.DEFORM_*: the names and shapes of Detectron2's DeformBottleneckBlock (conv2 is the
    deformable conv without bias, conv2_offset a plain conv with bias), so its checkpoints load."""
    from d2mask.modeling.backbone.resnet import DeformBottleneckBlock

    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.RESNETS.OUT_FEATURES", "['res3']", "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, False, False]",
        "MODEL.RESNETS.DEFORM_MODULATED", str(modulated), "MODEL.RESNETS.DEFORM_NUM_GROUPS", "2",
        "MODEL.RESNETS.NORM", "BN",
    ])
    net = build_backbone(cfg)
    assert not isinstance(net.res2[0], DeformBottleneckBlock) and isinstance(net.res3[3], DeformBottleneckBlock)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items() if k.startswith("res3.1.conv2")}
    assert shapes == {
        "res3.1.conv2.weight": (128, 128, 3, 3), "res3.1.conv2.norm.weight": (128,), "res3.1.conv2.norm.bias": (128,),
        "res3.1.conv2.norm.running_mean": (128,), "res3.1.conv2.norm.running_var": (128,),
        "res3.1.conv2.norm.num_batches_tracked": (), "res3.1.conv2_offset.weight": (2 * offset_channels, 128, 3, 3),
        "res3.1.conv2_offset.bias": (2 * offset_channels,),
    }


@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_block_starts_as_the_plain_bottleneck(modulated):
    """conv2_offset starts at zero: zero offsets (and, for DCNv2, a mask of sigmoid(0) = 1/2)."""
    from d2mask.modeling.backbone.resnet import DeformBottleneckBlock

    torch.manual_seed(0)
    args = dict(bottleneck_channels=8, stride=2, num_groups=2, norm="", stride_in_1x1=False)
    deform = DeformBottleneckBlock(16, 32, deform_modulated=modulated, **args)
    plain = BottleneckBlock(16, 32, **args)
    plain.load_state_dict({k: v for k, v in deform.state_dict().items() if "offset" not in k})
    if modulated:
        with torch.no_grad():
            plain.conv2.weight.mul_(0.5)
    x = torch.randn(2, 16, 9, 11)
    torch.testing.assert_close(deform(x), plain(x), rtol=1e-4, atol=1e-4)
    assert deform(x).shape == (2, 32, 5, 6) and deform.stride == 2


def test_resnet_block_base_is_the_cnn_block_base():
    from d2mask.layers import CNNBlockBase
    from d2mask.modeling import ResNetBlockBase

    assert ResNetBlockBase is CNNBlockBase
