"""COCO loaders with ViTDet's large-scale jitter (Ghiasi et al., 2021): training images flipped,
resized to 0.1-2.0 times 1024 x 1024 and cropped to at most 1024 x 1024 (boxes recomputed from the
cropped masks); 64 RGB images per batch; test images resized to a longer side of 1024."""
from d2mask import model_zoo
from d2mask.config import LazyCall as L
from d2mask.data import transforms as T

image_size = 1024
dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),  # before the crop, as in ViTDet
    L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size),
    # No padding here: the model pads every batch to 1024 x 1024 (SimpleFeaturePyramid's square_pad).
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 64
dataloader.train.mapper.recompute_boxes = True

dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size),
]
