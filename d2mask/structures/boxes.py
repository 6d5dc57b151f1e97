"""Axis-aligned boxes (`Boxes`, `BoxMode`) and the pairwise overlap measures between two sets of them.

Shape letters (the glossary is in d2mask/__init__.py): `R` boxes, or those of the first set of a pairwise
measure, `R2` those of the second set, `c` the columns of the second set in one chunk.

The pairwise measures compute their `Tensor[R, R2]` result in column chunks so that the temporaries stay
bounded however many anchors there are; `iter_pairwise_iou_chunks` exposes those chunks so a caller (the
anchor matcher) can reduce over them without ever holding the full matrix.
"""
from enum import IntEnum, unique
from typing import Callable, Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BoxMode",
    "Boxes",
    "pairwise_intersection",
    "pairwise_iou",
    "pairwise_ioa",
    "iter_pairwise_iou_chunks",
    "matched_pairwise_iou",
    "matched_boxlist_iou",
    "DEFAULT_MAX_CHUNK_ELEMENTS",
]

# Each [R, c] temporary of a chunk holds at most this many elements (32 MB in float32); the handful alive
# at once while a chunk is computed stay near 0.25 GB, whatever R and R2 are (3,000 GT x 250,000 anchors
# included), and a chunk is still large enough to keep a GPU busy.
DEFAULT_MAX_CHUNK_ELEMENTS = 1 << 23

_BoxLike = Union[List[float], Tuple[float, ...], np.ndarray, Tensor]


