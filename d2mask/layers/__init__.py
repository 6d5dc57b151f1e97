"""Neural-network layers shared by the models: convolutions with norms, ROIAlign, NMS, shape specs."""
from .batch_norm import NORM_NAMES, FrozenBatchNorm2d, get_norm
from .nms import batched_nms, nms
from .roi_align import ROIAlign
from .shape_spec import ShapeSpec
from .wrappers import Conv2d, ConvTranspose2d, cat, interpolate, nonzero_tuple

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "FrozenBatchNorm2d",
    "NORM_NAMES",
    "ROIAlign",
    "ShapeSpec",
    "batched_nms",
    "cat",
    "get_norm",
    "interpolate",
    "nms",
    "nonzero_tuple",
]
