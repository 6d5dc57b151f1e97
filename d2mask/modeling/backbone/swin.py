"""Swin Transformer (Liu et al., 2021, "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows"): attention within windows that every other block shifts by half a window, and
patch merging between stages. Outputs "p0", "p1", ... of strides 4, 8, ... (for patch_size 4).

Shape shorthand: N images, H x W tokens of C channels (channels-last `Tensor[N, H, W, C]`), w the
window side, T = w * w tokens per window, nW windows per image, nH attention heads.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from .backbone import Backbone
from .utils import Mlp, PatchEmbed as _ConvPatchEmbed, init_transformer_weights, window_partition, window_unpartition

__all__ = ["SwinTransformer"]

# Logit added between tokens of different regions of a shifted window: exp(-100) ~ 0 after the
# softmax, the value of the Swin reference implementation (and so of its checkpoints' training).
_MASKED = -100.0


def _relative_position_index(window_size: Tuple[int, int]) -> Tensor:
    """For every pair of positions (i, j) in a window, the row of the bias table holding their
    offset: `Tensor[Wh*Ww, Wh*Ww]` with values in [0, (2Wh-1)(2Ww-1))."""
    wh, ww = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # (2, Wh*Ww)
    offsets = coords[:, :, None] - coords[:, None, :]  # (2, Wh*Ww, Wh*Ww), in (-W, W)
    return (offsets[0] + wh - 1) * (2 * ww - 1) + (offsets[1] + ww - 1)


class WindowAttention(nn.Module):
    """Multi-head attention within a window, with a learnt bias per relative offset and head
    (`relative_position_bias_table`, indexed by the `relative_position_index` buffer)."""

    def __init__(
        self,
        dim: int,
        window_size: Tuple[int, int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        """
        Args:
            dim: channels C; a multiple of `num_heads`.
            window_size: (Wh, Ww).
            num_heads: nH.
            qkv_bias: whether the query/key/value projection has a bias.
            qk_scale: the logits' scale, instead of head_dim ** -0.5.
            attn_drop: dropout of the attention weights.
            proj_drop: dropout of the output.
        """
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads)
        )
        # Saved with the weights, as in Detectron2's (and Swin's) checkpoints.
        self.register_buffer("relative_position_index", _relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x: the windows' tokens `Tensor[N * nW, T, C]`.
            mask: 0 or -100 per pair of tokens of each window `Tensor[nW, T, T]`, or None.

        Returns:
            `Tensor[N * nW, T, C]`.
        """
        b, length, c = x.shape
        # (N*nW, T, 3C) -> (3, N*nW, nH, T, C/nH)
        q, k, v = self.qkv(x).reshape(b, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        # (T*T, nH) -> (nH, T, T)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(length, length, -1).permute(2, 0, 1)
        if mask is not None:
            num_windows = mask.shape[0]
            # Windows come image by image: (N*nW, ...) -> (N, nW, ...) against the (nW, nH, T, T) logits' terms.
            q, k, v = (t.reshape(b // num_windows, num_windows, *t.shape[1:]) for t in (q, k, v))
            bias = bias[None] + mask[:, None]
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        # (..., nH, T, C/nH) -> (N*nW, T, nH, C/nH) -> (N*nW, T, C)
        x = x.reshape(b, self.num_heads, length, -1).transpose(1, 2).reshape(b, length, c)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    """A pre-norm transformer block of `WindowAttention`, its windows shifted by `shift_size`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ):
        """
        Args:
            dim, num_heads, qkv_bias, qk_scale, attn_drop: as `WindowAttention`'s.
            window_size: w.
            shift_size: the cyclic shift of the windows, in [0, w).
            mlp_ratio: hidden channels of the MLP per channel.
            drop: dropout of the attention output and of the MLP.
            drop_path: probability of dropping the residual branches of an image (stochastic depth).
            act_layer: builds the MLP's activation.
            norm_layer: builds a norm of a channel count.
        """
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"SwinTransformerBlock shift_size {shift_size} must be in [0, window_size {window_size})")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim,
            (window_size, window_size),
            num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: Tensor, mask_matrix: Tensor) -> Tensor:
        """
        Args:
            x: `Tensor[N, H, W, C]`.
            mask_matrix: the attention mask of the shifted windows (see `BasicLayer`), used when shifting.

        Returns:
            `Tensor[N, H, W, C]`.
        """
        shortcut = x
        x = self.norm1(x)
        h, w, c = x.shape[1:]
        # Padded first, so the cyclic shift rolls the padded map as the Swin reference does.
        x = F.pad(x, (0, 0, 0, (-w) % self.window_size, 0, (-h) % self.window_size))
        padded_hw = tuple(x.shape[1:3])
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows, _ = window_partition(x, self.window_size)
        windows = self.attn(windows.view(-1, self.window_size**2, c), mask=mask_matrix if self.shift_size > 0 else None)
        windows = windows.view(-1, self.window_size, self.window_size, c)
        x = window_unpartition(windows, self.window_size, padded_hw, padded_hw)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(x[:, :h, :w, :])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halves the resolution and doubles the channels: each 2x2 group of tokens is concatenated
    (4C), normalised and projected to 2C (`reduction`)."""

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, H, W, C]` -> `Tensor[N, ceil(H / 2), ceil(W / 2), 2C]`."""
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # The order of the reference implementation, which its checkpoints' `reduction` expects.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One stage: `depth` blocks, the odd ones with windows shifted by w // 2, then an optional
    downsampling module (`PatchMerging`)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Union[float, List[float]] = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        downsample: Optional[Callable[..., nn.Module]] = None,
        use_checkpoint: bool = False,
    ):
        """
        Args:
            dim, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop, norm_layer:
                as `SwinTransformerBlock`'s.
            depth: number of blocks.
            drop_path: stochastic depth, one for all blocks or one per block.
            downsample: built as `downsample(dim=dim, norm_layer=norm_layer)` after the blocks, or None.
            use_checkpoint: recompute the blocks' activations in the backward pass.
        """
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i] if isinstance(drop_path, list) else drop_path,
                norm_layer=norm_layer,
            )
            for i in range(depth)
        )
        self.downsample = downsample(dim=dim, norm_layer=norm_layer) if downsample is not None else None

    def shifted_window_mask(self, height: int, width: int, device: torch.device) -> Tensor:
        """The attention mask of shifted windows over an H x W map: after the cyclic shift, a
        window may hold tokens of up to 3 x 3 regions that were not neighbours; tokens of
        different regions don't attend to each other. `Tensor[nW, w*w, w*w]` of 0 and -100."""
        ws, shift = self.window_size, self.shift_size
        padded_h, padded_w = -(-height // ws) * ws, -(-width // ws) * ws
        regions = torch.zeros((1, padded_h, padded_w, 1), device=device)
        bands = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
        for i, rows in enumerate(bands):
            for j, cols in enumerate(bands):
                regions[:, rows, cols, :] = 3 * i + j
        region_windows = window_partition(regions, ws)[0].view(-1, ws * ws)  # (nW, w*w)
        different = region_windows[:, None, :] != region_windows[:, :, None]
        return torch.zeros(different.shape, device=device).masked_fill(different, _MASKED)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """`Tensor[N, H, W, C]` -> (the stage's output `Tensor[N, H, W, C]`, the downsampled
        output `Tensor[N, ceil(H / 2), ceil(W / 2), 2C]`, or the output again without downsampling)."""
        mask = self.shifted_window_mask(x.shape[1], x.shape[2], x.device)
        for block in self.blocks:
            if self.use_checkpoint and self.training:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return x, (self.downsample(x) if self.downsample is not None else x)


class PatchEmbed(_ConvPatchEmbed):
    """Swin's patch embedding: the image zero-padded to a multiple of `patch_size`, one convolution
    (`proj`) of stride `patch_size`, then an optional norm (`norm`); output channels-last."""

    def __init__(
        self,
        patch_size: Union[int, Tuple[int, int]] = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Optional[Callable[[int], nn.Module]] = None,
    ):
        patch_size = nn.modules.utils._pair(patch_size)
        super().__init__(kernel_size=patch_size, stride=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, in_chans, H, W]` -> `Tensor[N, ceil(H / p), ceil(W / p), embed_dim]`."""
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % self.patch_size[1], 0, (-h) % self.patch_size[0]))
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x


class SwinTransformer(Backbone):
    """The Swin Transformer backbone: stage i has `depths[i]` blocks of `embed_dim * 2**i`
    channels and `num_heads[i]` heads; output "p{i}" (after its norm `norm{i}`) for i in
    `out_indices`, of stride patch_size * 2**i."""

    def __init__(
        self,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
    ):
        """
        Args:
            pretrain_img_size: image side of pre-training, sizing the absolute position embedding.
            patch_size: side of a patch (the stride of "p0").
            in_chans: channels of the input image.
            embed_dim: channels of the first stage.
            depths: blocks per stage.
            num_heads: attention heads per stage.
            window_size, mlp_ratio, qkv_bias, qk_scale, norm_layer: as `SwinTransformerBlock`'s.
            drop_rate: dropout after the patch embedding, of the attention outputs and of the MLPs.
            attn_drop_rate: dropout of the attention weights.
            drop_path_rate: stochastic depth of the last block, rising linearly from 0 at the first.
            ape: add an absolute position embedding (`absolute_pos_embed`), resized to the input.
            patch_norm: normalise the patch embedding.
            out_indices: the stages whose outputs are returned.
            frozen_stages: -1: train everything; 0: freeze the patch embedding; 1: also the
                absolute position embedding; k >= 2: also the first k - 1 stages.
            use_checkpoint: recompute the blocks' activations in the backward pass.
        """
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(
                f"SwinTransformer depths {list(depths)} and num_heads {list(num_heads)} must have one entry per stage"
            )
        if any(i not in range(len(depths)) for i in out_indices) or not out_indices:
            raise ValueError(
                f"SwinTransformer out_indices {list(out_indices)}: each must be a stage in [0, {len(depths) - 1}]"
            )
        self.pretrain_img_size = pretrain_img_size
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer=norm_layer if patch_norm else None)
        if ape:
            pretrain_h, pretrain_w = nn.modules.utils._pair(pretrain_img_size)
            patch_h, patch_w = self.patch_embed.patch_size
            grid = (pretrain_h // patch_h, pretrain_w // patch_w)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *grid))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        drop_path_rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.num_features = [embed_dim * 2**i for i in range(self.num_layers)]
        self.layers = nn.ModuleList(
            BasicLayer(
                dim=self.num_features[i],
                depth=depths[i],
                num_heads=num_heads[i],
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=drop_path_rates[sum(depths[:i]) : sum(depths[: i + 1])],
                norm_layer=norm_layer,
                downsample=PatchMerging if i < self.num_layers - 1 else None,
                use_checkpoint=use_checkpoint,
            )
            for i in range(self.num_layers)
        )
        for i in self.out_indices:
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))

        self._out_features = [f"p{i}" for i in self.out_indices]
        self._out_feature_channels = {f"p{i}": self.num_features[i] for i in self.out_indices}
        self._out_feature_strides = {f"p{i}": self.patch_embed.patch_size[0] * 2**i for i in self.out_indices}
        self.apply(init_transformer_weights)
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        frozen: List[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad = False
        if self.frozen_stages >= 2:
            frozen.extend(self.layers[: self.frozen_stages - 1])
        for module in frozen:
            for p in module.parameters():
                p.requires_grad = False

    @property
    def size_divisibility(self) -> int:
        # The resolution is halved num_layers - 1 times after the patch embedding.
        return self.patch_embed.patch_size[0] * 2 ** (self.num_layers - 1)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """`Tensor[N, in_chans, H, W]` -> {"p0": `Tensor[N, embed_dim, H / 4, W / 4]`, ...}
        (strides for the default patch_size 4)."""
        x = self.patch_embed(x)
        if self.ape:
            # (1, C, Ph, Pw) resized to the token map -> (1, H, W, C)
            pos = F.interpolate(self.absolute_pos_embed, size=tuple(x.shape[1:3]), mode="bicubic")
            x = x + pos.permute(0, 2, 3, 1)
        x = self.pos_drop(x)
        outputs = {}
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            if i in self.out_indices:
                outputs[f"p{i}"] = getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous()
        return outputs
