"""Registers the semantic and panoptic views of the tiny shapes datasets of tiny_shapes.py when
imported; the train_net tests of the segmentation configs name this module in IMPORTS."""
from d2mask.data.datasets.shapes_segmentation import register_shapes_panoptic_separated, register_shapes_sem_seg
from tests.tools.tiny_shapes import VAL

SEM_SEG_VAL, PANOPTIC_VAL = "train_net_tiny_sem_seg_val", "train_net_tiny_val_panoptic_separated"

register_shapes_sem_seg(SEM_SEG_VAL, VAL)
register_shapes_panoptic_separated(PANOPTIC_VAL, VAL)
