"""Anchor generators: the reference boxes that dense heads (the RPN) classify and regress.

Shape shorthand: `L` feature levels, `A` cell anchors per location, `Hi x Wi` the size of level i.
"""
import math
from collections.abc import Sequence as _SequenceABC
from typing import List, Sequence

import torch
from torch import Tensor, nn

from d2mask.config import ConfigError, configurable
from d2mask.layers import ShapeSpec
from d2mask.structures import Boxes
from d2mask.utils.registry import Registry

__all__ = ["ANCHOR_GENERATOR_REGISTRY", "DefaultAnchorGenerator", "build_anchor_generator"]

ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ANCHOR_GENERATOR_REGISTRY.__doc__ = """
Anchor generators, selected by MODEL.ANCHOR_GENERATOR.NAME.

Each is called as `cls(cfg, input_shape: list[ShapeSpec])` (one ShapeSpec per feature level) and
returns an nn.Module mapping a list of L feature maps to a list of L `Boxes`.
"""


def build_anchor_generator(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """Builds the anchor generator named by MODEL.ANCHOR_GENERATOR.NAME for the given feature levels."""
    return ANCHOR_GENERATOR_REGISTRY.get(cfg.MODEL.ANCHOR_GENERATOR.NAME)(cfg, input_shape)


def _per_level(values: Sequence, num_levels: int, key: str) -> List[List[float]]:
    """Expands a config list to one list per level: a flat list, or a single list, serves all levels."""
    if len(values) == 0:
        raise ConfigError(f"{key} is empty; give one list of values per feature level, or one for all")
    if not isinstance(values[0], _SequenceABC):
        values = [values]
    if len(values) == 1:
        values = list(values) * num_levels
    if len(values) != num_levels:
        raise ConfigError(
            f"{key} has {len(values)} lists for {num_levels} feature levels; give one per level or a single one"
        )
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


def _cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
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
        sizes: List[List[float]],
        aspect_ratios: List[List[float]],
        strides: List[int],
        offset: float = 0.5,
    ):
        """
        Args:
            sizes: per level, anchor sizes in input pixels (square roots of areas).
            aspect_ratios: per level, anchor aspect ratios (height / width).
            strides: per level, the feature map's stride in input pixels.
            offset: anchor centres are at (offset + index) * stride; in [0, 1).
        """
        super().__init__()
        if not len(sizes) == len(aspect_ratios) == len(strides):
            raise ValueError(
                f"DefaultAnchorGenerator needs one entry per level, got {len(sizes)} size lists, "
                f"{len(aspect_ratios)} aspect-ratio lists and {len(strides)} strides"
            )
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"DefaultAnchorGenerator offset must be in [0, 1), got {offset}")
        self.strides = list(strides)
        self.offset = offset
        self.cell_anchors = _BufferList([_cell_anchors(s, a) for s, a in zip(sizes, aspect_ratios)])

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        num_levels = len(input_shape)
        return {
            "sizes": _per_level(cfg.MODEL.ANCHOR_GENERATOR.SIZES, num_levels, "MODEL.ANCHOR_GENERATOR.SIZES"),
            "aspect_ratios": _per_level(
                cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS, num_levels, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"
            ),
            "strides": [s.stride for s in input_shape],
            "offset": cfg.MODEL.ANCHOR_GENERATOR.OFFSET,
        }

    @property
    def num_anchors(self) -> List[int]:
        """Cell anchors per location, for each level."""
        return [len(cell) for cell in self.cell_anchors]

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
