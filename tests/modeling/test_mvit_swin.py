"""MViTv2 and Swin backbones at Detectron2's paths: output names, strides and channels, their
parameter names, the shifted-window mask by hand, and a Swin under d2mask's FPN."""
import pytest
import torch

from d2mask.modeling import FPN, MViT, SwinTransformer
from d2mask.modeling.backbone.fpn import LastLevelMaxPool
from d2mask.modeling.backbone.swin import BasicLayer


def _tiny_mvit(**kwargs) -> MViT:
    args = dict(
        img_size=64,
        embed_dim=8,
        depth=5,
        num_heads=1,
        last_block_indexes=(0, 1, 3, 4),
        adaptive_window_size=8,
        adaptive_kv_stride=2,
    )
    return MViT(**{**args, **kwargs})


def test_mvit_stages_halve_resolution_and_double_channels():
    mvit = _tiny_mvit()
    expected = {"scale2": (8, 4), "scale3": (16, 8), "scale4": (32, 16), "scale5": (64, 32)}
    assert {k: (s.channels, s.stride) for k, s in mvit.output_shape().items()} == expected
    out = mvit(torch.randn(2, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (2, c, 64 // s, 64 // s) for k, (c, s) in expected.items()
    }

    # A subset of the stages, in the order asked; absolute position embeddings resized to the input.
    subset = _tiny_mvit(out_features=("scale4", "scale3"), use_abs_pos=True, pretrain_img_size=32)
    assert list(subset.output_shape()) == ["scale4", "scale3"]
    assert {k: tuple(v.shape) for k, v in subset(torch.randn(1, 3, 64, 64)).items()} == {
        "scale4": (1, 32, 4, 4),
        "scale3": (1, 16, 8, 8),
    }
    assert not hasattr(subset, "scale2_norm")


def test_mvit_parameter_names_are_detectron2s():
    names = {k: tuple(v.shape) for k, v in _tiny_mvit().state_dict().items()}
    # Block 1 opens stage 3: query pooling of stride 2 on a projected, max-pooled shortcut.
    expected = {
        "patch_embed.proj.weight": (8, 3, 7, 7),
        "blocks.0.attn.pool_q.weight": (8, 1, 3, 3),  # depthwise over the head's 8 channels
        "blocks.0.attn.norm_k.weight": (8,),
        "blocks.0.attn.rel_pos_h": (2 * 16 - 1, 8),  # 64 / 4 = 16 tokens, keys pooled by 2: 2 * max(16, 8) - 1
        "blocks.1.attn.qkv.weight": (3 * 16, 8),
        "blocks.1.proj.weight": (16, 8),
        "blocks.1.mlp.fc1.weight": (64, 16),
        "scale2_norm.weight": (8,),
        "scale5_norm.bias": (64,),
    }
    assert {k: names.get(k) for k in expected} == expected
    assert "blocks.0.proj.weight" not in names  # same channels: an identity shortcut


def test_mvit_refuses_bad_stages_in_one_line():
    with pytest.raises(ValueError, match=r"last_block_indexes \[0, 1, 5\]: at least three increasing .* in \[0, 4\]"):
        _tiny_mvit(last_block_indexes=(0, 1, 5))
    with pytest.raises(ValueError, match=r"out_features \['res4'\]: each must be one of \['scale2', .*'scale5'\]"):
        _tiny_mvit(out_features=("res4",))


def _tiny_swin(**kwargs) -> SwinTransformer:
    args = dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=3, drop_path_rate=0.1)
    return SwinTransformer(**{**args, **kwargs})


def test_swin_outputs_and_parameter_names():
    swin = _tiny_swin(out_indices=(1, 2, 3))
    expected = {"p1": (16, 8), "p2": (32, 16), "p3": (64, 32)}
    assert {k: (s.channels, s.stride) for k, s in swin.output_shape().items()} == expected
    assert swin.size_divisibility == 32
    # Sizes that are multiples of neither the patch nor the window: padded inside, cut off after.
    out = swin(torch.randn(2, 3, 66, 75))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"p1": (2, 16, 9, 10), "p2": (2, 32, 5, 5), "p3": (2, 64, 3, 3)}

    names = {k: tuple(v.shape) for k, v in swin.state_dict().items()}
    expected_names = {
        "patch_embed.proj.weight": (8, 3, 4, 4),
        "patch_embed.norm.weight": (8,),
        "layers.0.blocks.1.attn.relative_position_bias_table": ((2 * 3 - 1) ** 2, 1),
        "layers.0.blocks.1.attn.relative_position_index": (9, 9),  # saved, as in Swin checkpoints
        "layers.0.downsample.reduction.weight": (16, 32),
        "layers.0.downsample.norm.weight": (32,),
        "layers.3.blocks.0.mlp.fc2.weight": (64, 256),
        "norm1.weight": (16,),
    }
    assert {k: names.get(k) for k in expected_names} == expected_names
    assert "norm0.weight" not in names and "layers.3.downsample.reduction.weight" not in names


def test_swin_relative_position_index_by_hand():
    index = _tiny_swin(window_size=2).layers[0].blocks[0].attn.relative_position_index
    # 2 x 2 window, positions (0,0) (0,1) (1,0) (1,1); offset (dy, dx) -> (dy + 1) * 3 + (dx + 1).
    assert index.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


def test_swin_shifted_window_mask_by_hand():
    layer = BasicLayer(dim=4, depth=2, num_heads=1, window_size=2)  # shift 1
    mask = layer.shifted_window_mask(4, 4, torch.device("cpu"))
    assert mask.shape == (4, 4, 4)  # 2 x 2 windows of 2 x 2 tokens
    m = -100.0
    # After rolling by 1, the top-left window holds one region; the top-right one two columns of
    # different regions; the bottom-right one four regions.
    assert mask[0].eq(0).all()
    assert mask[1].tolist() == [[0, m, 0, m], [m, 0, m, 0], [0, m, 0, m], [m, 0, m, 0]]
    assert mask[3].tolist() == [[0, m, m, m], [m, 0, m, m], [m, m, 0, m], [m, m, m, 0]]


def test_swin_under_fpn_with_frozen_stages():
    swin = _tiny_swin(frozen_stages=2)
    # Stages 0 and 1 frozen: the patch embedding and the first layer.
    assert not any(p.requires_grad for p in swin.patch_embed.parameters())
    assert not any(p.requires_grad for p in swin.layers[0].parameters())
    assert all(p.requires_grad for p in swin.layers[1].parameters())
    fpn = FPN(swin, ["p0", "p1", "p2", "p3"], out_channels=16, top_block=LastLevelMaxPool(), square_pad=64)
    out = fpn(torch.randn(1, 3, 64, 64))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {f"p{s}": (1, 16, 64 // 2**s, 64 // 2**s) for s in range(2, 7)}
