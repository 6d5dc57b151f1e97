"""Pieces shared by the transformer backbones (ViT, MViT, Swin): windows, relative and absolute
position embeddings, patch embedding and the MLP of a transformer block.

Shape shorthand: N images, H x W tokens of C channels ("channels-last" `Tensor[N, H, W, C]`, the
layout the transformer blocks work in), w the window side, nW the windows per image, O the offsets
of a relative position table.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Mlp",
    "PatchEmbed",
    "add_decomposed_rel_pos",
    "decomposed_rel_pos_bias",
    "get_abs_pos",
    "get_rel_pos",
    "init_transformer_weights",
    "window_partition",
    "window_unpartition",
]


def window_partition(x: Tensor, window_size: int) -> Tuple[Tensor, Tuple[int, int]]:
    """Cuts a token map into non-overlapping `window_size` squares, padding it with zeros at the
    bottom and right to a multiple of the window size first.

    Args:
        x: `Tensor[N, H, W, C]`.
        window_size: w.

    Returns:
        The windows `Tensor[N * nW, w, w, C]` (row-major within each image) and the padded size (Hp, Wp).
    """
    n, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        # (channels, then width, then height): (before, after) pairs from the last dimension back.
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    # (N, Hp, Wp, C) -> (N, Hp/w, w, Wp/w, w, C) -> (N, Hp/w, Wp/w, w, w, C) -> (N*nW, w, w, C)
    x = x.view(n, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(windows: Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]) -> Tensor:
    """The inverse of `window_partition`: the windows put back in place, the padding cut off.

    Args:
        windows: `Tensor[N * nW, w, w, C]`.
        window_size: w.
        pad_hw: the padded size (Hp, Wp) that `window_partition` returned.
        hw: the size (H, W) before padding.

    Returns:
        `Tensor[N, H, W, C]`.
    """
    hp, wp = pad_hw
    h, w = hw
    n = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    # (N*nW, w, w, C) -> (N, Hp/w, Wp/w, w, w, C) -> (N, Hp/w, w, Wp/w, w, C) -> (N, Hp, Wp, C)
    x = windows.view(n, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: Tensor) -> Tensor:
    """The embedding of the offset between every query and every key position along one axis.

    The table holds one embedding per offset, 2 * max(q_size, k_size) - 1 of them; a table trained
    for another size is linearly resized. When the query and key axes differ in length (pooled
    attention in MViT), the shorter axis's coordinates are stretched to the longer one's.

    Args:
        q_size: positions of the queries along the axis.
        k_size: positions of the keys along the axis.
        rel_pos: the table `Tensor[O, C]`, one row per offset.

    Returns:
        `Tensor[q_size, k_size, C]`.
    """
    num_offsets = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != num_offsets:
        # (O, C) -> (1, C, O): interpolate along the offsets -> (num_offsets, C)
        resized = F.interpolate(rel_pos.t().unsqueeze(0), size=num_offsets, mode="linear")
        rel_pos = resized[0].t()
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale
    # Shifted so that the most negative offset, the last key seen from the first query, is index 0.
    offsets = (q_coords - k_coords) + (k_size - 1) * k_scale
    return rel_pos[offsets.long()]


def decomposed_rel_pos_bias(
    q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, q_size: Tuple[int, int], k_size: Tuple[int, int]
) -> Tensor:
    """The decomposed relative position term of MViTv2 (Li et al., 2022) that is added to the
    attention logits: for a query at (i, j) and a key at (k, l), q . R_h[i - k] + q . R_w[j - l].

    Args:
        q: the (unscaled) queries `Tensor[B, q_h * q_w, C]`, B being images x heads (x windows).
        rel_pos_h: the height table `Tensor[Oh, C]`.
        rel_pos_w: the width table `Tensor[Ow, C]`.
        q_size: (q_h, q_w).
        k_size: (k_h, k_w).

    Returns:
        `Tensor[B, q_h * q_w, k_h * k_w]`.
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    r_h = get_rel_pos(q_h, k_h, rel_pos_h)  # (q_h, k_h, C)
    r_w = get_rel_pos(q_w, k_w, rel_pos_w)  # (q_w, k_w, C)
    b, _, c = q.shape
    q = q.reshape(b, q_h, q_w, c)
    rel_h = torch.einsum("bhwc,hkc->bhwk", q, r_h)  # (B, q_h, q_w, k_h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", q, r_w)  # (B, q_h, q_w, k_w)
    # (B, q_h, q_w, k_h, 1) + (B, q_h, q_w, 1, k_w) -> (B, q_h * q_w, k_h * k_w)
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, q_h * q_w, k_h * k_w)


def add_decomposed_rel_pos(
    attn: Tensor, q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, q_size: Tuple[int, int], k_size: Tuple[int, int]
) -> Tensor:
    """Attention logits `attn` (`Tensor[B, q_h * q_w, k_h * k_w]`) plus `decomposed_rel_pos_bias`
    (same arguments), as Detectron2's function of this name."""
    return attn + decomposed_rel_pos_bias(q, rel_pos_h, rel_pos_w, q_size, k_size)


def get_abs_pos(abs_pos: Tensor, has_cls_token: bool, hw: Tuple[int, int]) -> Tensor:
    """Absolute position embeddings of a pre-trained model, for an H x W token map: the class
    token's embedding dropped, the square grid resized bicubically when its side differs.

    Args:
        abs_pos: `Tensor[1, P, C]` with P = S * S (+ 1 with a class token).
        has_cls_token: whether the first of the P embeddings is the class token's.
        hw: (H, W).

    Returns:
        `Tensor[1, H, W, C]`.
    """
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    num_positions = abs_pos.shape[1]
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise ValueError(
            f"get_abs_pos: {num_positions} position embeddings "
            f"(class token {'dropped' if has_cls_token else 'absent'}) "
            f"do not form a square grid; check pretrain_img_size and pretrain_use_cls_token"
        )
    grid = abs_pos.reshape(1, side, side, -1)
    if (side, side) == (h, w):
        return grid
    # (1, S, S, C) -> (1, C, S, S) -> resized (1, C, H, W) -> (1, H, W, C)
    resized = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Image to tokens: one convolution (`proj`) whose stride is the patch size, output channels-last."""

    def __init__(
        self,
        kernel_size: Tuple[int, int] = (16, 16),
        stride: Tuple[int, int] = (16, 16),
        padding: Tuple[int, int] = (0, 0),
        in_chans: int = 3,
        embed_dim: int = 768,
    ):
        """
        Args:
            kernel_size: the convolution's kernel (the patch size, for ViT).
            stride: its stride.
            padding: its padding.
            in_chans: channels of the input image.
            embed_dim: channels of the tokens.
        """
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, in_chans, H, W]` -> `Tensor[N, H', W', embed_dim]`."""
        return self.proj(x).permute(0, 2, 3, 1)


class Mlp(nn.Module):
    """The feed-forward part of a transformer block: `fc1`, activation, dropout, `fc2`, dropout
    (the parameter names of timm's `Mlp`, which Detectron2's checkpoints use)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: Optional[int] = None,
        act_layer: type = nn.GELU,
        drop: float = 0.0,
    ):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[..., in_features]` -> `Tensor[..., out_features]`."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def init_transformer_weights(module: nn.Module) -> None:
    """The initialisation of ViT, MViT and Swin, applied with `model.apply`: linear weights from a
    normal of std 0.02 truncated at +-2, zero biases; LayerNorms the identity."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
