"""`ROIPooler`: ROIAlign over a feature pyramid, each box read from the level that suits its size.

Shape shorthand: `N` images, `L` pyramid levels, `R` boxes over all images, `C` channels,
`S` the pooled side (POOLER_RESOLUTION).
"""
import math
from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from d2mask.config import ArgumentError, config_keys
from d2mask.layers import ROIAlign, bincount_bounded, nonzero_tuple
from d2mask.structures import Boxes

__all__ = ["ROIPooler", "assign_boxes_to_levels", "convert_boxes_to_pooler_format", "roi_pooler_from_config"]

# ROIAlign is the original, half-pixel-offset variant; ROIAlignV2 samples at the exact box coordinates.
_ALIGNED_BY_POOLER_TYPE = {"ROIAlign": False, "ROIAlignV2": True}


def assign_boxes_to_levels(
    box_lists: List[Boxes],
    min_level: int,
    max_level: int,
    canonical_box_size: int,
    canonical_level: int,
) -> Tensor:
    """The pyramid level each box is pooled from: Eq. (1) of the FPN paper (Lin et al. 2017),
    `floor(canonical_level + log2(sqrt(area) / canonical_box_size))`, clamped to the pyramid.

    Args:
        box_lists: the boxes of each image.
        min_level, max_level: the finest and coarsest level of the pyramid (e.g. 2 and 5 for P2-P5).
        canonical_box_size: the box side (input pixels) that maps to `canonical_level` (224, ImageNet's
            image size, in the paper).
        canonical_level: the level of a canonical box (4 in the paper).

    Returns:
        `Tensor[R]` int64: for each box, its level minus `min_level` (an index into the pooler's levels).
    """
    sizes = torch.cat([boxes.area() for boxes in box_lists]).sqrt()
    # An empty box has log2(0) = -inf and lands on the finest level after the clamp.
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size))
    return (levels.clamp(min=min_level, max=max_level) - min_level).to(torch.int64)


def convert_boxes_to_pooler_format(box_lists: List[Boxes]) -> Tensor:
    """`Tensor[R, 5]` rows (image index, x0, y0, x1, y1): the box lists of N images in ROIAlign's layout."""
    boxes = torch.cat([b.tensor for b in box_lists], dim=0)
    # `torch.full` sized by len(b), not a tensor of the lengths: a traced model then counts its boxes.
    image_index = torch.cat(
        [torch.full((len(b), 1), i, device=boxes.device, dtype=boxes.dtype) for i, b in enumerate(box_lists)]
    )
    return torch.cat([image_index, boxes], dim=1)


