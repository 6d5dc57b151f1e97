"""Instance masks, as dense bitmaps (`BitMasks`) or as COCO polygons (`PolygonMasks`).

Both turn into Mask R-CNN's training targets with `crop_and_resize(boxes, M)`: the part of each mask
inside its proposal box, resampled to an M x M grid. Shape letters (d2mask/__init__.py): `R` instances, `H, W` the
image, `M` the target mask side.
"""
import itertools
from typing import Any, Dict, List, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import Tensor
from torchvision.ops import roi_align

from .boxes import Boxes

__all__ = [
    "BitMasks",
    "PolygonMasks",
    "polygons_to_bitmask",
    "rasterize_polygons_within_box",
    "rle_to_bitmask",
    "polygon_area",
]


def polygons_to_bitmask(polygons: List[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterises the union of polygons into a bool `ndarray[height, width]`.

    Args:
        polygons: polygons of one instance, each a flat array [x0, y0, x1, y1, ...] in pixels.
        height, width: the size of the bitmap.
    """
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in polygons], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def rle_to_bitmask(rle: Dict[str, Any]) -> np.ndarray:
    """Decodes a COCO run-length encoding into a bool `ndarray[H, W]`.

    Args:
        rle: {"size": [H, W], "counts": ...}, where counts is a list of ints (uncompressed RLE, as in
            COCO's `iscrowd` annotations) or a str/bytes (compressed RLE).
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"A COCO RLE must be a dict with 'size' and 'counts', got {rle!r:.200}")
    if isinstance(rle["counts"], list):
        rle = mask_util.frPyObjects(rle, *rle["size"])
    return mask_util.decode(rle).astype(bool)


def polygon_area(polygon: np.ndarray) -> float:
    """The area enclosed by one polygon given as a flat array [x0, y0, x1, y1, ...] (shoelace formula)."""
    x, y = polygon[0::2], polygon[1::2]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def rasterize_polygons_within_box(polygons: List[np.ndarray], box: np.ndarray, mask_size: int) -> Tensor:
    """Rasterises the part of one instance's polygons inside `box` onto a `mask_size` x `mask_size` grid.

    The box is stretched to the whole grid, so a polygon that equals the box fills every cell.

    Args:
        polygons: polygons of one instance, flat arrays [x0, y0, ...] in image pixels.
        box: (x0, y0, x1, y1) in image pixels.
        mask_size: M.

    Returns:
        `Tensor[M, M]` bool, on the CPU.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    # A degenerate box would divide by zero; any tiny positive size gives the same (empty) result.
    scale_x = mask_size / max(x1 - x0, 0.1)
    scale_y = mask_size / max(y1 - y0, 0.1)
    shifted = []
    for p in polygons:
        q = p.copy()
        q[0::2] = (q[0::2] - x0) * scale_x
        q[1::2] = (q[1::2] - y0) * scale_y
        shifted.append(q)
    return torch.from_numpy(polygons_to_bitmask(shifted, mask_size, mask_size))


class BitMasks:
    """R instance masks as a bool `Tensor[R, H, W]` covering the whole image."""

    def __init__(self, tensor: Union[Tensor, np.ndarray]):
        """
        Args:
            tensor: `Tensor[R, H, W]` (or an array); any dtype, non-zero meaning inside the mask.
        """
        if isinstance(tensor, Tensor):
            tensor = tensor.to(torch.bool)
        else:
            tensor = torch.as_tensor(tensor, dtype=torch.bool, device=torch.device("cpu"))
        if tensor.dim() != 3:
            raise ValueError(f"BitMasks expects a tensor of shape [N, H, W], got {tuple(tensor.shape)}")
        self.tensor = tensor
        self.image_size = tuple(tensor.shape[1:])

    def to(self, device: Union[torch.device, str]) -> "BitMasks":
        return BitMasks(self.tensor.to(device))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def __getitem__(self, item: Union[int, slice, Tensor, Sequence[int]]) -> "BitMasks":
        """Selects masks; an int selects one mask and still returns `BitMasks` (of length 1)."""
        if isinstance(item, int):
            return BitMasks(self.tensor[item].unsqueeze(0))
        selected = self.tensor[item]
        if selected.dim() != 3:
            raise IndexError(
                f"Indexing BitMasks with {item!r} gave shape {tuple(selected.shape)}, not [K, H, W]"
            )
        return BitMasks(selected)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return f"BitMasks(num_instances={len(self)}, image_size={self.image_size})"

    def nonempty(self) -> Tensor:
        """`Tensor[R]` bool: whether each mask has at least one pixel."""
        return self.tensor.flatten(1).any(dim=1)

    def area(self) -> Tensor:
        """`Tensor[R]`: the number of pixels in each mask."""
        return self.tensor.flatten(1).sum(dim=1)

    def get_bounding_boxes(self) -> Boxes:
        """The tightest box around each mask's pixels, (x0, y0, x1 + 1, y1 + 1) so that a single
        pixel at (x, y) gets a 1 x 1 box. Empty masks get the box (0, 0, 0, 0)."""
        n, h, w = self.tensor.shape
        if n == 0:
            return Boxes(torch.zeros(0, 4, device=self.device))
        cols = self.tensor.any(dim=1).to(torch.uint8)  # (R, H, W) -> (R, W)
        rows = self.tensor.any(dim=2).to(torch.uint8)  # (R, H, W) -> (R, H)
        # argmax returns the first maximal index: the first occupied column/row from either end.
        x0 = cols.argmax(dim=1)
        x1 = w - cols.flip(1).argmax(dim=1)
        y0 = rows.argmax(dim=1)
        y1 = h - rows.flip(1).argmax(dim=1)
        boxes = torch.stack((x0, y0, x1, y1), dim=1).to(torch.float32)
        return Boxes(boxes * self.nonempty()[:, None])

    def crop_and_resize(self, boxes: Tensor, mask_size: int) -> Tensor:
        """Mask R-CNN targets: each mask cropped to its box and resampled to `mask_size` x `mask_size`.

        Args:
            boxes: `Tensor[R, 4]` (x0, y0, x1, y1), the box of mask i in row i.
            mask_size: M.

        Returns:
            `Tensor[R, M, M]` bool, on the masks' device.
        """
        if len(boxes) != len(self):
            raise ValueError(f"crop_and_resize got {len(boxes)} boxes for {len(self)} masks")
        device = self.tensor.device
        boxes = boxes.to(device=device, dtype=torch.float32)
        # Mask i is image i of a one-channel batch, and roi i samples image i.
        batch_index = torch.arange(len(boxes), device=device, dtype=torch.float32)[:, None]
        rois = torch.cat([batch_index, boxes], dim=1)  # (R, 5)
        sampled = roi_align(
            self.tensor[:, None].to(torch.float32), rois, (mask_size, mask_size), 1.0, 0, aligned=True
        )  # (R, 1, M, M)
        return sampled.squeeze(1) >= 0.5

    @classmethod
    def from_polygon_masks(
        cls, polygon_masks: Union["PolygonMasks", List[List[np.ndarray]]], height: int, width: int
    ) -> "BitMasks":
        """Rasterises polygons into full-image bitmaps of size `height` x `width`."""
        if not isinstance(polygon_masks, PolygonMasks):
            polygon_masks = PolygonMasks(polygon_masks)
        masks = [polygons_to_bitmask(p, height, width) for p in polygon_masks.polygons]
        if not masks:
            return cls(torch.zeros(0, height, width, dtype=torch.bool))
        return cls(torch.from_numpy(np.stack(masks)))

    @classmethod
    def cat(cls, bitmasks_list: List["BitMasks"]) -> "BitMasks":
        """Concatenates BitMasks of the same image size."""
        if not bitmasks_list or not all(isinstance(m, BitMasks) for m in bitmasks_list):
            raise TypeError(f"BitMasks.cat expects a non-empty list of BitMasks, got {bitmasks_list!r:.200}")
        return cls(torch.cat([m.tensor for m in bitmasks_list], dim=0))


class PolygonMasks:
    """R instance masks as COCO polygons: per instance, a list of polygons whose union is the mask.

    Each polygon is a flat float64 array [x0, y0, x1, y1, ...] of at least 3 points, in image pixels.
    Polygons stay on the CPU; `crop_and_resize` rasterises them directly at the target resolution,
    which is both cheaper and sharper than cropping a full-image bitmap.
    """

    def __init__(self, polygons: List[List[Union[np.ndarray, Sequence[float], Tensor]]]):
        if not isinstance(polygons, list):
            raise TypeError(f"PolygonMasks expects a list (one entry per instance), got {type(polygons)}")
        self.polygons: List[List[np.ndarray]] = [_check_instance(i, p) for i, p in enumerate(polygons)]

    def to(self, device: Union[torch.device, str]) -> "PolygonMasks":
        """Polygons live on the CPU; returned unchanged so an `Instances.to` can include them."""
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __getitem__(self, item: Union[int, slice, List[int], Tensor]) -> "PolygonMasks":
        """Selects instances by int, slice, list of indices, index tensor or bool mask `Tensor[R]`."""
        if isinstance(item, int):
            return PolygonMasks([self.polygons[item]])
        if isinstance(item, slice):
            return PolygonMasks(self.polygons[item])
        if isinstance(item, Tensor):
            if item.dtype == torch.bool:
                if item.shape != (len(self),):
                    raise IndexError(
                        f"A bool mask of shape {tuple(item.shape)} cannot index {len(self)} polygon masks"
                    )
                item = item.nonzero().flatten()
            item = item.tolist()
        return PolygonMasks([self.polygons[i] for i in item])

    def __iter__(self):
        """Yields each instance's list of polygons."""
        return iter(self.polygons)

    def __len__(self) -> int:
        return len(self.polygons)

    def __repr__(self) -> str:
        return f"PolygonMasks(num_instances={len(self)})"

    def nonempty(self) -> Tensor:
        """`Tensor[R]` bool: whether each instance has at least one polygon."""
        return torch.tensor([len(p) > 0 for p in self.polygons], dtype=torch.bool)

    def area(self) -> Tensor:
        """`Tensor[R]`: the summed area of each instance's polygons (overlaps are counted twice)."""
        return torch.tensor([sum(polygon_area(p) for p in ps) for ps in self.polygons], dtype=torch.float32)

    def get_bounding_boxes(self) -> Boxes:
        """The tightest box around each instance's polygon points; (0, 0, 0, 0) for an instance
        without polygons."""
        boxes = torch.zeros(len(self), 4, dtype=torch.float32)
        for i, ps in enumerate(self.polygons):
            if ps:
                xy = np.concatenate(ps).reshape(-1, 2)
                boxes[i] = torch.from_numpy(np.concatenate([xy.min(axis=0), xy.max(axis=0)]))
        return Boxes(boxes)

    def crop_and_resize(self, boxes: Tensor, mask_size: int) -> Tensor:
        """Mask R-CNN targets: each instance's polygons inside its box, rasterised at `mask_size`.

        Args:
            boxes: `Tensor[R, 4]` (x0, y0, x1, y1), the box of instance i in row i.
            mask_size: M.

        Returns:
            `Tensor[R, M, M]` bool, on the device of `boxes`.
        """
        if len(boxes) != len(self):
            raise ValueError(f"crop_and_resize got {len(boxes)} boxes for {len(self)} polygon masks")
        if len(boxes) == 0:
            return torch.zeros(0, mask_size, mask_size, dtype=torch.bool, device=boxes.device)
        # Rasterisation runs on the CPU: one transfer of all boxes, not one per instance.
        boxes_np = boxes.detach().to("cpu", torch.float64).numpy()
        masks = [rasterize_polygons_within_box(ps, b, mask_size) for ps, b in zip(self.polygons, boxes_np)]
        return torch.stack(masks).to(device=boxes.device)

    @classmethod
    def cat(cls, polymasks_list: List["PolygonMasks"]) -> "PolygonMasks":
        """Concatenates the instances of several PolygonMasks."""
        if not polymasks_list or not all(isinstance(m, PolygonMasks) for m in polymasks_list):
            raise TypeError(
                f"PolygonMasks.cat expects a non-empty list of PolygonMasks, got {polymasks_list!r:.200}"
            )
        return cls(list(itertools.chain(*(m.polygons for m in polymasks_list))))


def _check_instance(index: int, polygons: Any) -> List[np.ndarray]:
    """Validates instance `index`'s polygons and returns them as flat float64 arrays."""
    if not isinstance(polygons, (list, tuple)):
        raise TypeError(
            f"PolygonMasks: instance {index} must be a list of polygons, got {type(polygons).__name__}"
        )
    checked = []
    for j, polygon in enumerate(polygons):
        if isinstance(polygon, (int, float)):
            raise TypeError(
                f"PolygonMasks: instance {index} is a list of numbers; it must be a list of polygons, "
                f"e.g. [[x0, y0, x1, y1, x2, y2]] rather than [x0, y0, x1, y1, x2, y2]"
            )
        if isinstance(polygon, Tensor):
            polygon = polygon.cpu().numpy()
        arr = np.asarray(polygon, dtype=np.float64).reshape(-1)
        if len(arr) < 6 or len(arr) % 2 != 0:
            raise ValueError(
                f"PolygonMasks: polygon {j} of instance {index} has {len(arr)} coordinates; a polygon "
                f"needs an even number of at least 6 (3 points as x, y pairs)"
            )
        checked.append(arr)
    return checked
