"""Registers a tiny dense shapes dataset for the DenseText tests; listed in their IMPORTS."""
from d2mask.data.datasets import register_shapes

TRAIN, VAL = "dense_text_tiny_train", "dense_text_tiny_val"

_TINY = dict(image_size=64, min_objects=15, max_objects=25, object_size=(6, 12), max_occlusion=0.2)
register_shapes(TRAIN, num_images=2, seed=1, **_TINY)
register_shapes(VAL, num_images=1, seed=2, **_TINY)
