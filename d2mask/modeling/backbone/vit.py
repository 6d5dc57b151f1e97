"""ViTDet (Li et al., 2022, "Exploring Plain Vision Transformer Backbones for Object Detection"):
a plain ViT with window attention in most blocks, and the simple feature pyramid built from its
single stride-16 output.

Shape shorthand: N images, H x W tokens of C channels (channels-last `Tensor[N, H, W, C]`
inside the transformer), nH attention heads.
"""
import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from d2mask.layers import CNNBlockBase, Conv2d, get_norm

from .backbone import Backbone
from .fpn import log2_stages, pyramid_strides, top_block_levels
from .utils import (
    Mlp,
    PatchEmbed,
    decomposed_rel_pos_bias,
    get_abs_pos,
    init_transformer_weights,
    window_partition,
    window_unpartition,
)

__all__ = ["ViT", "SimpleFeaturePyramid", "get_vit_lr_decay_rate"]


class Attention(nn.Module):
    """Multi-head self-attention over an H x W token map, optionally with MViTv2's decomposed
    relative position embeddings (`rel_pos_h`, `rel_pos_w`)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: Optional[Tuple[int, int]] = None,
    ):
        """
        Args:
            dim: channels C of the tokens.
            num_heads: nH; C must be a multiple of it.
            qkv_bias: whether the query/key/value projection has a bias.
            use_rel_pos: add relative position embeddings to the attention logits.
            rel_pos_zero_init: start them at zero (else a truncated normal of std 0.02).
            input_size: (H, W) the embedding tables are sized for (others are interpolated).
        """
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, H, W, C]` -> `Tensor[N, H, W, C]`."""
        n, h, w, c = x.shape
        # (N, H, W, 3C) -> (N, H*W, 3, nH, C/nH) -> (3, N, nH, H*W, C/nH)
        q, k, v = self.qkv(x).reshape(n, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.use_rel_pos:
            # The embeddings meet the unscaled queries; (N*nH, H*W, H*W) -> (N, nH, H*W, H*W)
            bias = decomposed_rel_pos_bias(
                q.reshape(n * self.num_heads, h * w, -1), self.rel_pos_h, self.rel_pos_w, (h, w), (h, w)
            ).view(n, self.num_heads, h * w, h * w)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        # (N, nH, H*W, C/nH) -> (N, H, W, nH, C/nH) -> (N, H, W, C)
        x = x.view(n, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(n, h, w, c)
        return self.proj(x)


class ResBottleneckBlock(CNNBlockBase):
    """A residual 1x1-3x3-1x1 bottleneck without the last activation, with "LN" norms; inserted
    after some transformer blocks to propagate information across windows. The last norm starts at
    zero so the block starts as the identity."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bottleneck_channels: int,
        norm: str = "LN",
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ):
        super().__init__(in_channels, out_channels, 1)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, bias=False)
        self.norm1 = get_norm(norm, bottleneck_channels)
        self.act1 = act_layer()
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, 3, padding=1, bias=False)
        self.norm2 = get_norm(norm, bottleneck_channels)
        self.act2 = act_layer()
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.norm3 = get_norm(norm, out_channels)
        for conv in (self.conv1, self.conv2, self.conv3):
            weight_init.c2_msra_fill(conv)
        nn.init.zeros_(self.norm3.weight)
        nn.init.zeros_(self.norm3.bias)

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, C, H, W]` -> `Tensor[N, C, H, W]`."""
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.norm2(self.conv2(out)))
        return x + self.norm3(self.conv3(out))


class Block(nn.Module):
    """A pre-norm transformer block whose attention is global or within windows, optionally
    followed by a `ResBottleneckBlock`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        use_residual_block: bool = False,
        input_size: Optional[Tuple[int, int]] = None,
    ):
        """
        Args:
            dim, num_heads, qkv_bias, use_rel_pos, rel_pos_zero_init: as `Attention`'s.
            mlp_ratio: hidden channels of the MLP per channel of the tokens.
            drop_path: probability of dropping the residual branches of an image (stochastic depth).
            norm_layer: builds the norm of a channel count.
            act_layer: builds the activation.
            window_size: attention within window_size x window_size windows; 0: global attention.
            use_residual_block: follow the block with a `ResBottleneckBlock` of dim // 2 channels.
            input_size: (H, W) of the token map, sizing the relative position tables of global attention.
        """
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        # Per image, as timm's DropPath.
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        self.window_size = window_size
        self.use_residual_block = use_residual_block
        if use_residual_block:
            self.residual = ResBottleneckBlock(dim, dim, dim // 2, norm="LN", act_layer=act_layer)

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, H, W, C]` -> `Tensor[N, H, W, C]`."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1:3]
            x, padded_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, padded_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.use_residual_block:
            # The convolutions work channels-first: (N, H, W, C) -> (N, C, H, W) and back.
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class ViT(Backbone):
    """The plain Vision Transformer of ViTDet: patches of `patch_size`, `depth` blocks at one
    resolution, one output feature `out_feature` of stride `patch_size` and `embed_dim` channels."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        window_block_indexes: Sequence[int] = (),
        residual_block_indexes: Sequence[int] = (),
        use_act_checkpoint: bool = False,
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        out_feature: str = "last_feat",
    ):
        """
        Args:
            img_size: side of the (square-padded) input, sizing the relative position tables.
            patch_size: side of a patch: the stride of the output.
            in_chans: channels of the input image.
            embed_dim: channels of the tokens and of the output.
            depth: number of transformer blocks.
            num_heads: attention heads per block; embed_dim must be a multiple of it.
            mlp_ratio, qkv_bias, norm_layer, act_layer, use_rel_pos, rel_pos_zero_init: as `Block`'s.
            drop_path_rate: stochastic depth of the last block, rising linearly from 0 at the first.
            use_abs_pos: add absolute position embeddings (`pos_embed`, sized as in pre-training and
                resized to the input).
            window_size: the window side of the blocks in `window_block_indexes`; the others attend globally.
            window_block_indexes: indexes of the blocks with window attention.
            residual_block_indexes: indexes of the blocks followed by a `ResBottleneckBlock`.
            use_act_checkpoint: recompute each block's activations in the backward pass (saves
                memory during training).
            pretrain_img_size: image side of pre-training, sizing `pos_embed`.
            pretrain_use_cls_token: `pos_embed` has a leading class-token embedding (not used here).
            out_feature: the name of the output.
        """
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"ViT embed_dim {embed_dim} must be a multiple of num_heads {num_heads}")
        for name, indexes in (
            ("window_block_indexes", window_block_indexes),
            ("residual_block_indexes", residual_block_indexes),
        ):
            if any(not 0 <= i < depth for i in indexes):
                raise ValueError(
                    f"ViT {name} {list(indexes)}: each must be a block index in [0, {depth - 1}] (depth {depth})"
                )
        if window_block_indexes and window_size <= 0:
            raise ValueError(
                f"ViT window_size {window_size}: blocks {list(window_block_indexes)} use windows, it must be > 0"
            )
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.use_act_checkpoint = use_act_checkpoint
        patch = (patch_size, patch_size)
        self.patch_embed = PatchEmbed(kernel_size=patch, stride=patch, in_chans=in_chans, embed_dim=embed_dim)
        if use_abs_pos:
            num_positions = (pretrain_img_size // patch_size) ** 2 + int(pretrain_use_cls_token)
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        else:
            self.pos_embed = None

        drop_path_rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        tokens = img_size // patch_size
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=drop_path_rates[i],
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=window_size if i in window_block_indexes else 0,
                use_residual_block=i in residual_block_indexes,
                input_size=(tokens, tokens),
            )
            for i in range(depth)
        )
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: embed_dim}
        self._out_feature_strides = {out_feature: patch_size}

        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """`Tensor[N, in_chans, H, W]` -> {out_feature: `Tensor[N, embed_dim, H / patch_size, W / patch_size]`}."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        for block in self.blocks:
            if self.use_act_checkpoint and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return {self._out_features[0]: x.permute(0, 3, 1, 2)}


def _simple_pyramid_stage(scale: float, dim: int, out_channels: int, norm: str) -> nn.Sequential:
    """One level of the simple feature pyramid: resampling of the `dim`-channel input by `scale`
    (two 2x transposed convolutions, one, none, or a 2x2 max-pool), then a 1x1 and a 3x3 conv to
    `out_channels`, as Detectron2 numbers the layers."""
    if scale == 4.0:
        layers = [
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            get_norm(norm, dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        ]
        dim = dim // 4
    elif scale == 2.0:
        layers = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
        dim = dim // 2
    elif scale == 1.0:
        layers = []
    else:  # 0.5, the constructor checked
        layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
    use_bias = norm == ""
    layers += [
        Conv2d(dim, out_channels, kernel_size=1, bias=use_bias, norm=get_norm(norm, out_channels)),
        Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=use_bias, norm=get_norm(norm, out_channels)),
    ]
    return nn.Sequential(*layers)


class SimpleFeaturePyramid(Backbone):
    """ViTDet's simple feature pyramid: every level is resampled from the one feature map
    `in_feature` of `net` (no top-down pathway); outputs "p{s}" of stride 2**s, as FPN's."""

    _SCALES = (4.0, 2.0, 1.0, 0.5)

    def __init__(
        self,
        net: Backbone,
        in_feature: str,
        out_channels: int,
        scale_factors: Sequence[float],
        top_block: Optional[nn.Module] = None,
        norm: str = "LN",
        square_pad: int = 0,
    ):
        """
        Args:
            net: the backbone whose feature the pyramid is built from.
            in_feature: the name of that feature.
            out_channels: channels of every level.
            scale_factors: one level per factor, finest first, each half the previous: 4.0, 2.0,
                1.0 or 0.5 (upsampling > 1 > downsampling).
            top_block: a module with attributes `num_levels` and `in_feature` (a feature of `net`
                or a level, e.g. "p5") mapping that feature to `num_levels` coarser levels.
            norm: normalisation of the convolutions ("LN" in ViTDet; "" for none, with biases).
            square_pad: when > 0, input batches are padded to this square size (`padding_constraints`).
        """
        super().__init__()
        if not isinstance(net, Backbone):
            raise ValueError(f"SimpleFeaturePyramid net must be a Backbone, got {type(net).__name__}")
        input_shapes = net.output_shape()
        if in_feature not in input_shapes:
            raise ValueError(
                f"SimpleFeaturePyramid in_feature {in_feature!r} is not an output of net; "
                f"it produces {list(input_shapes)}"
            )
        unknown = [s for s in scale_factors if s not in self._SCALES]
        if unknown or not scale_factors:
            raise ValueError(
                f"SimpleFeaturePyramid scale_factors {list(scale_factors)}: each must be one of {list(self._SCALES)}"
            )
        stride = input_shapes[in_feature].stride
        strides = [int(stride / scale) for scale in scale_factors]
        what = f"SimpleFeaturePyramid scale_factors {list(scale_factors)} (input stride {stride})"
        stages = log2_stages(strides, what)

        self.scale_factors = tuple(scale_factors)
        dim = input_shapes[in_feature].channels
        self.stages = []
        for scale, stage in zip(scale_factors, stages):
            layers = _simple_pyramid_stage(scale, dim, out_channels, norm)
            self.add_module(f"simfp_{stage}", layers)
            self.stages.append(layers)
        self.net = net
        self.in_feature = in_feature
        self.top_block = top_block
        self._square_pad = square_pad

        self._out_feature_strides = pyramid_strides(
            stages, top_block, list(input_shapes), "SimpleFeaturePyramid", "net"
        )
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {name: out_channels for name in self._out_features}
        self._size_divisibility = strides[-1]

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """`Tensor[N, C, H, W]` -> {"p2": `Tensor[N, out_channels, H / 4, W / 4]`, ...}, finest first."""
        bottom_up_features = self.net(x)
        features = bottom_up_features[self.in_feature]
        results = [stage(features) for stage in self.stages]
        if self.top_block is not None:
            results.extend(top_block_levels(self.top_block, bottom_up_features, dict(zip(self._out_features, results))))
        return dict(zip(self._out_features, results))


def get_vit_lr_decay_rate(name: str, lr_decay_rate: float = 1.0, num_layers: int = 12) -> float:
    """ViTDet's layer-wise learning-rate decay, a `lr_factor_func` of `get_default_optimizer_params`:
    the factor `lr_decay_rate ** (num_layers + 1 - layer_id)` of parameter `name`, where layer_id is
    0 for the backbone's patch and position embeddings, i + 1 for its block i (not the block's
    residual conv block), and num_layers + 1 (factor 1) for everything else (the pyramid, the heads).

    Args:
        name: the parameter's full name in the model ("backbone.net.blocks.3.attn.qkv.weight").
        lr_decay_rate: the decay per block.
        num_layers: the number of ViT blocks.
    """
    layer_id = num_layers + 1
    if name.startswith("backbone"):
        if ".pos_embed" in name or ".patch_embed" in name:
            layer_id = 0
        elif ".blocks." in name and ".residual." not in name:
            layer_id = int(name.split(".blocks.", 1)[1].split(".", 1)[0]) + 1
    return lr_decay_rate ** (num_layers + 1 - layer_id)
