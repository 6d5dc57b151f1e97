"""ViTDet: the ViT backbone, the simple feature pyramid, the layer-wise learning-rate decay, the
Mask R-CNN ViT-B Python config (Detectron2's parameter names, a hand-counted size) and a tiny
ViTDet Mask R-CNN learning."""
import os
from functools import partial

import pytest
import torch

from d2mask.config import LazyConfig, instantiate
from d2mask.modeling import SimpleFeaturePyramid, ViT, get_vit_lr_decay_rate
from d2mask.modeling.backbone.fpn import LastLevelMaxPool
from d2mask.solver import get_default_optimizer_params
from d2mask.structures import ImageList
from tests.common import REPO
from tests.modeling.test_overfit import _synthetic_image

VITDET_CONFIG = os.path.join(REPO, "configs", "common", "models", "mask_rcnn_vitdet.py")


def _tiny_vit(**kwargs) -> ViT:
    args = dict(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2, use_rel_pos=True, pretrain_img_size=32)
    return ViT(**{**args, **kwargs})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),  # global attention everywhere
        dict(window_size=4, window_block_indexes=[0]),  # a window block, then a global one
        dict(window_size=3, window_block_indexes=[0, 1], residual_block_indexes=[0]),  # padded windows
        dict(use_abs_pos=False, use_rel_pos=False, drop_path_rate=0.2),
    ],
)
def test_vit_forward_gives_one_stride_patch_size_feature(kwargs):
    vit = _tiny_vit(**kwargs)
    assert {k: (s.channels, s.stride) for k, s in vit.output_shape().items()} == {"last_feat": (32, 8)}
    # An input other than img_size: the position embeddings are resized.
    out = vit(torch.randn(2, 3, 48, 72))
    assert list(out) == ["last_feat"] and out["last_feat"].shape == (2, 32, 6, 9)


