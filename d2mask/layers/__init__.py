"""Neural-network layers shared by the models: convolutions with norms, ROIAlign, NMS, shape specs."""
from .batch_norm import NORM_NAMES, CycleBatchNormList, FrozenBatchNorm2d, LayerNorm, NaiveSyncBatchNorm, get_norm
from .aspp import ASPP
from .blocks import CNNBlockBase, DepthwiseSeparableConv2d
from .deform_conv import DeformConv, ModulatedDeformConv
from .mask_ops import paste_masks_in_image
from .nms import batched_nms, nms
from .roi_align import ROIAlign
from .shape_spec import ShapeSpec
from .wrappers import Conv2d, ConvTranspose2d, bincount_bounded, cat, interpolate, nonzero_tuple, shapes_to_tensor

__all__ = [
    "ASPP",
    "CNNBlockBase",
    "Conv2d",
    "ConvTranspose2d",
    "CycleBatchNormList",
    "DeformConv",
    "DepthwiseSeparableConv2d",
    "FrozenBatchNorm2d",
    "LayerNorm",
    "ModulatedDeformConv",
    "NaiveSyncBatchNorm",
    "NORM_NAMES",
    "ROIAlign",
    "ShapeSpec",
    "batched_nms",
    "bincount_bounded",
    "cat",
    "get_norm",
    "interpolate",
    "nms",
    "nonzero_tuple",
    "paste_masks_in_image",
    "shapes_to_tensor",
]
