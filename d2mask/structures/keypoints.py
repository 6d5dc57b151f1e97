"""Keypoint annotations (`Keypoints`) and the decoding of predicted keypoint heatmaps into image points.

Shape letters (d2mask/__init__.py): `R` instances or regions, and this module's own: `J` keypoints per
instance, `M` the side of a keypoint heatmap.
"""
from typing import Any, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .boxes import DEFAULT_MAX_CHUNK_ELEMENTS

__all__ = ["Keypoints", "heatmaps_to_keypoints"]


class Keypoints:
    """The keypoints of R instances, `tensor`: `Tensor[R, J, 3]` float32 of (x, y, visibility) in image
    pixels, the `gt_keypoints` field of GT instances.

    Visibility follows COCO: 0 not labelled (then x = y = 0), 1 labelled but occluded, 2 labelled and
    visible. Training uses every labelled keypoint (visibility > 0).
    """

    def __init__(self, keypoints: Union[Tensor, np.ndarray, Sequence]):
        """
        Args:
            keypoints: `[R, J, 3]` numbers (a tensor keeps its device).
        """
        if isinstance(keypoints, Tensor):
            tensor = keypoints.to(torch.float32)  # no copy when it is float32 already
        else:
            tensor = torch.as_tensor(keypoints, dtype=torch.float32, device=torch.device("cpu"))
        if tensor.dim() != 3 or tensor.shape[2] != 3:
            raise ValueError(f"Keypoints expects [R, J, 3] (x, y, visibility) per keypoint, got shape {tuple(tensor.shape)}")
        self.tensor = tensor

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def to(self, *args: Any, **kwargs: Any) -> "Keypoints":
        return type(self)(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to_heatmap(self, boxes: Tensor, heatmap_size: int) -> Tuple[Tensor, Tensor]:
        """The training targets of Mask R-CNN's keypoint head (He et al. 2017, Sec. 5): each keypoint as
        the index of the heatmap cell it falls in, when its instance's box is stretched to an M x M grid.

        A box covers the half-open interval [x0, x1); a keypoint at c lies in cell floor((c - x0) * M /
        (x1 - x0)) (Heckbert 1990: cell d spans [d, d + 1) and has its centre at d + 0.5). A keypoint
        exactly on the far edge x1 counts as in the last cell, as in Detectron2.

        Args:
            boxes: `Tensor[R, 4]` XYXY, one per instance.
            heatmap_size: M.

        Returns:
            `Tensor[R, J]` int64, the cell index y * M + x (0 where not valid), and `Tensor[R, J]` int64,
            1 where the keypoint is labelled and inside its box.
        """
        return _keypoints_to_heatmap(self.tensor, boxes, heatmap_size)

    def __getitem__(self, item: Union[int, slice, Tensor, List[int]]) -> "Keypoints":
        """The keypoints of the selected instances; an int gives a length-1 `Keypoints`."""
        if isinstance(item, int):
            return type(self)(self.tensor[item][None])
        return type(self)(self.tensor[item])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_instances={len(self)})"

    @staticmethod
    def cat(keypoints_list: List["Keypoints"]) -> "Keypoints":
        """Concatenates the instances of several `Keypoints` with the same J."""
        if not keypoints_list or not all(isinstance(k, Keypoints) for k in keypoints_list):
            raise ValueError(f"Keypoints.cat expects a non-empty list of Keypoints, got {keypoints_list!r:.200}")
        return type(keypoints_list[0])(torch.cat([k.tensor for k in keypoints_list], dim=0))


