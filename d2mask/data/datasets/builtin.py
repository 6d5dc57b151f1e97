"""Registers the datasets that come with d2mask; imported by `d2mask.data`.

"shapes_train" and "shapes_val" are sized for the quick start: a small R18-FPN Mask R-CNN trained for
about ten minutes on a laptop CPU reaches box and mask AP above 50 on them, and generating both takes
a few seconds.
"""
from .shapes import register_shapes

__all__ = ["register_all_builtins"]


def register_all_builtins() -> None:
    register_shapes("shapes_train", num_images=500, seed=1)
    register_shapes("shapes_val", num_images=50, seed=2)
