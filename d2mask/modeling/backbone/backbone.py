"""`Backbone`: the base class of every feature extractor a detector can be built on."""
from abc import ABCMeta, abstractmethod
from typing import Dict, List, Sequence

from torch import Tensor, nn

from d2mask.config import ConfigError
from d2mask.layers import ShapeSpec

__all__ = ["Backbone", "in_feature_shapes"]


def in_feature_shapes(key: str, names: Sequence[str], available: Dict[str, ShapeSpec]) -> List[ShapeSpec]:
    """The shapes of the backbone outputs `names` that a head reads (config key `key`), in order;
    a ConfigError when there are none or one is not a backbone output."""
    if not names or any(f not in available for f in names):
        raise ConfigError(f"{key} {list(names)}: each must be a backbone output; the backbone produces {list(available)}")
    return [available[f] for f in names]


class Backbone(nn.Module, metaclass=ABCMeta):
    """A network mapping an image batch `Tensor[N, C, H, W]` to named feature maps.

    Subclasses fill `_out_features` (names, in the order `forward` returns them),
    `_out_feature_channels` and `_out_feature_strides` (name -> int); `output_shape` reads them so
    the heads built on top know what they receive without running the network. A backbone with
    padding needs sets `_size_divisibility` and `_square_pad`, which the properties below report.
    """

    # Class-level defaults, so a subclass that never calls this __init__ still reads "no constraint".
    _size_divisibility: int = 0
    _square_pad: int = 0

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
        return self._size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        """How the input batch must be padded, generalising `size_divisibility` as in Detectron2:
        {"size_divisibility": D} (replaces `size_divisibility`) and/or {"square_size": S} (pad to
        S x S, when `_square_pad` > 0). Empty by default; read by `ImageList.from_tensors`."""
        return {"square_size": self._square_pad} if self._square_pad > 0 else {}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """{feature name: ShapeSpec(channels, stride)} for every feature `forward` returns."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
