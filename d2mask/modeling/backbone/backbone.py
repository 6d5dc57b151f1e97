"""`Backbone`: the base class of every feature extractor a detector can be built on."""
from abc import ABCMeta, abstractmethod
from typing import Dict

from torch import Tensor, nn

from d2mask.layers import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """A network mapping an image batch `Tensor[N, C, H, W]` to named feature maps.

    Subclasses fill `_out_features` (names, in the order `forward` returns them),
    `_out_feature_channels` and `_out_feature_strides` (name -> int); `output_shape` reads them so
    the heads built on top know what they receive without running the network.
    """

    def __init__(self):
        super().__init__()
        self._out_features: list = []
        self._out_feature_channels: Dict[str, int] = {}
        self._out_feature_strides: Dict[str, int] = {}

    @abstractmethod
    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """Maps `Tensor[N, C, H, W]` to {feature name: `Tensor[N, C_f, H / stride_f, W / stride_f]`}."""

    @property
    def size_divisibility(self) -> int:
        """Input height and width must be multiples of this for the features to line up (0: any size)."""
        return 0

    @property
    def padding_constraints(self) -> Dict[str, int]:
        """How the input batch must be padded, generalising `size_divisibility` as in Detectron2:
        {"size_divisibility": D} (replaces `size_divisibility`) and/or {"square_size": S} (pad to
        S x S). Empty by default; read by `ImageList.from_tensors`."""
        return {}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """{feature name: ShapeSpec(channels, stride)} for every feature `forward` returns."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