class ROIPooler(nn.Module):
    """Pools an `S x S` feature grid for each box from a multi-level feature map with ROIAlign.

    With several levels, each box is pooled from the level given by `assign_boxes_to_levels`; with
    one level (a C4 backbone), every box is pooled from it.
    """

    def __init__(
        self,
        output_size: Union[int, Tuple[int, int]],
        scales: Sequence[float],
        sampling_ratio: int,
        pooler_type: str,
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ):
        """
        Args:
            output_size: S, or (height, width) of the pooled grid.
            scales: for each level, finest first, 1 / stride of its feature map. Each must be a power
                of 2 and each level twice as coarse as the previous one.
            sampling_ratio: ROIAlign samples per bin side; 0 adapts it to the box size.
            pooler_type: "ROIAlign" (legacy, unaligned) or "ROIAlignV2" (aligned).
            canonical_box_size, canonical_level: see `assign_boxes_to_levels`.
        """
        super().__init__()
        if pooler_type not in _ALIGNED_BY_POOLER_TYPE:
            raise ArgumentError(
                f"ROIPooler `pooler_type` must be one of {sorted(_ALIGNED_BY_POOLER_TYPE)}, got {pooler_type!r}",
                "pooler_type",
            )
        sides = output_size if isinstance(output_size, (tuple, list)) else (output_size,)
        if not all(isinstance(side, int) and side > 0 for side in sides):
            raise ArgumentError(f"ROIPooler `output_size` must be an int > 0, got {output_size!r}", "output_size")
        if not isinstance(sampling_ratio, int) or sampling_ratio < 0:
            raise ArgumentError(
                f"ROIPooler `sampling_ratio` must be an int >= 0, got {sampling_ratio!r}", "sampling_ratio"
            )
        if len(scales) == 0:
            raise ValueError("ROIPooler needs the scale of at least one feature level")
        levels = [-math.log2(s) for s in scales]
        if any(abs(lv - round(lv)) > 1e-6 for lv in levels) or any(
            round(b) - round(a) != 1 for a, b in zip(levels, levels[1:])
        ):
            raise ValueError(
                f"ROIPooler scales must be powers of 2, each level twice as coarse as the previous one; "
                f"got {list(scales)}"
            )
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(output_size)
        self.min_level = round(levels[0])
        self.max_level = round(levels[-1])
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level
        aligned = _ALIGNED_BY_POOLER_TYPE[pooler_type]
        self.level_poolers = nn.ModuleList(
            ROIAlign(self.output_size, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
            for scale in scales
        )

    def forward(self, x: List[Tensor], box_lists: List[Boxes]) -> Tensor:
        """
        Args:
            x: L feature maps `Tensor[N, C, H_l, W_l]`, finest first, matching `scales`.
            box_lists: N Boxes, the regions of each image in input-image pixels.

        Returns:
            `Tensor[R, C, S, S]`: the pooled features of every box, in the order of `box_lists`
            (image 0's boxes first).
        """
        if len(x) != len(self.level_poolers):
            raise ValueError(
                f"ROIPooler was built for {len(self.level_poolers)} feature levels but got {len(x)}"
            )
        if len(box_lists) != x[0].shape[0]:
            raise ValueError(
                f"ROIPooler got boxes for {len(box_lists)} images but features of {x[0].shape[0]} images"
            )
        rois = convert_boxes_to_pooler_format(box_lists)  # (R, 5)
        if len(self.level_poolers) == 1:
            return self.level_poolers[0](x[0], rois)

        levels = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )
        output = torch.empty(
            (len(rois), x[0].shape[1], *self.output_size), dtype=x[0].dtype, device=x[0].device
        )
        for pooler, features, idx in zip(self.level_poolers, x, _indices_per_level(levels, len(x))):
            # Each level's (R_l, C, S, S) goes straight to its boxes' rows: no concatenated copy.
            output.index_copy_(0, idx, pooler(features, rois[idx]).to(output.dtype))
        return output


def roi_pooler_from_config(cfg, head: str, scales: Sequence[float]) -> ROIPooler:
    """The ROIPooler of MODEL.<head>.POOLER_* over feature levels of `scales`, for the branch `head`
    ("ROI_BOX_HEAD", "ROI_MASK_HEAD", "ROI_KEYPOINT_HEAD"); a bad value is a ConfigError naming its key."""
    node = cfg.MODEL[head]
    keys = {"output_size": "POOLER_RESOLUTION", "sampling_ratio": "POOLER_SAMPLING_RATIO", "pooler_type": "POOLER_TYPE"}
    with config_keys(**{argument: f"MODEL.{head}.{key}" for argument, key in keys.items()}):
        return ROIPooler(
            output_size=node.POOLER_RESOLUTION,
            scales=scales,
            sampling_ratio=node.POOLER_SAMPLING_RATIO,
            pooler_type=node.POOLER_TYPE,
        )


def _indices_per_level(levels: Tensor, num_levels: int) -> List[Tensor]:
    """For each level, `Tensor[R_l]` the indices of the boxes assigned to it, in increasing order."""
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        # Split sizes would be recorded as the sample's counts; a mask per level is traced as an operation.
        return [nonzero_tuple(levels == level)[0] for level in range(num_levels)]
    # Grouping the boxes by level costs a single host sync (the per-level counts), not one per level.
    order = torch.argsort(levels, stable=True)
    return list(order.split(bincount_bounded(levels, num_levels).tolist()))
