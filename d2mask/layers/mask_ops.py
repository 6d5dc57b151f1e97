"""`paste_masks_in_image`: fixed-size mask predictions resampled into their boxes on the full image.

Shape shorthand: `R` masks, `M` the mask side, `H, W` the image.
"""
from typing import Tuple, Union

import torch
from torch import Tensor

__all__ = ["paste_masks_in_image"]

# Elements of the float [chunk, H, W] result computed at once (256 MB in float32).
_MAX_CHUNK_ELEMENTS = 1 << 26


def _bilinear_weights(lo: Tensor, hi: Tensor, mask_side: int, length: int, first: int = 0) -> Tensor:
    """`Tensor[R, length, M]`: the weight of mask cell j in image pixel `first + i` along one axis, for
    boxes spanning [lo, hi) of that axis.

    Pixel i's centre (i + 0.5) lies at continuous mask coordinate u = (i + 0.5 - lo) / (hi - lo) * M;
    bilinear interpolation between cell centres (j + 0.5) gives cell j the tent weight
    max(0, 1 - |u - 0.5 - j|), and cells beyond the mask count as 0. This is exactly what
    `grid_sample(align_corners=False, padding_mode="zeros")` computes, one axis at a time.
    """
    pixels = torch.arange(first, first + length, device=lo.device, dtype=torch.float32) + 0.5
    size = (hi - lo).clamp(min=1e-6)
    u = (pixels[None, :] - lo[:, None]) / size[:, None] * mask_side - 0.5  # (R, length)
    cells = torch.arange(mask_side, device=lo.device, dtype=torch.float32)
    return (1 - (u[:, :, None] - cells[None, None, :]).abs()).clamp(min=0)


def paste_masks_in_image(
    masks: Tensor,
    boxes: Union[Tensor, "Boxes"],
    image_shape: Tuple[int, int],
    threshold: float = 0.5,
    max_chunk_elements: int = _MAX_CHUNK_ELEMENTS,
) -> Tensor:
    """Pastes each mask into its box on an empty image, by bilinear resampling, and thresholds it
    (or, with a negative threshold, keeps it soft, as Detectron2 does for visualisation).

    Bilinear resampling is separable, so each pasted mask is `Wy @ mask @ Wx^T` with the per-axis
    weights of `_bilinear_weights`. On an accelerator all masks are pasted at once over the whole
    image, in chunks so that the float intermediate holds at most `max_chunk_elements` values; on
    the CPU each mask only over the pixels its box reaches (`_paste_in_windows`).

    Args:
        masks: `Tensor[R, M, M]` mask probabilities in [0, 1], mask i covering box i.
        boxes: `Boxes` or `Tensor[R, 4]` (x0, y0, x1, y1) in pixels of the image.
        image_shape: (H, W) of the image.
        threshold: a pixel belongs to the mask when its resampled value is >= this; a negative
            threshold returns the soft masks instead.
        max_chunk_elements: bound on chunk * H * W.

    Returns:
        `Tensor[R, H, W]` on the masks' device: bool, or with `threshold < 0` uint8 holding the
        resampled probability times 255 (truncated, as in Detectron2).
    """
    if not isinstance(boxes, Tensor):
        boxes = boxes.tensor  # a d2mask.structures.Boxes; layers does not import structures
    if masks.dim() != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"paste_masks_in_image expects square masks of shape [N, M, M], got {tuple(masks.shape)}")
    if boxes.shape != (len(masks), 4):
        raise ValueError(f"paste_masks_in_image got {tuple(boxes.shape)} boxes for {len(masks)} masks; expected [N, 4]")
    height, width = int(image_shape[0]), int(image_shape[1])
    soft = threshold < 0
    result = torch.zeros((len(masks), height, width), dtype=torch.uint8 if soft else torch.bool, device=masks.device)
    if len(masks) == 0 or height == 0 or width == 0:
        return result

    boxes = boxes.to(device=masks.device, dtype=torch.float32)
    if masks.device.type == "cpu" and (soft or threshold > 0) and not (
        torch.jit.is_tracing() or torch.compiler.is_compiling()
    ):
        _paste_in_windows(masks, boxes, result, threshold)
    else:  # one batched product per chunk: few large operations suit accelerators
        _paste_in_chunks(masks, boxes, result, threshold, max(1, max_chunk_elements // (height * width)))
    return result


def _paste_in_chunks(masks: Tensor, boxes: Tensor, result: Tensor, threshold: float, chunk: int) -> None:
    """`paste_masks_in_image` over the whole image, `chunk` masks at a time; `result` is filled."""
    mask_side = masks.shape[1]
    height, width = result.shape[1:]
    for start in range(0, len(masks), chunk):
        end = min(start + chunk, len(masks))
        b = boxes[start:end]
        wy = _bilinear_weights(b[:, 1], b[:, 3], mask_side, height)  # (n, H, M)
        wx = _bilinear_weights(b[:, 0], b[:, 2], mask_side, width)  # (n, W, M)
        pasted = wy @ masks[start:end].float() @ wx.transpose(1, 2)  # (n, H, M) @ (n, M, M) @ (n, M, W)
        result[start:end] = (pasted * 255).to(torch.uint8) if threshold < 0 else pasted >= threshold


def _paste_in_windows(masks: Tensor, boxes: Tensor, result: Tensor, threshold: float) -> None:
    """`paste_masks_in_image` on the CPU: each mask is resampled only over the pixels its weights
    reach, its box and one mask cell around it, instead of the whole image (beyond, every weight is
    exactly 0, so the pasted value is 0: below a positive threshold, and 0 as a soft mask). A mask of
    a box small against the image then costs its box's pixels, not the image's. `result` is filled."""
    height, width = result.shape[1:]
    mask_side = masks.shape[1]
    cell = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6) / mask_side  # (R, 2) one cell's (w, h) in pixels
    lo = (boxes[:, :2] - cell).floor() - 1
    hi = (boxes[:, 2:] + cell).ceil() + 1
    bounds = torch.tensor([width, height], dtype=boxes.dtype, device=boxes.device)
    windows = torch.cat([lo.clamp(min=0), torch.minimum(hi, bounds)], dim=1).to(torch.int64).tolist()
    for i, (x0, y0, x1, y1) in enumerate(windows):
        if x1 <= x0 or y1 <= y0:
            continue
        wy = _bilinear_weights(boxes[i : i + 1, 1], boxes[i : i + 1, 3], mask_side, y1 - y0, first=y0)[0]  # (h, M)
        wx = _bilinear_weights(boxes[i : i + 1, 0], boxes[i : i + 1, 2], mask_side, x1 - x0, first=x0)[0]  # (w, M)
        pasted = wy @ masks[i].float() @ wx.t()
        result[i, y0:y1, x0:x1] = (pasted * 255).to(torch.uint8) if threshold < 0 else pasted >= threshold
