"""ViT with its simple feature pyramid, MViT and Swin compute what Detectron2's implementation
computes with the same weights. The expected numbers were produced by running Detectron2's
`detectron2/modeling/backbone/{vit,mvit,swin}.py` on exactly these models, weights and inputs (each
output's sum and three of its values); d2mask's attention and stochastic-depth code paths differ."""
import pytest
import torch

from d2mask.modeling import MViT, SimpleFeaturePyramid, SwinTransformer, ViT
from d2mask.modeling.backbone.fpn import LastLevelMaxPool


def _deterministic(model: torch.nn.Module) -> torch.nn.Module:
    """Every floating-point entry of the state dict set to 0.5 sin(0.37 i + len(name))."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                values = (torch.arange(t.numel(), dtype=torch.float64) * 0.37 + len(name)).sin() * 0.5
                t.copy_(values.reshape(t.shape))
    return model.eval()


def _image(h: int, w: int) -> torch.Tensor:
    return (torch.arange(3 * h * w, dtype=torch.float64) * 0.011).cos().reshape(1, 3, h, w).float()


def _check(outputs, expected):
    assert list(outputs) == list(expected)
    for name, (total, samples) in expected.items():
        flat = outputs[name].flatten()
        assert flat.sum().item() == pytest.approx(total, rel=1e-4, abs=1e-3), name
        got = flat[:: max(flat.numel() // 3, 1)][:3]
        assert torch.allclose(got, torch.tensor(samples), rtol=1e-5, atol=1e-4), name


def test_vit_and_simple_feature_pyramid():
    vit = ViT(
        img_size=64,
        patch_size=16,
        embed_dim=16,
        depth=3,
        num_heads=2,
        window_size=3,  # 5 x 6 tokens: padded windows
        window_block_indexes=[0, 2],
        residual_block_indexes=[1],
        use_rel_pos=True,  # tables for 4 x 4 tokens, interpolated
        pretrain_img_size=32,  # 2 x 2 position embeddings, resized
    )
    pyramid = SimpleFeaturePyramid(vit, "last_feat", 8, (4.0, 2.0, 1.0, 0.5), top_block=LastLevelMaxPool())
    model = _deterministic(pyramid)
    with torch.no_grad():
        outputs = {**model.net(_image(80, 96)), **model(_image(80, 96))}
    _check(outputs, {
        "last_feat": (-582.3066, [-28.15361, -16.4053, -24.60286]),
        "p2": (1738.6189, [0.62564, 0.23085, 0.16358]),
        "p3": (279.4202, [-0.20654, 0.34416, 0.91809]),
        "p4": (84.9721, [0.2668, 0.47119, 0.0585]),
        "p5": (16.8908, [0.26183, 0.53903, -0.03712]),
        "p6": (6.6725, [0.26183, 0.40802, -0.06182]),
    })


def test_mvit():
    model = MViT(
        img_size=64,
        embed_dim=8,
        depth=5,
        num_heads=1,
        last_block_indexes=(0, 1, 3, 4),
        adaptive_window_size=8,
        adaptive_kv_stride=2,
        use_abs_pos=True,
        pretrain_img_size=32,
    )
    with torch.no_grad():
        outputs = _deterministic(model)(_image(64, 64))
    _check(outputs, {
        "scale2": (-722.6265, [-0.29485, -0.46231, -0.14064]),
        "scale3": (-32.2945, [-0.54209, 0.05873, 0.42112]),
        "scale4": (-9.2509, [0.05378, 0.33569, -0.75869]),
        "scale5": (-4.6161, [-0.02317, -0.19919, -0.57552]),
    })


def test_swin():
    model = SwinTransformer(
        embed_dim=8,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 2, 4),
        window_size=3,
        ape=True,
        pretrain_img_size=32,
        out_indices=(0, 3),
    )
    with torch.no_grad():
        outputs = _deterministic(model)(_image(66, 75))  # neither a multiple of the patch nor of the window
    _check(outputs, {
        "p0": (-1298.4604, [-0.25027, -0.40083, -0.6625]),
        "p3": (-2.0614, [-0.44104, -0.07296, -0.24436]),
    })