@unique
class BoxMode(IntEnum):
    """How the 4 numbers of a box are laid out. The values are Detectron2's, so dataset dicts agree.

    XYXY_ABS: (x0, y0, x1, y1) in pixels. XYWH_ABS: (x0, y0, width, height) in pixels.
    The relative modes (coordinates in [0, 1] of the image size) are named for compatibility only;
    `convert` does not handle them because it is never given the image size.
    """

    XYXY_ABS = 0
    XYWH_ABS = 1
    XYXY_REL = 2
    XYWH_REL = 3

    @staticmethod
    def convert(box: _BoxLike, from_mode: "BoxMode", to_mode: "BoxMode") -> _BoxLike:
        """Converts one box or a batch of boxes between the absolute modes.

        Args:
            box: 4 numbers as a list or tuple, or an array/tensor of shape [4] or [K, 4].
            from_mode: the layout of `box`.
            to_mode: the layout wanted.

        Returns:
            The converted box(es), of the same type (and shape) as `box`.
        """
        from_mode, to_mode = BoxMode(from_mode), BoxMode(to_mode)
        if from_mode == to_mode:
            return box
        supported = (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
        if from_mode not in supported or to_mode not in supported:
            raise NotImplementedError(
                f"BoxMode.convert supports only XYXY_ABS and XYWH_ABS; got {from_mode.name} -> "
                f"{to_mode.name}. Relative boxes need the image size: scale them to pixels first."
            )

        if isinstance(box, (list, tuple)):
            if len(box) != 4:
                raise ValueError(f"BoxMode.convert expects a list/tuple of 4 numbers, got {box!r}")
            arr = torch.tensor([box], dtype=torch.float64)
        elif isinstance(box, np.ndarray):
            arr = torch.from_numpy(np.array(box))  # np.array copies, so `box` is left as it was
        elif isinstance(box, Tensor):
            arr = box.clone()
        else:
            raise TypeError(f"BoxMode.convert expects a list, tuple, np.ndarray or Tensor, got {type(box)}")
        if arr.shape[-1] != 4:
            raise ValueError(f"BoxMode.convert expects boxes of shape [4] or [K, 4], got {tuple(arr.shape)}")

        # The two modes differ only in the last two numbers: (x1, y1) <-> (w, h).
        if to_mode == BoxMode.XYXY_ABS:
            arr[..., 2:] += arr[..., :2]
        else:
            arr[..., 2:] -= arr[..., :2]

        if isinstance(box, (list, tuple)):
            return type(box)(arr[0].tolist())
        if isinstance(box, np.ndarray):
            return arr.numpy()
        return arr


class Boxes:
    """R axis-aligned boxes as a `Tensor[R, 4]` of float32 (x0, y0, x1, y1) in absolute pixels.

    Behaves like a tensor of boxes: it is indexed, concatenated and moved between devices as one.
    """

    def __init__(self, tensor: Union[Tensor, np.ndarray, Sequence[Sequence[float]]]):
        """
        Args:
            tensor: `Tensor[R, 4]` of (x0, y0, x1, y1), or anything `torch.as_tensor` accepts.
                An empty input gives zero boxes.
        """
        if isinstance(tensor, Tensor):
            tensor = tensor.to(torch.float32)
        else:
            tensor = torch.as_tensor(tensor, dtype=torch.float32, device=torch.device("cpu"))
        # An empty list arrives as shape [0]; keep the box dimension so cat and indexing still work.
        # (Shape first: torch.export cannot ask whether a data-dependent number of boxes is zero.)
        if not (tensor.dim() == 2 and tensor.shape[-1] == 4) and tensor.numel() == 0:
            tensor = tensor.reshape(0, 4)
        if tensor.dim() != 2 or tensor.shape[-1] != 4:
            raise ValueError(f"Boxes expects a tensor of shape [N, 4], got {tuple(tensor.shape)}")
        self.tensor = tensor

    def clone(self) -> "Boxes":
        return Boxes(self.tensor.clone())

    def to(self, device: Union[torch.device, str]) -> "Boxes":
        return Boxes(self.tensor.to(device=device))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def area(self) -> Tensor:
        """`Tensor[R]`: width * height of each box."""
        t = self.tensor
        return (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])

    def clip(self, box_size: Tuple[int, int]) -> None:
        """Clamps the boxes, in place, to the image: x into [0, width], y into [0, height].

        Args:
            box_size: (height, width) of the image.
        """
        h, w = box_size
        x0 = self.tensor[:, 0].clamp(min=0, max=w)
        y0 = self.tensor[:, 1].clamp(min=0, max=h)
        x1 = self.tensor[:, 2].clamp(min=0, max=w)
        y1 = self.tensor[:, 3].clamp(min=0, max=h)
        self.tensor = torch.stack((x0, y0, x1, y1), dim=-1)

    def nonempty(self, threshold: float = 0.0) -> Tensor:
        """`Tensor[R]` bool: whether both the width and the height are larger than `threshold`."""
        t = self.tensor
        return ((t[:, 2] - t[:, 0]) > threshold) & ((t[:, 3] - t[:, 1]) > threshold)

    def inside_box(self, box_size: Tuple[int, int], boundary_threshold: int = 0) -> Tensor:
        """`Tensor[R]` bool: whether each box lies inside the image, allowing `boundary_threshold`
        pixels of overhang on every side.

        Args:
            box_size: (height, width) of the image.
            boundary_threshold: how far a box may extend beyond the image and still count as inside.
        """
        h, w = box_size
        t, b = self.tensor, boundary_threshold
        return (t[:, 0] >= -b) & (t[:, 1] >= -b) & (t[:, 2] < w + b) & (t[:, 3] < h + b)

    def get_centers(self) -> Tensor:
        """`Tensor[R, 2]`: the (x, y) centre of each box."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Multiplies the x coordinates by `scale_x` and the y coordinates by `scale_y`, in place."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    @classmethod
    def cat(cls, boxes_list: List["Boxes"]) -> "Boxes":
        """Concatenates a list of Boxes into one."""
        if not isinstance(boxes_list, (list, tuple)):
            raise TypeError(f"Boxes.cat expects a list of Boxes, got {type(boxes_list)}")
        if len(boxes_list) == 0:
            return cls(torch.empty(0, 4))
        if not all(isinstance(b, Boxes) for b in boxes_list):
            raise TypeError(f"Boxes.cat expects Boxes only, got {[type(b).__name__ for b in boxes_list]}")
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))

    def __getitem__(self, item: Union[int, slice, Tensor, Sequence[int]]) -> "Boxes":
        """Selects boxes; an int selects one box and still returns `Boxes` (of length 1)."""
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1))
        selected = self.tensor[item]
        if selected.dim() != 2:
            raise IndexError(f"Indexing Boxes with {item!r} gave shape {tuple(selected.shape)}, not [K, 4]")
        return Boxes(selected)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        """Yields each box as a `Tensor[4]`."""
        yield from self.tensor

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"


def _intersection_block(a: Tensor, b: Tensor) -> Tensor:
    """`Tensor[R, c]` overlap area of boxes `a` (`Tensor[R, 4]`) and `b` (`Tensor[c, 4]`).

    Matching needs no gradients, so the [R, c] temporaries are updated in place: two of them live at
    once instead of six, which is most of the matcher's time and memory on dense images.
    """
    w = torch.minimum(a[:, None, 2], b[None, :, 2])
    w -= torch.maximum(a[:, None, 0], b[None, :, 0])
    h = torch.minimum(a[:, None, 3], b[None, :, 3])
    h -= torch.maximum(a[:, None, 1], b[None, :, 1])
    return w.clamp_(min=0).mul_(h.clamp_(min=0))


def _overlap_ratio(inter: Tensor, denominator: Tensor) -> Tensor:
    """inter / denominator in place of `inter`, with exactly 0 for disjoint pairs, also where the
    denominator is 0 because the boxes are empty (a positive overlap implies a positive denominator,
    so clamping the denominator changes nothing else)."""
    return inter.div_(denominator.clamp(min=torch.finfo(denominator.dtype).tiny))


def _iou_block(a: Tensor, b: Tensor, area_a: Tensor, area_b: Tensor) -> Tensor:
    inter = _intersection_block(a, b)
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    return _overlap_ratio(inter, union)


def _ioa_block(a: Tensor, b: Tensor, area_b: Tensor) -> Tensor:
    return _overlap_ratio(_intersection_block(a, b), area_b[None, :])


def _iter_column_chunks(
    boxes1: Boxes,
    boxes2: Boxes,
    block: Callable[[slice], Tensor],
    max_elements: int,
) -> Iterator[Tuple[int, int, Tensor]]:
    """Yields (start, end, block(slice(start, end))) over the columns of an R x R2 matrix, with at most
    `max_elements` elements (and at least one column) per chunk."""
    if max_elements < 1:
        raise ValueError(f"max_elements must be a positive number of elements, got {max_elements}")
    n, m = len(boxes1), len(boxes2)
    step = max(1, max_elements // max(n, 1))
    for start in range(0, m, step):
        end = min(start + step, m)
        yield start, end, block(slice(start, end))


def _assemble(n: int, m: int, chunks: Iterator[Tuple[int, int, Tensor]], like: Tensor) -> Tensor:
    """Writes column chunks into one `Tensor[R, R2]`; a single chunk covering every column is returned
    as it is, without a copy."""
    out = None
    for start, end, chunk in chunks:
        if start == 0 and end == m:
            return chunk
        if out is None:
            out = chunk.new_empty((n, m))
        out[:, start:end] = chunk
    return out if out is not None else like.new_zeros((n, m))


def iter_pairwise_iou_chunks(
    boxes1: Boxes, boxes2: Boxes, max_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS
) -> Iterator[Tuple[int, int, Tensor]]:
    """Computes the IoU matrix of `pairwise_iou` one block of columns at a time.

    Meant for reductions over a matrix too large to hold, e.g. an anchor matcher taking, in one pass,
    each anchor's best GT (max/argmax over rows of each chunk) and each GT's best IoU (running max
    over chunks), then in a second pass the anchors that reach it. Chunks come in column order, cover
    every column of `boxes2` exactly once, and equal the matching columns of `pairwise_iou` exactly.

    Args:
        boxes1: R boxes (the rows, e.g. GT boxes).
        boxes2: R2 boxes (the columns, e.g. anchors).
        max_elements: the most elements in one chunk; each chunk has at least one column.

    Yields:
        (start, end, iou): `iou` is `Tensor[R, end - start]`, the IoU of every box in `boxes1` with
        `boxes2[start:end]`, on the boxes' device. Nothing is yielded when R2 == 0.
    """
    a, b = boxes1.tensor, boxes2.tensor
    area_a, area_b = boxes1.area(), boxes2.area()
    yield from _iter_column_chunks(
        boxes1, boxes2, lambda cols: _iou_block(a, b[cols], area_a, area_b[cols]), max_elements
    )


def pairwise_intersection(
    boxes1: Boxes, boxes2: Boxes, max_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS
) -> Tensor:
    """`Tensor[R, R2]`: the overlap area of every box in `boxes1` (R) with every box in `boxes2` (R2).

    `max_elements` bounds the size of each intermediate chunk (see `iter_pairwise_iou_chunks`).
    """
    a, b = boxes1.tensor, boxes2.tensor
    chunks = _iter_column_chunks(boxes1, boxes2, lambda cols: _intersection_block(a, b[cols]), max_elements)
    return _assemble(len(boxes1), len(boxes2), chunks, a)


def pairwise_iou(boxes1: Boxes, boxes2: Boxes, max_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS) -> Tensor:
    """`Tensor[R, R2]`: intersection over union of every box in `boxes1` (R) with every box in `boxes2` (R2).

    Disjoint pairs, including pairs of empty boxes, have IoU 0. The result is built in column chunks
    of at most `max_elements` elements, so only the output itself scales with R * R2.
    """
    chunks = iter_pairwise_iou_chunks(boxes1, boxes2, max_elements)
    return _assemble(len(boxes1), len(boxes2), chunks, boxes1.tensor)


def pairwise_ioa(boxes1: Boxes, boxes2: Boxes, max_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS) -> Tensor:
    """`Tensor[R, R2]`: intersection over the area of the second box ("IoA"), e.g. how much of each
    proposal in `boxes2` an ignore region in `boxes1` covers. Disjoint pairs give 0."""
    a, b = boxes1.tensor, boxes2.tensor
    area_b = boxes2.area()
    chunks = _iter_column_chunks(
        boxes1, boxes2, lambda cols: _ioa_block(a, b[cols], area_b[cols]), max_elements
    )
    return _assemble(len(boxes1), len(boxes2), chunks, a)


def matched_pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> Tensor:
    """`Tensor[R]`: the IoU of `boxes1[i]` with `boxes2[i]`, for two sets of the same length R."""
    if len(boxes1) != len(boxes2):
        raise ValueError(
            f"matched_pairwise_iou needs sets of equal length, got {len(boxes1)} and {len(boxes2)} boxes"
        )
    a, b = boxes1.tensor, boxes2.tensor
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return _overlap_ratio(inter, boxes1.area() + boxes2.area() - inter)


# The name maskrcnn-benchmark used for the same function.
matched_boxlist_iou = matched_pairwise_iou
