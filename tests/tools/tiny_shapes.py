"""Registers tiny shapes datasets when imported; train_net tests name this module in IMPORTS."""
from d2mask.data.datasets import register_shapes, register_shapes_coco

TRAIN, VAL = "train_net_tiny_train", "train_net_tiny_val"

register_shapes(TRAIN, num_images=8, seed=1, image_size=96, object_size=(24, 48), max_objects=3)
register_shapes(VAL, num_images=3, seed=2, image_size=96, object_size=(24, 48), max_objects=3)

# the same images with keypoints, for the keypoint R-CNN quick start
KEYPOINTS_TRAIN, KEYPOINTS_VAL = "train_net_tiny_keypoints_train", "train_net_tiny_keypoints_val"
register_shapes(KEYPOINTS_TRAIN, num_images=8, seed=1, image_size=96, object_size=(24, 48), max_objects=3, keypoints=True)
register_shapes(KEYPOINTS_VAL, num_images=3, seed=2, image_size=96, object_size=(24, 48), max_objects=3, keypoints=True)

# three COCO-like images (occluded shapes, some stored as RLE), for the main job's config
COCO_LIKE = "train_net_tiny_coco"
register_shapes_coco(COCO_LIKE, num_images=3, seed=2, image_size=96, object_size=(8, 135), min_area=6)
