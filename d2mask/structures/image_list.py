"""`ImageList`: images of different sizes padded into one batch tensor, remembering each true size."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ImageList"]


class ImageList:
    """A batch of N images padded to a common size, as `Tensor[N, C, H, W]`, plus each image's own
    (height, width) before padding. Padding is on the bottom and right, so pixel coordinates are
    unchanged."""

    def __init__(self, tensor: Tensor, image_sizes: Sequence[Tuple[int, int]]):
        """
        Args:
            tensor: `Tensor[N, C, H, W]`, the padded batch.
            image_sizes: N pairs (h_i, w_i) with h_i <= H and w_i <= W.
        """
        if tensor.shape[0] != len(image_sizes):
            raise ValueError(
                f"ImageList got a batch of {tensor.shape[0]} images but {len(image_sizes)} image sizes"
            )
        self.tensor = tensor
        if torch.jit.is_tracing() or torch.compiler.is_exporting():
            # Sizes read from a traced input are 0-d tensors (symbolic ints in torch.export); kept so, an
            # exported model clips its boxes to its input's size, where ints would fix the sample's.
            self.image_sizes = [(h, w) for h, w in image_sizes]
        else:
            self.image_sizes: List[Tuple[int, int]] = [(int(h), int(w)) for h, w in image_sizes]

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> Tensor:
        """`Tensor[C, h_i, w_i]`: image `idx` without its padding."""
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    def to(self, device: Union[torch.device, str]) -> "ImageList":
        return ImageList(self.tensor.to(device), self.image_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def from_tensors(
        tensors: List[Tensor],
        size_divisibility: int = 0,
        pad_value: float = 0.0,
        padding_constraints: Optional[Dict[str, int]] = None,
    ) -> "ImageList":
        """Pads images to the largest height and width among them, rounded up to a multiple of
        `size_divisibility`, and stacks them.

        Args:
            tensors: N images `Tensor[C, H_i, W_i]` (any leading dimensions, the same for all).
            size_divisibility: when > 0, the padded height and width are multiples of it (an FPN needs
                its coarsest stride here so every level's feature maps line up).
            pad_value: the value of padded pixels.
            padding_constraints: a backbone's `padding_constraints`, as in Detectron2:
                {"square_size": S} pads every image to S x S (when S > 0; ViTDet's large-scale
                jitter), and {"size_divisibility": D} replaces `size_divisibility`.

        Returns:
            An ImageList of `Tensor[N, C, H, W]`.
        """
        if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
            raise ValueError(
                f"ImageList.from_tensors needs a non-empty list of image tensors, got {tensors!r:.200}"
            )
        leading = tensors[0].shape[:-2]
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor) or t.dim() < 2 or t.shape[:-2] != leading:
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t)
                raise ValueError(
                    f"ImageList.from_tensors: image {i} has shape {shape}; every image must be "
                    f"[..., H, W] with the same leading dimensions {tuple(leading)} as image 0"
                )
        image_sizes = [(t.shape[-2], t.shape[-1]) for t in tensors]
        max_h = max(h for h, _ in image_sizes)
        max_w = max(w for _, w in image_sizes)
        constraints = padding_constraints or {}
        square_size = constraints.get("square_size", 0)
        if square_size > 0:
            if max(max_h, max_w) > square_size:
                raise ValueError(
                    f"ImageList.from_tensors: an image of {max_h} x {max_w} does not fit the backbone's "
                    f"padding_constraints square_size {square_size}; resize the images to at most that"
                )
            max_h = max_w = square_size
        size_divisibility = constraints.get("size_divisibility", size_divisibility)
        if size_divisibility > 1:
            # Rounding up with non-negative operands only: exported to ONNX, integer division truncates.
            max_h = (max_h + size_divisibility - 1) // size_divisibility * size_divisibility
            max_w = (max_w + size_divisibility - 1) // size_divisibility * size_divisibility

        if len(tensors) == 1:
            h, w = image_sizes[0]
            # (left, right, top, bottom) padding of the last two dimensions.
            batched = F.pad(tensors[0], (0, max_w - w, 0, max_h - h), value=pad_value).unsqueeze(0)
        else:
            batched = tensors[0].new_full((len(tensors), *leading, max_h, max_w), pad_value)
            for padded, t in zip(batched, tensors):
                padded[..., : t.shape[-2], : t.shape[-1]].copy_(t)
        return ImageList(batched.contiguous(), image_sizes)
