"""The data structures passed between the stages of a detector: boxes, instances, image batches, masks."""
from .boxes import (
    DEFAULT_MAX_CHUNK_ELEMENTS,
    Boxes,
    BoxMode,
    iter_pairwise_iou_chunks,
    matched_boxlist_iou,
    matched_pairwise_iou,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
)
from .image_list import ImageList
from .instances import Instances
from .keypoints import Keypoints, heatmaps_to_keypoints
from .masks import (
    BitMasks,
    PolygonMasks,
    polygon_area,
    polygons_to_bitmask,
    rasterize_polygons_within_box,
    rle_to_bitmask,
)

__all__ = [
    "BitMasks",
    "BoxMode",
    "Boxes",
    "DEFAULT_MAX_CHUNK_ELEMENTS",
    "ImageList",
    "Instances",
    "Keypoints",
    "PolygonMasks",
    "heatmaps_to_keypoints",
    "iter_pairwise_iou_chunks",
    "matched_boxlist_iou",
    "matched_pairwise_iou",
    "pairwise_intersection",
    "pairwise_ioa",
    "pairwise_iou",
    "polygon_area",
    "polygons_to_bitmask",
    "rasterize_polygons_within_box",
    "rle_to_bitmask",
]
