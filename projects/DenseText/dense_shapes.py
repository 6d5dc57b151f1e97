"""Registers "dense_shapes_train" and "dense_shapes_val": the shapes dataset made crowded, with 80 to
150 shapes of 8 to 20 pixels on each 256-pixel image, standing in for text on a homework sheet.

Like the built-in shapes datasets, the images are generated on first use under `$D2MASK_DATASETS`
(about 40 s for both on one core) and reused afterwards.
"""
from d2mask.data.datasets import register_shapes

__all__ = ["DENSE_SHAPES", "TRAIN", "VAL"]

TRAIN, VAL = "dense_shapes_train", "dense_shapes_val"
# The generator's settings shared by both splits.
DENSE_SHAPES = dict(image_size=256, min_objects=80, max_objects=150, object_size=(8, 20), max_occlusion=0.2)

register_shapes(TRAIN, num_images=200, seed=101, **DENSE_SHAPES)
register_shapes(VAL, num_images=20, seed=102, **DENSE_SHAPES)
