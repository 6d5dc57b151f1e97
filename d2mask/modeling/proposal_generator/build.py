"""The proposal-generator registry and `build_proposal_generator`."""
from typing import Dict

from torch import nn

from d2mask.layers import ShapeSpec
from d2mask.utils.registry import Registry

__all__ = ["PROPOSAL_GENERATOR_REGISTRY", "build_proposal_generator"]

PROPOSAL_GENERATOR_REGISTRY = Registry("PROPOSAL_GENERATOR")
PROPOSAL_GENERATOR_REGISTRY.__doc__ = """
Proposal generators, selected by MODEL.PROPOSAL_GENERATOR.NAME.

Each is called as `cls(cfg, input_shape: dict[str, ShapeSpec])` (the backbone's output shapes) and
returns an nn.Module called as `(images: ImageList, features: dict[str, Tensor],
gt_instances: list[Instances] | None) -> (proposals: list[Instances], losses: dict[str, Tensor])`.
"""


def build_proposal_generator(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Builds the proposal generator named by MODEL.PROPOSAL_GENERATOR.NAME over the given features."""
    return PROPOSAL_GENERATOR_REGISTRY.get(cfg.MODEL.PROPOSAL_GENERATOR.NAME)(cfg, input_shape)