def _keypoints_to_heatmap(keypoints: Tensor, rois: Tensor, heatmap_size: int) -> Tuple[Tensor, Tensor]:
    """See `Keypoints.to_heatmap`; `keypoints` is `Tensor[R, J, 3]`, `rois` `Tensor[R, 4]`."""
    if rois.numel() == 0:
        empty = torch.zeros(0, keypoints.shape[1], dtype=torch.int64, device=keypoints.device)
        return empty, empty.clone()
    x0, y0, x1, y1 = (rois[:, i : i + 1] for i in range(4))  # each (R, 1)
    x, y = keypoints[..., 0], keypoints[..., 1]  # (R, J)
    cell_x = ((x - x0) * (heatmap_size / (x1 - x0))).floor().long()
    cell_y = ((y - y0) * (heatmap_size / (y1 - y0))).floor().long()
    cell_x = torch.where(x == x1, heatmap_size - 1, cell_x)
    cell_y = torch.where(y == y1, heatmap_size - 1, cell_y)
    inside = (cell_x >= 0) & (cell_y >= 0) & (cell_x < heatmap_size) & (cell_y < heatmap_size)
    valid = (inside & (keypoints[..., 2] > 0)).long()
    return (cell_y * heatmap_size + cell_x) * valid, valid


# Keys' cubic convolution parameter, the one torch's bicubic interpolation uses.
_CUBIC_A = -0.75


def _bicubic_resize_matrices(out_sizes: Tensor, in_size: int, max_out: int) -> Tensor:
    """`Tensor[R, max_out, in_size]`: row-vector weights that resample a length-`in_size` signal to
    `out_sizes[r]` samples exactly as `F.interpolate(mode="bicubic", align_corners=False)` does (source
    positions (d + 0.5) * in / out - 0.5, border samples repeated); rows from `out_sizes[r]` on are 0.

    Bicubic interpolation is separable, so a map resamples as `Wy @ map @ Wx^T`, for all regions at once
    although each has its own output size.
    """
    dst = torch.arange(max_out, dtype=torch.float32, device=out_sizes.device)
    src = (dst[None] + 0.5) * (in_size / out_sizes.float())[:, None] - 0.5  # (R, max_out)
    base = src.floor()
    t = src - base
    a = _CUBIC_A

    def near(d: Tensor) -> Tensor:  # the kernel on |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: Tensor) -> Tensor:  # the kernel on 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    coeffs = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)  # (R, max_out, 4)
    coeffs = coeffs * (dst[None] < out_sizes[:, None]).unsqueeze(-1)
    taps = (base.long().unsqueeze(-1) + torch.arange(-1, 3, device=out_sizes.device)).clamp(0, in_size - 1)
    # zeros shaped after `src`, so that a traced or exported model sizes them by its input's regions
    weights = src.new_zeros(src.shape + (in_size,))
    return weights.scatter_add_(2, taps, coeffs)