def test_window_attention_keeps_information_within_its_window():
    torch.manual_seed(0)
    image = torch.randn(1, 3, 64, 64)
    changed = image.clone()
    changed[:, :, :32, :32] += 1.0  # the pixels of the top-left 4 x 4 tokens, one window
    for window_blocks, local in (([0], True), ([], False)):
        vit = _tiny_vit(depth=1, window_size=4, window_block_indexes=window_blocks, use_abs_pos=False).eval()
        with torch.no_grad():
            diff = (vit(changed)["last_feat"] - vit(image)["last_feat"]).abs().sum(dim=1)[0]  # (8, 8) tokens
        assert diff[:4, :4].min() > 0
        outside = torch.cat([diff[:4, 4:].flatten(), diff[4:].flatten()])
        assert (outside.max() == 0) == local  # a global block lets every token see the change


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    kwargs = dict(window_size=4, window_block_indexes=[0], residual_block_indexes=[1])
    plain = _tiny_vit(**kwargs)
    checkpointed = _tiny_vit(**kwargs, use_act_checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    calls = []
    checkpointed.blocks[0].register_forward_pre_hook(lambda *args: calls.append(1))
    image = torch.randn(1, 3, 64, 64)
    for vit in (plain, checkpointed):
        vit(image)["last_feat"].square().sum().backward()
    assert len(calls) == 2  # the block started again in the backward pass (recomputation may stop early)
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_simple_feature_pyramid_levels_and_square_padding():
    vit = _tiny_vit(patch_size=16, window_size=2, window_block_indexes=[0])
    sfp = SimpleFeaturePyramid(
        vit, "last_feat", 16, scale_factors=(4.0, 2.0, 1.0, 0.5), top_block=LastLevelMaxPool(), square_pad=64
    )
    shapes = {k: (s.channels, s.stride) for k, s in sfp.output_shape().items()}
    assert shapes == {"p2": (16, 4), "p3": (16, 8), "p4": (16, 16), "p5": (16, 32), "p6": (16, 64)}
    assert sfp.size_divisibility == 32 and sfp.padding_constraints == {"square_size": 64}

    images = [torch.randn(3, 50, 30), torch.randn(3, 40, 64)]
    images = ImageList.from_tensors(images, sfp.size_divisibility, padding_constraints=sfp.padding_constraints)
    assert images.tensor.shape == (2, 3, 64, 64)
    out = sfp(images.tensor)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert [tuple(t.shape) for t in out.values()] == [(2, 16, 64 // s, 64 // s) for s in (4, 8, 16, 32, 64)]

    # ViTDet's 1024 square: any image up to 1024 is padded to it, a larger one is refused.
    big = SimpleFeaturePyramid(vit, "last_feat", 16, (1.0,), square_pad=1024).padding_constraints
    padded = ImageList.from_tensors([torch.zeros(1, 800, 1000)], 16, padding_constraints=big)
    assert padded.tensor.shape == (1, 1, 1024, 1024) and padded.image_sizes == [(800, 1000)]
    with pytest.raises(ValueError, match="square_size 1024"):
        ImageList.from_tensors([torch.zeros(1, 800, 1100)], 16, padding_constraints=big)


def test_simple_feature_pyramid_refuses_bad_arguments_in_one_line():
    vit = _tiny_vit(patch_size=16)
    with pytest.raises(ValueError, match=r"scale_factors \[3.0\]: each must be one of \[4.0, 2.0, 1.0, 0.5\]"):
        SimpleFeaturePyramid(vit, "last_feat", 16, (3.0,))
    with pytest.raises(ValueError, match="must have strides doubling level to level, got \\[4, 16\\]"):
        SimpleFeaturePyramid(vit, "last_feat", 16, (4.0, 1.0))
    with pytest.raises(ValueError, match="in_feature 'res5' is not an output of net; it produces \\['last_feat'\\]"):
        SimpleFeaturePyramid(vit, "res5", 16, (1.0,))
    # Stride-8 patches: the levels are p1-p4, and LastLevelMaxPool reads p5.
    with pytest.raises(ValueError, match="top_block reads 'p5', which is neither an output of net"):
        SimpleFeaturePyramid(_tiny_vit(), "last_feat", 16, (4.0, 2.0, 1.0, 0.5), top_block=LastLevelMaxPool())


def test_vit_refuses_inconsistent_arguments_in_one_line():
    with pytest.raises(ValueError, match="embed_dim 30 must be a multiple of num_heads 4"):
        _tiny_vit(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match=r"window_block_indexes \[0, 2\]: each must be a block index in \[0, 1\]"):
        _tiny_vit(window_size=4, window_block_indexes=[0, 2])
    with pytest.raises(ValueError, match="window_size 0: blocks \\[0\\] use windows"):
        _tiny_vit(window_block_indexes=[0])


def test_vit_lr_decay_rate_by_hand():
    decay = partial(get_vit_lr_decay_rate, lr_decay_rate=0.7, num_layers=12)
    # The embeddings are layer 0, block i is layer i + 1, everything else layer 13 (factor 1).
    assert decay("backbone.net.pos_embed") == pytest.approx(0.7**13)
    assert decay("backbone.net.patch_embed.proj.weight") == pytest.approx(0.7**13)
    assert decay("backbone.net.blocks.0.attn.qkv.weight") == pytest.approx(0.7**12)
    assert decay("backbone.net.blocks.11.mlp.fc2.bias") == pytest.approx(0.7)
    assert decay("backbone.net.blocks.3.residual.conv1.weight") == 1.0
    assert decay("backbone.simfp_2.0.weight") == 1.0
    assert decay("roi_heads.box_head.fc1.weight") == 1.0


def test_lr_decay_as_optimizer_lr_factor_func():
    model = torch.nn.Module()
    model.backbone = SimpleFeaturePyramid(_tiny_vit(patch_size=16), "last_feat", 8, (1.0,))
    groups = get_default_optimizer_params(
        model, base_lr=1.0, lr_factor_func=partial(get_vit_lr_decay_rate, num_layers=2, lr_decay_rate=0.5)
    )
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    net = model.backbone.net
    # Two blocks: embeddings 0.5**3, block 0 0.5**2, block 1 0.5, the pyramid 1.
    assert lr_of[id(net.pos_embed)] == lr_of[id(net.patch_embed.proj.weight)] == 0.125
    assert lr_of[id(net.blocks[0].attn.qkv.weight)] == 0.25
    assert lr_of[id(net.blocks[1].mlp.fc1.weight)] == 0.5
    assert lr_of[id(model.backbone.simfp_4[0].weight)] == 1.0


def test_vitdet_b_config_has_detectron2_names_shapes_and_size():
    cfg = LazyConfig.load(VITDET_CONFIG)
    with torch.device("meta"):  # shapes only: no 100M-parameter initialisation
        model = instantiate(cfg.model)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    expected = {
        "backbone.net.pos_embed": (1, 14 * 14 + 1, 768),  # pre-trained at 224 with a class token
        "backbone.net.patch_embed.proj.weight": (768, 3, 16, 16),
        "backbone.net.blocks.0.attn.qkv.weight": (3 * 768, 768),
        "backbone.net.blocks.0.attn.rel_pos_h": (2 * 14 - 1, 64),  # window block: 14 x 14 windows
        "backbone.net.blocks.2.attn.rel_pos_w": (2 * 64 - 1, 64),  # global block: 1024 / 16 = 64 tokens
        "backbone.net.blocks.11.mlp.fc1.weight": (3072, 768),
        "backbone.net.blocks.11.norm2.bias": (768,),
        "backbone.simfp_2.0.weight": (768, 384, 2, 2),
        "backbone.simfp_2.1.weight": (384,),
        "backbone.simfp_2.3.weight": (384, 192, 2, 2),
        "backbone.simfp_2.4.norm.weight": (256,),
        "backbone.simfp_3.1.weight": (256, 384, 1, 1),
        "backbone.simfp_5.2.weight": (256, 256, 3, 3),
        "proposal_generator.rpn_head.conv.conv1.weight": (256, 256, 3, 3),
        "roi_heads.box_head.conv4.norm.weight": (256,),
        "roi_heads.box_head.fc1.weight": (1024, 256 * 7 * 7),
        "roi_heads.mask_head.mask_fcn4.norm.bias": (256,),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    assert not any(k.startswith("backbone.net.blocks.12.") or ".residual." in k or "simfp_5.0." in k for k in shapes)

    # ViT-B by hand (C = 768, MLP 3072, head dim 64).
    block = 2 * 2 * 768 + (768 * 3 * 768 + 3 * 768) + (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768)
    assert block == 7_087_872  # two LayerNorms, qkv, proj, fc1, fc2
    rel_pos = 8 * 2 * (2 * 14 - 1) * 64 + 4 * 2 * (2 * 64 - 1) * 64  # 8 window blocks, 4 global
    vit = (3 * 16 * 16 * 768 + 768) + 197 * 768 + 12 * block + rel_pos  # patch embedding, pos_embed, blocks
    assert vit == 85_889_024
    # Pyramid levels, each ending in a 1x1 and a 3x3 conv to 256 (no bias) with LN.
    head = lambda c: c * 256 + 2 * 256 + 256 * 256 * 9 + 2 * 256  # noqa: E731
    p2 = (768 * 384 * 4 + 384) + 2 * 384 + (384 * 192 * 4 + 192) + head(192)  # two transposed convs, LN
    p3 = (768 * 384 * 4 + 384) + head(384)
    p4 = p5 = head(768)  # p5 max-pools first
    assert p2 + p3 + p4 + p5 == 5_560_000
    assert sum(p.numel() for p in model.backbone.net.parameters()) == vit
    assert sum(p.numel() for p in model.backbone.parameters()) == vit + 5_560_000


def test_tiny_vitdet_mask_rcnn_from_the_config_learns():
    """The ViT-B config shrunk (ViT of 2 blocks of 32 channels on 128-pixel images) trains: the loss
    of one synthetic image with two shapes falls."""
    cfg = LazyConfig.load(VITDET_CONFIG)
    LazyConfig.apply_overrides(
        cfg,
        [
            "model.backbone.net.img_size=128",
            "model.backbone.net.embed_dim=32",
            "model.backbone.net.depth=2",
            "model.backbone.net.num_heads=2",
            "model.backbone.net.window_size=4",
            "model.backbone.net.window_block_indexes=[0]",
            "model.backbone.net.drop_path_rate=0.0",
            "model.backbone.square_pad=128",
            "model.backbone.out_channels=32",
            "model.roi_heads.num_classes=2",
            "model.roi_heads.box_head.conv_dims=[32]",
            "model.roi_heads.box_head.fc_dims=[64]",
            "model.roi_heads.box_predictor.input_shape.channels=64",
            "model.roi_heads.mask_head.conv_dims=[32, 32]",
            "model.roi_heads.proposal_sampler.batch_size_per_image=64",
            "model.proposal_generator.pre_nms_topk=[200, 200]",
            "model.proposal_generator.post_nms_topk=[50, 50]",
        ],
    )
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert model.backbone.padding_constraints == {"square_size": 128}
    inputs, _ = _synthetic_image()
    optimizer = torch.optim.AdamW(get_default_optimizer_params(model, base_lr=2e-3, weight_decay_norm=0.0), lr=2e-3)
    model.train()
    history = []
    for _ in range(50):
        losses = model([inputs])
        assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    first, last = history[0], {k: sum(h[k] for h in history[-5:]) / 5 for k in history[0]}
    # Binary losses start at log 2 = 0.693, the 3-way classification at log 3 = 1.099 (ROI sampling
    # makes the last steps noisy, hence their mean). The box regression loss starts at 0 (no
    # positive proposal yet) and is left out.
    assert first["loss_rpn_cls"] == pytest.approx(0.693, abs=0.01) and last["loss_rpn_cls"] < 0.1, last
    assert first["loss_mask"] == pytest.approx(0.693, abs=0.01) and last["loss_mask"] < 0.5, last
    assert first["loss_cls"] == pytest.approx(1.099, abs=0.05) and last["loss_cls"] < 0.7, last

    # Inference on an image smaller than the square, asked for at twice its size.
    model.eval()
    with torch.no_grad():
        result = model([{"image": inputs["image"][:, :100, :120], "height": 200, "width": 240}])[0]["instances"]
    assert result.image_size == (200, 240)
    assert result.pred_masks.shape[1:] == (200, 240) and len(result) > 0
