"""`paste_masks_in_image`: fixed-size mask predictions resampled into their boxes on the full image.

Shape shorthand: `R` masks, `M` the mask side, `H, W` the image.
"""
from typing import Tuple, Union

import torch
from torch import Tensor

__all__ = ["paste_masks_in_image"]

# Elements of the float [chunk, H, W] result computed at once (256 MB in float32).
_MAX_CHUNK_ELEMENTS = 1 << 26


def _bilinear_weights(lo: Tensor, hi: Tensor, mask_side: int, length: int) -> Tensor:
    """`Tensor[R, length, M]`: the weight of mask cell j in image pixel i along one axis, for boxes
    spanning [lo, hi) of that axis.

    Pixel i's centre (i + 0.5) lies at continuous mask coordinate u = (i + 0.5 - lo) / (hi - lo) * M;
    bilinear interpolation between cell centres (j + 0.5) gives cell j the tent weight
    max(0, 1 - |u - 0.5 - j|), and cells beyond the mask count as 0. This is exactly what
    `grid_sample(align_corners=False, padding_mode="zeros")` computes, one axis at a time.
    """
    pixels = torch.arange(length, device=lo.device, dtype=torch.float32) + 0.5
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

    All masks are pasted at once: bilinear resampling is separable, so each pasted mask is
    `Wy @ mask @ Wx^T` with the per-axis weights of `_bilinear_weights`. Masks are processed in chunks
    so that the float intermediate holds at most `max_chunk_elements` values.

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
    mask_side = masks.shape[1]
    soft = threshold < 0
    result = torch.zeros((len(masks), height, width), dtype=torch.uint8 if soft else torch.bool, device=masks.device)
    if len(masks) == 0 or height == 0 or width == 0:
        return result

    boxes = boxes.to(device=masks.device, dtype=torch.float32)
    chunk = max(1, max_chunk_elements // (height * width))
    for start in range(0, len(masks), chunk):
        end = min(start + chunk, len(masks))
        b = boxes[start:end]
        wy = _bilinear_weights(b[:, 1], b[:, 3], mask_side, height)  # (n, H, M)
        wx = _bilinear_weights(b[:, 0], b[:, 2], mask_side, width)  # (n, W, M)
        pasted = wy @ masks[start:end].float() @ wx.transpose(1, 2)  # (n, H, M) @ (n, M, M) @ (n, M, W)
        result[start:end] = (pasted * 255).to(torch.uint8) if soft else pasted >= threshold
    return result
