"""The backbone registry and `build_backbone`."""
from typing import Optional

from d2mask.layers import ShapeSpec
from d2mask.utils.registry import Registry

from .backbone import Backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Functions that build a backbone, selected by MODEL.BACKBONE.NAME.

Each is called as `fn(cfg, input_shape: ShapeSpec)` and returns a `Backbone`.
"""


def build_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> Backbone:
    """Builds the backbone named by MODEL.BACKBONE.NAME.

    Args:
        cfg: the config.
        input_shape: the input images; by default as many channels as MODEL.PIXEL_MEAN has entries.
    """
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    name = cfg.MODEL.BACKBONE.NAME
    backbone = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(
            f"MODEL.BACKBONE.NAME '{name}' returned a {type(backbone).__name__}; a backbone builder must "
            f"return a d2mask.modeling.Backbone"
        )
    return backbone
