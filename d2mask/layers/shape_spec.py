"""`ShapeSpec`: what one module tells the next about a tensor it will produce."""
from dataclasses import dataclass
from typing import Optional

__all__ = ["ShapeSpec"]


@dataclass
class ShapeSpec:
    """The shape of a feature map, without the batch: channels, height, width and its stride relative
    to the input image. Any field may be unknown (None); builders fill in what they know."""

    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    stride: Optional[int] = None
