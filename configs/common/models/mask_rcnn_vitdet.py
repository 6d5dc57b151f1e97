"""Mask R-CNN with ViTDet's ViT-B backbone (Li et al., 2022), the model of Detectron2's
common/models/mask_rcnn_vitdet.py: mask_rcnn_fpn.py with its ResNet-FPN replaced by a plain ViT-B/16
under the simple feature pyramid, LN in the pyramid and the box and mask heads, two convolutions in
the RPN head and a 4-conv 1-fc box head. The input is RGB, normalised with ImageNet's statistics,
and padded to 1024 x 1024 (`square_pad`).

ViT-L and ViT-H change `model.backbone.net.embed_dim`, `depth`, `num_heads`, `drop_path_rate` and
`window_block_indexes` (see projects/ViTDet/configs/).
"""
from functools import partial

from torch import nn

from d2mask.config import LazyCall as L
from d2mask.modeling import SimpleFeaturePyramid, ViT
from d2mask.modeling.backbone.fpn import LastLevelMaxPool

from ..data.constants import constants
from .mask_rcnn_fpn import model

model.pixel_mean = constants["imagenet_rgb256_mean"]
model.pixel_std = constants["imagenet_rgb256_std"]
model.input_format = "RGB"

embed_dim, depth, num_heads, dp = 768, 12, 12, 0.1  # ViT-B
model.backbone = L(SimpleFeaturePyramid)(
    net=L(ViT)(
        img_size=1024,
        patch_size=16,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        drop_path_rate=dp,
        window_size=14,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        # Global attention in blocks 2, 5, 8 and 11; 14 x 14 windows in the others.
        window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],
        residual_block_indexes=[],
        use_rel_pos=True,
        out_feature="last_feat",
    ),
    in_feature="${.net.out_feature}",
    out_channels=256,
    scale_factors=(4.0, 2.0, 1.0, 0.5),  # p2-p5 from the stride-16 output; p6 from the top block
    top_block=L(LastLevelMaxPool)(),
    norm="LN",
    square_pad=1024,
)

model.roi_heads.box_head.conv_norm = model.roi_heads.mask_head.conv_norm = "LN"
model.proposal_generator.head.conv_dims = [-1, -1]
model.roi_heads.box_head.conv_dims = [256, 256, 256, 256]
model.roi_heads.box_head.fc_dims = [1024]