def heatmaps_to_keypoints(maps: Tensor, rois: Tensor) -> Tensor:
    """Decodes keypoint heatmaps into image points, as Detectron2 does (Mask R-CNN, Sec. 5).

    Each region's heatmap is resized bicubically to the region's size in pixels (rounded up); a keypoint
    is the centre of its highest cell (Heckbert 1990: cell d has its centre at d + 0.5, consistently
    with `Keypoints.to_heatmap`). Its score is the softmax at that cell normalised over the M x M
    heatmap, not the resized one, so that scores of large and small objects compare.

    All regions are decoded at once (in chunks bounded in memory; in one under tracing and torch.export,
    whose artefacts cannot loop over a number of chunks that depends on their input), not one by one.

    Args:
        maps: `Tensor[R, J, M, M]` heatmap logits.
        rois: `Tensor[R, 4]` XYXY boxes of the regions in image pixels.

    Returns:
        `Tensor[R, J, 4]`: (x, y, logit, score) of each keypoint.
    """
    num_rois, num_keypoints, map_h, map_w = maps.shape
    out = maps.new_zeros(num_rois, num_keypoints, 4)
    exporting = torch.jit.is_tracing() or torch.compiler.is_exporting()
    if not exporting and num_rois == 0:  # an exported model takes its count from the input, 0 included
        return out
    maps = maps.float()
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1).float()
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1).float()
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()
    max_h, max_w = _largest_sizes(heights_ceil, widths_ceil)
    resize_y = _bicubic_resize_matrices(heights_ceil, map_h, max_h)  # (R, max_h, M)
    resize_x = _bicubic_resize_matrices(widths_ceil, map_w, max_w)  # (R, max_w, M)
    # the padding of a smaller region than the largest must never be its maximum
    outside = (torch.arange(max_h, device=maps.device)[None, :, None] >= heights_ceil[:, None, None]) | (
        torch.arange(max_w, device=maps.device)[None, None, :] >= widths_ceil[:, None, None]
    )  # (R, max_h, max_w)

    if exporting:
        # A loop over chunks would be bounded by the sample's sizes: an exported model decodes all its
        # regions at once, R * J * max_h * max_w floats.
        logit, cell = _decode_maxima(maps, resize_y, resize_x, outside)
    else:
        chunk = max(1, DEFAULT_MAX_CHUNK_ELEMENTS // (num_keypoints * max_h * max_w))
        parts = [
            _decode_maxima(maps[i : i + chunk], resize_y[i : i + chunk], resize_x[i : i + chunk], outside[i : i + chunk])
            for i in range(0, num_rois, chunk)
        ]
        logit, cell = (torch.cat(values) for values in zip(*parts))
    x_cell, y_cell = cell % max_w, cell // max_w
    # the softmax at the maximum, exp(0), over the sum of exp(logit - max) on the M x M heatmap
    score = 1.0 / (maps - logit[..., None, None]).exp().sum(dim=(2, 3))
    out[..., 0] = (x_cell.float() + 0.5) * (widths / widths_ceil)[:, None] + rois[:, 0:1]
    out[..., 1] = (y_cell.float() + 0.5) * (heights / heights_ceil)[:, None] + rois[:, 1:2]
    out[..., 2] = logit
    out[..., 3] = score
    return out


def _largest_sizes(heights: Tensor, widths: Tensor) -> Tuple[Any, Any]:
    """(max_h, max_w), the largest of the regions' resized sides (1 without regions): ints in eager mode,
    0-d tensors under `torch.jit.trace` and unbacked symbolic ints under `torch.export`, so that an
    exported model sizes its resized maps by its input's regions, not the sample's."""
    one = heights.new_ones(1)
    sizes = torch.stack([torch.cat([heights, one]).max(), torch.cat([widths, one]).max()]).long()
    if torch.jit.is_tracing():
        return sizes[0], sizes[1]
    max_h, max_w = sizes.tolist()  # one sync
    if torch.compiler.is_exporting():
        torch._check(max_h >= 1)
        torch._check(max_w >= 1)
    return max_h, max_w


def _decode_maxima(maps: Tensor, resize_y: Tensor, resize_x: Tensor, outside: Tensor) -> Tuple[Tensor, Tensor]:
    """The highest logit of each resized heatmap and its cell (row-major over max_h x max_w), both
    `Tensor[R, J]`, for `maps` `Tensor[R, J, M, M]` resized as `resize_y @ map @ resize_x^T`."""
    # (R, 1, max_h, M) @ (R, J, M, M) @ (R, 1, M, max_w) -> (R, J, max_h, max_w)
    resized = resize_y[:, None] @ maps @ resize_x[:, None].transpose(-1, -2)
    resized = resized.masked_fill(outside[:, None], float("-inf"))
    # The first maximum in row-major order, found row by row rather than on flattened maps, whose
    # reshape ONNX Runtime cannot do on a tensor without elements (no detections).
    row_max, col = resized.max(dim=3)  # (R, J, max_h)
    row = row_max.argmax(dim=2, keepdim=True)  # (R, J, 1): the first row holding the maximum
    col = col.gather(2, row)[..., 0]
    return row_max.gather(2, row)[..., 0], row[..., 0] * resized.shape[3] + col
