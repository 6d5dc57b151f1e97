"""Box heads: the layers between the pooled region features and the box predictor.

Shape shorthand: `R` regions, `C` channels, `S` the pooled side.
"""
from typing import List

import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import nn

from d2mask.config import config_keys, configurable
from d2mask.layers import Conv2d, ShapeSpec, get_norm
from d2mask.utils.registry import Registry

__all__ = ["ROI_BOX_HEAD_REGISTRY", "build_box_head", "FastRCNNConvFCHead"]

ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_BOX_HEAD_REGISTRY.__doc__ = """
Box heads, named by MODEL.ROI_BOX_HEAD.NAME. An entry is called as `obj(cfg, input_shape)` with the
ShapeSpec of the pooled features (channels, height, width) and returns an nn.Module mapping
`Tensor[R, C, S, S]` to per-region features; the module has an `output_shape` ShapeSpec.
"""


@ROI_BOX_HEAD_REGISTRY.register()
class FastRCNNConvFCHead(nn.Sequential):
    """Convolutions then fully connected layers, each followed by ReLU.

    The FPN paper's "2fc" head has no conv and two 1024-d fully connected layers.
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, conv_dims: List[int], fc_dims: List[int], conv_norm: str = ""):
        """
        Args:
            input_shape: channels, height and width of the pooled features.
            conv_dims: output channels of each 3x3 conv (none for an empty list).
            fc_dims: output width of each fully connected layer (none for an empty list).
            conv_norm: normalisation of the convs, a `get_norm` name; "" for none.
        """
        super().__init__()
        if not conv_dims and not fc_dims:
            raise ValueError("FastRCNNConvFCHead needs at least one conv or fc layer (NUM_CONV + NUM_FC > 0)")
        for argument, key, dims in (("conv_dims", "CONV_DIM", conv_dims), ("fc_dims", "FC_DIM", fc_dims)):
            if not all(dim > 0 for dim in dims):
                raise ValueError(f"FastRCNNConvFCHead {argument} (MODEL.ROI_BOX_HEAD.{key}) must be > 0, got {list(dims)}")
        channels, height, width = input_shape.channels, input_shape.height, input_shape.width
        for k, dim in enumerate(conv_dims, start=1):
            conv = Conv2d(
                channels, dim, kernel_size=3, padding=1, bias=not conv_norm,
                norm=get_norm(conv_norm, dim), activation=F.relu_,
            )
            weight_init.c2_msra_fill(conv)
            self.add_module(f"conv{k}", conv)
            channels = dim
        if fc_dims:
            self.add_module("flatten", nn.Flatten())
            in_features = channels * height * width
            for k, dim in enumerate(fc_dims, start=1):
                fc = nn.Linear(in_features, dim)
                weight_init.c2_xavier_fill(fc)
                self.add_module(f"fc{k}", fc)
                self.add_module(f"fc_relu{k}", nn.ReLU(inplace=True))
                in_features = dim
            self._output_shape = ShapeSpec(channels=in_features)
        else:
            self._output_shape = ShapeSpec(channels=channels, height=height, width=width)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.ROI_BOX_HEAD
        return {
            "input_shape": input_shape,
            "conv_dims": [head.CONV_DIM] * head.NUM_CONV,
            "fc_dims": [head.FC_DIM] * head.NUM_FC,
            "conv_norm": head.NORM,
        }

    @property
    def output_shape(self) -> ShapeSpec:
        """The features per region: `ShapeSpec(channels=FC_DIM)` after fcs, else the conv map's shape."""
        return self._output_shape


def build_box_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """The box head named by `cfg.MODEL.ROI_BOX_HEAD.NAME`, built for pooled features of `input_shape`."""
    with config_keys(norm="MODEL.ROI_BOX_HEAD.NORM"):
        return ROI_BOX_HEAD_REGISTRY.get(cfg.MODEL.ROI_BOX_HEAD.NAME)(cfg, input_shape)
