"""Anchor generators: the reference boxes that dense heads (the RPN) classify and regress.

Shape shorthand: `L` feature levels, `A` cell anchors per location, `Hi x Wi` the size of level i.
"""
import math
from collections.abc import Sequence as _SequenceABC
from typing import List, Sequence, Union

import torch
from torch import Tensor, nn

from d2mask.config import configurable
from d2mask.layers import ShapeSpec
from d2mask.structures import Boxes
from d2mask.utils.registry import Registry

__all__ = ["ANCHOR_GENERATOR_REGISTRY", "DefaultAnchorGenerator", "build_anchor_generator", "permute_to_N_HWA_K"]

ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ANCHOR_GENERATOR_REGISTRY.__doc__ = """
Anchor generators, selected by MODEL.ANCHOR_GENERATOR.NAME.

Each is called as `cls(cfg, input_shape: list[ShapeSpec])` (one ShapeSpec per feature level) and
returns an nn.Module mapping a list of L feature maps to a list of L `Boxes`.
"""


def build_anchor_generator(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """Builds the anchor generator named by MODEL.ANCHOR_GENERATOR.NAME for the given feature levels."""
    return ANCHOR_GENERATOR_REGISTRY.get(cfg.MODEL.ANCHOR_GENERATOR.NAME)(cfg, input_shape)


def permute_to_N_HWA_K(tensor: Tensor, K: int) -> Tensor:
    """A dense head's output for one level, `Tensor[N, A*K, Hi, Wi]`, as `Tensor[N, Hi*Wi*A, K]`: K values
    per anchor in the anchors' (location, cell anchor) order of `DefaultAnchorGenerator`."""
    n, _, h, w = tensor.shape
    # (N, A*K, Hi, Wi) -> (N, A, K, Hi, Wi) -> (N, Hi, Wi, A, K) -> (N, Hi*Wi*A, K)
    return tensor.view(n, -1, K, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, K)


def _is_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < math.inf


def _broadcast_per_level(values: Sequence, num_levels: int, name: str) -> List[List[float]]:
    """Expands anchor parameters to one list per level, as Detectron2 does: a flat list, or a list
    holding a single list, serves every level; otherwise there must be one list per level."""
    if not isinstance(values, _SequenceABC) or isinstance(values, str) or len(values) == 0:
        raise ValueError(f"DefaultAnchorGenerator {name} must be a non-empty list (one per level, or one for all), got {values!r}")
    if not isinstance(values[0], _SequenceABC):
        values = [values]
    if len(values) == 1:
        values = list(values) * num_levels
    if len(values) != num_levels:
        raise ValueError(
            f"DefaultAnchorGenerator {name} has {len(values)} lists for {num_levels} feature levels "
            f"(strides); give one per level or a single one"
        )
    if not all(isinstance(v, _SequenceABC) and len(v) > 0 and all(_is_positive(x) for x in v) for v in values):
        raise ValueError(f"DefaultAnchorGenerator {name} must be lists of numbers > 0, got {values!r}")
    return [list(v) for v in values]


class _BufferList(nn.Module):
    """Tensors that follow the module across devices and dtypes but stay out of its state dict
    (they are recomputed from the config, and Detectron2 checkpoints do not hold them)."""

    def __init__(self, tensors: List[Tensor]):
        super().__init__()
        for i, t in enumerate(tensors):
            self.register_buffer(str(i), t, persistent=False)

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self):
        return iter(self._buffers.values())


@ANCHOR_GENERATOR_REGISTRY.register()
class DefaultAnchorGenerator(nn.Module):
    """Places every cell anchor of a level at every location of that level's feature map.

    Anchors come ordered (location, cell anchor) within a level, locations row by row, the order in
    which the RPN head's outputs are flattened.
    """

    box_dim: int = 4

    @configurable
    def __init__(
        self,
        *,
        sizes: Union[List[List[float]], List[float]],
        aspect_ratios: Union[List[List[float]], List[float]],
        strides: List[int],
        offset: float = 0.5,
    ):
        """
        Args:
            sizes: per level, anchor sizes in input pixels (square roots of areas); a flat list
                (or a list holding one list) serves every level.
            aspect_ratios: per level, anchor aspect ratios (height / width); broadcast like `sizes`.
            strides: per level, the feature map's stride in input pixels; their number is L.
            offset: anchor centres are at (offset + index) * stride; in [0, 1).
        """
        super().__init__()
        sizes = _broadcast_per_level(sizes, len(strides), "sizes (MODEL.ANCHOR_GENERATOR.SIZES)")
        aspect_ratios = _broadcast_per_level(
            aspect_ratios, len(strides), "aspect_ratios (MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS)"
        )
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"DefaultAnchorGenerator offset (MODEL.ANCHOR_GENERATOR.OFFSET) must be in [0, 1), got {offset}")
        self.strides = list(strides)
        self.offset = offset
        self.cell_anchors = _BufferList([self.generate_cell_anchors(s, a) for s, a in zip(sizes, aspect_ratios)])

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        return {
            "sizes": cfg.MODEL.ANCHOR_GENERATOR.SIZES,
            "aspect_ratios": cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
            "strides": [s.stride for s in input_shape],
            "offset": cfg.MODEL.ANCHOR_GENERATOR.OFFSET,
        }

    @staticmethod
    def generate_cell_anchors(
        sizes: Sequence[float] = (32, 64, 128, 256, 512), aspect_ratios: Sequence[float] = (0.5, 1, 2)
    ) -> Tensor:
        """`Tensor[len(sizes) * len(aspect_ratios), 4]`: XYXY anchors centred at (0, 0), sizes outer and
        aspect ratios inner. A size is the square root of the anchor's area, an aspect ratio its h / w."""
        anchors = []
        for size in sizes:
            area = float(size) ** 2
            for ratio in aspect_ratios:
                w = math.sqrt(area / ratio)
                h = ratio * w
                anchors.append([-w / 2, -h / 2, w / 2, h / 2])
        return torch.tensor(anchors, dtype=torch.float32)

    @property
    def num_anchors(self) -> List[int]:
        """Cell anchors per location, for each level."""
        return [len(cell) for cell in self.cell_anchors]

    @property
    def num_cell_anchors(self) -> List[int]:
        """Detectron2's other name for `num_anchors`."""
        return self.num_anchors

    def _grid_anchors(self, grid_sizes: List[Sequence[int]]) -> List[Tensor]:
        anchors = []
        for (height, width), stride, cell in zip(grid_sizes, self.strides, self.cell_anchors):
            # Integer steps scaled afterwards, so centres are exact multiples of the stride.
            xs = (torch.arange(width, device=cell.device, dtype=cell.dtype) + self.offset) * stride
            ys = (torch.arange(height, device=cell.device, dtype=cell.dtype) + self.offset) * stride
            shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (Hi*Wi, 4)
            # (Hi*Wi, 1, 4) + (1, A, 4) -> (Hi*Wi*A, 4)
            anchors.append((shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4))
        return anchors

    def forward(self, features: List[Tensor]) -> List[Boxes]:
        """
        Args:
            features: L feature maps `Tensor[N, C, Hi, Wi]` (only their sizes are read).

        Returns:
            L `Boxes` of `Hi * Wi * A` anchors each, the same for every image.
        """
        if len(features) != len(self.strides):
            raise ValueError(f"DefaultAnchorGenerator was built for {len(self.strides)} levels, got {len(features)} feature maps")
        grid_sizes = [f.shape[-2:] for f in features]
        return [Boxes(a) for a in self._grid_anchors(grid_sizes)]
