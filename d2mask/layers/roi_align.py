"""`ROIAlign` as a module, over torchvision's kernel."""
from typing import Tuple, Union

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

__all__ = ["ROIAlign"]


class ROIAlign(nn.Module):
    """Bilinearly samples a fixed-size feature grid from each region of interest (Mask R-CNN, He et al.
    2017, section 3).

    With `aligned=True` box corners are treated as continuous coordinates and shifted by half a pixel
    before sampling, so a box maps exactly onto the pixels it covers; `aligned=False` reproduces the
    original, half-pixel-offset implementation.
    """

    def __init__(
        self,
        output_size: Union[int, Tuple[int, int]],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = True,
    ):
        """
        Args:
            output_size: (height, width) of each output grid, or one int for both.
            spatial_scale: the factor from image coordinates to this feature map's (1 / stride).
            sampling_ratio: sample points per output cell side; 0 adapts it to the region size.
            aligned: see the class docstring.
        """
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        """
        Args:
            input: `Tensor[N, C, H, W]` feature maps.
            rois: `Tensor[K, 5]`, each (batch index, x0, y0, x1, y1) in image coordinates.

        Returns:
            `Tensor[K, C, output_h, output_w]`.
        """
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(
                f"ROIAlign expects rois of shape [K, 5] (batch index, x0, y0, x1, y1), "
                f"got {tuple(rois.shape)}"
            )
        # Box coordinates are never rounded to the features' precision: in bfloat16 a coordinate near
        # 1333 px moves by up to 4 px, in float16 by 0.5 px. Low-precision features are sampled in
        # the boxes' dtype instead (as torchvision's autocast kernel does) and the result cast back.
        dtype = torch.promote_types(input.dtype, rois.dtype)
        output = roi_align(
            input.to(dtype), rois.to(dtype), self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )
        return output.to(input.dtype)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
