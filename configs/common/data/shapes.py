"""Loaders of the built-in COCO-like shapes dataset ("shapes_coco_train/val", generated on first use,
no download): 256-pixel images, 4 per batch, as in configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml."""
from .coco import dataloader

dataloader.train.dataset.names = ["shapes_coco_train"]
dataloader.train.mapper.augmentations[0].short_edge_length = [256]
dataloader.train.mapper.augmentations[0].max_size = 256
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0

dataloader.test.dataset.names = ["shapes_coco_val"]
dataloader.test.mapper.augmentations[0].short_edge_length = 256
dataloader.test.mapper.augmentations[0].max_size = 256
dataloader.test.num_workers = 0
