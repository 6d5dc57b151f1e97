"""MViTv2 (Li et al., 2022, "MViTv2: Improved Multiscale Vision Transformers for Classification and
Detection"): a transformer whose stages pool the queries (halving the resolution) and the keys and
values (cheaper attention), with decomposed relative position embeddings and residual pooling.

Shape shorthand: N images, H x W tokens of C channels (channels-last `Tensor[N, H, W, C]`), nH
attention heads, B = N * nH (x windows) attention batches.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from .backbone import Backbone
from .utils import (
    Mlp,
    PatchEmbed,
    decomposed_rel_pos_bias,
    get_abs_pos,
    init_transformer_weights,
    window_partition,
    window_unpartition,
)

__all__ = ["MViT"]


def attention_pool(x: Tensor, pool: nn.Module, norm: Optional[nn.Module] = None) -> Tensor:
    """Applies a channels-first pooling module to a channels-last map, then `norm` if given:
    `Tensor[B, H, W, C]` -> `Tensor[B, H', W', C]`."""
    x = pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return norm(x) if norm is not None else x


class MultiScaleAttention(nn.Module):
    """Multi-head attention with pooled queries, keys and values (depthwise convolutions
    `pool_q/k/v`, each followed by a norm), optionally within windows, with relative position
    embeddings and the pooled query added back to the output (residual pooling)."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        qkv_bias: bool = True,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        pool_kernel: Tuple[int, int] = (3, 3),
        stride_q: int = 1,
        stride_kv: int = 1,
        residual_pooling: bool = True,
        window_size: int = 0,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: Optional[Tuple[int, int]] = None,
    ):
        """
        Args:
            dim: channels of the input tokens.
            dim_out: channels of the output; a multiple of `num_heads`.
            num_heads: nH.
            qkv_bias: whether the query/key/value projection has a bias.
            norm_layer: builds the norm of the pooled queries, keys and values.
            pool_kernel: kernel of the pooling convolutions.
            stride_q: stride of the query pooling (the output's resolution is divided by it).
            stride_kv: stride of the key/value pooling.
            residual_pooling: add the pooled queries to the attention output.
            window_size: attention within windows of this side (before pooling); 0: global.
            use_rel_pos: add relative position embeddings to the attention logits.
            rel_pos_zero_init: start them at zero (else a truncated normal of std 0.02).
            input_size: (H, W) of the input, square, sizing the embedding tables.
        """
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim_out // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim_out * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)

        def pool(stride: int) -> nn.Conv2d:
            padding = [k // 2 for k in pool_kernel]
            return nn.Conv2d(
                head_dim, head_dim, pool_kernel, stride=stride, padding=padding, groups=head_dim, bias=False
            )

        self.pool_q, self.norm_q = pool(stride_q), norm_layer(head_dim)
        self.pool_k, self.norm_k = pool(stride_kv), norm_layer(head_dim)
        self.pool_v, self.norm_v = pool(stride_kv), norm_layer(head_dim)
        self.window_size = window_size
        if window_size:
            self.q_win_size = window_size // stride_q
            self.kv_win_size = window_size // stride_kv
        self.residual_pooling = residual_pooling
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None or input_size[0] != input_size[1]:
                raise ValueError(f"MultiScaleAttention with use_rel_pos needs a square input_size, got {input_size}")
            size = input_size[0]
            num_offsets = 2 * max(size // stride_q, size // stride_kv) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(num_offsets, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(num_offsets, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, H, W, dim]` -> `Tensor[N, H / stride_q, W / stride_q, dim_out]` (rounded up)."""
        n, h, w, _ = x.shape
        # (N, H, W, 3*dim_out) -> (3, N, nH, H, W, C/nH) -> 3 x (N*nH, H, W, C/nH)
        qkv = self.qkv(x).reshape(n, h, w, 3, self.num_heads, -1).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv.reshape(3, n * self.num_heads, h, w, -1).unbind(0)
        q = attention_pool(q, self.pool_q, self.norm_q)
        k = attention_pool(k, self.pool_k, self.norm_k)
        v = attention_pool(v, self.pool_v, self.norm_v)

        pooled_q = q
        if self.window_size:
            q, q_padded_hw = window_partition(q, self.q_win_size)
            k, _ = window_partition(k, self.kv_win_size)
            v, _ = window_partition(v, self.kv_win_size)
            q_hw, kv_hw = (self.q_win_size, self.q_win_size), (self.kv_win_size, self.kv_win_size)
        else:
            q_hw, kv_hw = tuple(q.shape[1:3]), tuple(k.shape[1:3])
        # (B, h, w, C/nH) -> (B, h*w, C/nH)
        q = q.reshape(q.shape[0], q_hw[0] * q_hw[1], -1)
        k = k.reshape(k.shape[0], kv_hw[0] * kv_hw[1], -1)
        v = v.reshape(v.shape[0], kv_hw[0] * kv_hw[1], -1)
        bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, q_hw, kv_hw) if self.use_rel_pos else None
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        x = x.view(x.shape[0], q_hw[0], q_hw[1], -1)
        if self.window_size:
            x = window_unpartition(x, self.q_win_size, q_padded_hw, tuple(pooled_q.shape[1:3]))
        if self.residual_pooling:
            x = x + pooled_q

        # (N*nH, H', W', C/nH) -> (N, H', W', nH, C/nH) -> (N, H', W', dim_out)
        h, w = x.shape[1:3]
        x = x.view(n, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(n, h, w, -1)
        return self.proj(x)


class MultiScaleBlock(nn.Module):
    """A pre-norm transformer block around `MultiScaleAttention`; where the channels change the
    shortcut is projected (`proj`), where the queries are pooled it is max-pooled (`pool_skip`)."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        qkv_pool_kernel: Tuple[int, int] = (3, 3),
        stride_q: int = 1,
        stride_kv: int = 1,
        residual_pooling: bool = True,
        window_size: int = 0,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: Optional[Tuple[int, int]] = None,
    ):
        """
        Args:
            dim, dim_out, num_heads, qkv_bias, norm_layer, stride_q, stride_kv, residual_pooling,
                window_size, use_rel_pos, rel_pos_zero_init, input_size: as `MultiScaleAttention`'s.
            mlp_ratio: hidden channels of the MLP per output channel.
            drop_path: probability of dropping the residual branches of an image (stochastic depth).
            act_layer: builds the MLP's activation.
            qkv_pool_kernel: `MultiScaleAttention`'s pool_kernel.
        """
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = MultiScaleAttention(
            dim,
            dim_out,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            norm_layer=norm_layer,
            pool_kernel=qkv_pool_kernel,
            stride_q=stride_q,
            stride_kv=stride_kv,
            residual_pooling=residual_pooling,
            window_size=window_size,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size,
        )
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.norm2 = norm_layer(dim_out)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), dim_out, act_layer=act_layer)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        if stride_q > 1:
            kernel_skip = stride_q + 1
            self.pool_skip = nn.MaxPool2d(kernel_skip, stride_q, kernel_skip // 2, ceil_mode=False)

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, H, W, dim]` -> `Tensor[N, H / stride_q, W / stride_q, dim_out]`."""
        x_norm = self.norm1(x)
        x_block = self.attn(x_norm)
        if hasattr(self, "proj"):
            # The projected shortcut starts from the normalised input, as in MViTv2.
            x = self.proj(x_norm)
        if hasattr(self, "pool_skip"):
            x = attention_pool(x, self.pool_skip)
        x = x + self.drop_path(x_block)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MViT(Backbone):
    """The MViTv2 backbone: stages of blocks ending at `last_block_indexes`; the first block of
    each later stage halves the resolution and doubles the channels and heads. Outputs "scale2",
    "scale3", ... (strides patch_stride, 2x that, ...), each after its own norm `scale{i}_norm`.

    The first stage attends within windows (`adaptive_window_size`, halved with the resolution);
    the last block of the second and third stage and the whole fourth attend globally.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_kernel: Tuple[int, int] = (7, 7),
        patch_stride: Tuple[int, int] = (4, 4),
        patch_padding: Tuple[int, int] = (3, 3),
        in_chans: int = 3,
        embed_dim: int = 96,
        depth: int = 16,
        num_heads: int = 1,
        last_block_indexes: Sequence[int] = (0, 2, 11, 15),
        qkv_pool_kernel: Tuple[int, int] = (3, 3),
        adaptive_kv_stride: int = 4,
        adaptive_window_size: int = 56,
        residual_pooling: bool = True,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        use_abs_pos: bool = False,
        use_rel_pos: bool = True,
        rel_pos_zero_init: bool = True,
        use_act_checkpoint: bool = False,
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        out_features: Sequence[str] = ("scale2", "scale3", "scale4", "scale5"),
    ):
        """
        Args:
            img_size: side of the input, sizing the relative position tables.
            patch_kernel, patch_stride, patch_padding: the patch-embedding convolution.
            in_chans: channels of the input image.
            embed_dim: channels of the first stage.
            depth: number of blocks.
            num_heads: attention heads of the first stage.
            last_block_indexes: index of the last block of each stage, increasing (at least three stages).
            qkv_pool_kernel: kernel of the query/key/value pooling.
            adaptive_kv_stride: key/value pooling stride of the first stage, halved at every stage.
            adaptive_window_size: window side of the first stage.
            residual_pooling, qkv_bias, mlp_ratio, norm_layer, act_layer, use_rel_pos,
                rel_pos_zero_init: as `MultiScaleBlock`'s.
            drop_path_rate: stochastic depth of the last block, rising linearly from 0 at the first.
            use_abs_pos: add absolute position embeddings sized as in pre-training.
            use_act_checkpoint: recompute each block's activations in the backward pass.
            pretrain_img_size: image side of pre-training, sizing `pos_embed`.
            pretrain_use_cls_token: `pos_embed` has a leading class-token embedding.
            out_features: the stage outputs to return, among "scale2", ... "scale{len(last_block_indexes) + 1}".
        """
        super().__init__()
        last = list(last_block_indexes)
        if len(last) < 3 or any(b <= a for a, b in zip(last, last[1:])) or last[0] < 0 or last[-1] >= depth:
            raise ValueError(
                f"MViT last_block_indexes {last}: at least three increasing block indexes in [0, {depth - 1}] "
                f"(depth {depth})"
            )
        names = [f"scale{stage}" for stage in range(2, 2 + len(last))]
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(f"MViT out_features {list(out_features)}: each must be one of {names}")
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.use_act_checkpoint = use_act_checkpoint
        self.patch_embed = PatchEmbed(
            kernel_size=patch_kernel, stride=patch_stride, padding=patch_padding, in_chans=in_chans, embed_dim=embed_dim
        )
        if use_abs_pos:
            num_patches = (pretrain_img_size // patch_stride[0]) * (pretrain_img_size // patch_stride[1])
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + int(pretrain_use_cls_token), embed_dim))
        else:
            self.pos_embed = None

        drop_path_rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        dim_out = embed_dim
        stride_kv = adaptive_kv_stride
        window_size = adaptive_window_size
        input_size = (img_size // patch_stride[0], img_size // patch_stride[1])
        stride = patch_stride[0]
        self._out_feature_strides, self._out_feature_channels = {}, {}
        self._outputs_after = {}  # block index -> output name
        self.blocks = nn.ModuleList()
        for i in range(depth):
            first_of_stage = i - 1 in last
            self.blocks.append(
                MultiScaleBlock(
                    dim=embed_dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=drop_path_rates[i],
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    qkv_pool_kernel=qkv_pool_kernel,
                    stride_q=2 if first_of_stage else 1,
                    # The global blocks ending stages 2 and 3 pool the keys and values twice as much.
                    stride_kv=stride_kv * 2 if i in (last[1], last[2]) else stride_kv,
                    residual_pooling=residual_pooling,
                    window_size=0 if i in last[1:] else window_size,
                    use_rel_pos=use_rel_pos,
                    rel_pos_zero_init=rel_pos_zero_init,
                    input_size=input_size,
                )
            )
            embed_dim = dim_out
            if i in last:
                name = names[last.index(i)]
                if name in out_features:
                    self._out_feature_channels[name] = dim_out
                    self._out_feature_strides[name] = stride
                    self._outputs_after[i] = name
                    self.add_module(f"{name}_norm", norm_layer(dim_out))
                dim_out *= 2
                num_heads *= 2
                stride_kv = max(stride_kv // 2, 1)
                stride *= 2
            if first_of_stage:
                window_size //= 2
                input_size = (input_size[0] // 2, input_size[1] // 2)
        self._out_features = list(out_features)

        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """`Tensor[N, in_chans, H, W]` -> {"scale2": `Tensor[N, embed_dim, H / 4, W / 4]`, ...}
        (strides for the default patch_stride 4)."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        outputs = {}
        for i, block in enumerate(self.blocks):
            if self.use_act_checkpoint and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in self._outputs_after:
                name = self._outputs_after[i]
                outputs[name] = getattr(self, f"{name}_norm")(x).permute(0, 3, 1, 2)
        return {name: outputs[name] for name in self._out_features}
