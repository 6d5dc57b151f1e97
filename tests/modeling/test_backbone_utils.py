"""The transformer backbones' shared pieces (d2mask.modeling.backbone.utils) on tiny hand-checked cases:
windows, relative and absolute position embeddings, and ViT's attention against a loop."""
import pytest
import torch

from d2mask.modeling.backbone.utils import (
    add_decomposed_rel_pos,
    get_abs_pos,
    get_rel_pos,
    window_partition,
    window_unpartition,
)
from d2mask.modeling.backbone.vit import Attention


def test_window_partition_pads_cuts_row_major_and_unpartition_restores():
    x = torch.randn(2, 5, 7, 3)
    windows, padded_hw = window_partition(x, 3)
    # 5 x 7 padded to 6 x 9: 2 x 3 windows per image.
    assert padded_hw == (6, 9)
    assert windows.shape == (2 * 2 * 3, 3, 3, 3)
    # Windows go image by image, row by row: window 1 is image 0's top row, second column.
    assert torch.equal(windows[1], x[0, 0:3, 3:6])
    assert torch.equal(windows[6], x[1, 0:3, 0:3])
    # Image 0's bottom-right window holds rows 3-4, columns 6 and zero padding.
    assert torch.equal(windows[5, :2, :1], x[0, 3:5, 6:7])
    assert windows[5, 2:].abs().sum() == 0 and windows[5, :, 1:].abs().sum() == 0
    assert torch.equal(window_unpartition(windows, 3, padded_hw, (5, 7)), x)


def test_get_rel_pos_indexes_offsets_and_stretches_the_shorter_axis():
    table = torch.arange(7.0)[:, None]  # one channel: each row holds its own index
    # Same sizes: query i, key k -> row i - k + (k_size - 1).
    assert get_rel_pos(4, 4, table)[..., 0].tolist() == [[3, 2, 1, 0], [4, 3, 2, 1], [5, 4, 3, 2], [6, 5, 4, 3]]
    # 2 queries over 4 keys (pooled queries): query coordinates stretched by 2 -> 2 i - k + 3.
    assert get_rel_pos(2, 4, table)[..., 0].tolist() == [[3, 2, 1, 0], [5, 4, 3, 2]]


def test_get_rel_pos_resizes_a_table_of_another_size_linearly():
    # A 3-row table (trained for size 2) used for size 3 needs 5 rows: [0, 1, 2] resized linearly
    # (half-pixel centres, edges clamped) is [0, 0.4, 1, 1.6, 2].
    table = torch.tensor([[0.0], [1.0], [2.0]])
    got = get_rel_pos(3, 3, table)[..., 0]
    expected = torch.tensor([[1.0, 0.4, 0.0], [1.6, 1.0, 0.4], [2.0, 1.6, 1.0]])
    assert torch.allclose(got, expected)


def test_add_decomposed_rel_pos_matches_a_loop_over_query_and_key_positions():
    torch.manual_seed(0)
    (qh, qw), c = (2, 3), 4
    q = torch.randn(2, qh * qw, c)
    rel_h, rel_w = torch.randn(2 * qh - 1, c), torch.randn(2 * qw - 1, c)
    attn = torch.randn(2, qh * qw, qh * qw)
    expected = attn.clone()
    for b in range(2):
        for i in range(qh):
            for j in range(qw):
                for k in range(qh):
                    for m in range(qw):
                        query = q[b, i * qw + j]
                        position = query @ rel_h[i - k + qh - 1] + query @ rel_w[j - m + qw - 1]
                        expected[b, i * qw + j, k * qw + m] += position
    got = add_decomposed_rel_pos(attn, q, rel_h, rel_w, (qh, qw), (qh, qw))
    assert torch.allclose(got, expected, atol=1e-5)


def test_vit_attention_with_relative_positions_matches_its_definition():
    torch.manual_seed(0)
    dim, heads, (h, w) = 8, 2, (2, 3)
    attn = Attention(dim, num_heads=heads, use_rel_pos=True, rel_pos_zero_init=False, input_size=(h, w))
    x = torch.randn(1, h, w, dim)
    q, k, v = (x.reshape(h * w, dim) @ attn.qkv.weight.t() + attn.qkv.bias).split(dim, dim=1)
    head_dim = dim // heads
    outputs = []
    for n in range(heads):
        qn, kn, vn = (t[:, n * head_dim : (n + 1) * head_dim] for t in (q, k, v))
        logits = qn @ kn.t() / head_dim**0.5
        # The position terms use the unscaled query.
        logits = add_decomposed_rel_pos(logits[None], qn[None], attn.rel_pos_h, attn.rel_pos_w, (h, w), (h, w))[0]
        outputs.append(logits.softmax(-1) @ vn)
    expected = torch.cat(outputs, dim=1) @ attn.proj.weight.t() + attn.proj.bias
    assert torch.allclose(attn(x).reshape(h * w, dim), expected, atol=1e-5)


def test_get_abs_pos_drops_the_class_token_and_resizes_the_grid():
    grid = torch.randn(1, 4, 4, 3)
    with_cls = torch.cat([torch.full((1, 1, 3), 99.0), grid.reshape(1, 16, 3)], dim=1)
    assert torch.equal(get_abs_pos(with_cls, True, (4, 4)), grid)
    assert torch.equal(get_abs_pos(grid.reshape(1, 16, 3), False, (4, 4)), grid)
    # Resized to another token map; a constant embedding stays constant under bicubic resizing.
    constant = torch.full((1, 1 + 16, 3), 0.5)
    resized = get_abs_pos(constant, True, (6, 5))
    assert resized.shape == (1, 6, 5, 3)
    assert torch.allclose(resized, torch.full_like(resized, 0.5))
    with pytest.raises(ValueError, match="17 position embeddings .* do not form a square grid"):
        get_abs_pos(torch.zeros(1, 17, 3), False, (4, 4))
