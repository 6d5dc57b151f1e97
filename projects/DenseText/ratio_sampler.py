"""A sampler that draws negatives in proportion to the positives, as SSD's 3:1 rule does (Liu et al.,
2016), instead of filling a fixed budget per image.

Registered in SAMPLER_REGISTRY as "NegPosRatioSampler"; select it with `MODEL.RPN.SAMPLER.NAME` or
`MODEL.ROI_HEADS.SAMPLER.NAME`.

Why: a budget large enough for an image with hundreds of objects (BATCH_SIZE_PER_IMAGE 512 and more)
fills an image with few objects almost entirely with background when sampled by `RandomSampler`.
Here the number of negatives follows the number of positives, so dense and sparse images in one
dataset each train on a balanced sample.

Shape shorthand: `R` anchors or proposals, `P` sampled positives, `Q` sampled negatives.
"""
import math
from typing import Tuple

from d2mask.config import ConfigError, configurable
from d2mask.modeling import SAMPLER_REGISTRY, RandomSampler

__all__ = ["NegPosRatioSampler", "add_config"]


def add_config(cfg) -> None:
    """Adds SAMPLER.NEG_POS_RATIO and SAMPLER.MIN_NEGATIVES to both stages (called for configs that
    list this module in IMPORTS). Keys already present keep their values."""
    for stage in (cfg.MODEL.RPN, cfg.MODEL.ROI_HEADS):
        if "NEG_POS_RATIO" not in stage.SAMPLER:
            # Negatives drawn per sampled positive by NegPosRatioSampler.
            stage.SAMPLER.NEG_POS_RATIO = 3.0
        if "MIN_NEGATIVES" not in stage.SAMPLER:
            # Negatives drawn by NegPosRatioSampler even from an image without positives.
            stage.SAMPLER.MIN_NEGATIVES = 16


@SAMPLER_REGISTRY.register()
class NegPosRatioSampler(RandomSampler):
    """Draws up to `batch_size_per_image * positive_fraction` positives, then
    `max(min_negatives, ceil(neg_pos_ratio * positives))` negatives, all within
    `batch_size_per_image` and as far as the image has them, uniformly at random (`RandomSampler`
    with another `num_samples`)."""

    @configurable
    def __init__(
        self,
        *,
        batch_size_per_image: int,
        positive_fraction: float,
        neg_pos_ratio: float = 3.0,
        min_negatives: int = 16,
    ):
        """
        Args:
            batch_size_per_image: the most elements sampled per image.
            positive_fraction: the largest share of positives in that budget, in [0, 1].
            neg_pos_ratio: negatives drawn per positive drawn.
            min_negatives: negatives drawn however few positives there are.
        """
        super().__init__(batch_size_per_image=batch_size_per_image, positive_fraction=positive_fraction)
        if neg_pos_ratio < 0:
            raise ValueError(f"NegPosRatioSampler neg_pos_ratio (SAMPLER.NEG_POS_RATIO) must be >= 0, got {neg_pos_ratio}")
        if min_negatives < 0:
            raise ValueError(f"NegPosRatioSampler min_negatives (SAMPLER.MIN_NEGATIVES) must be >= 0, got {min_negatives}")
        self.neg_pos_ratio = neg_pos_ratio
        self.min_negatives = min_negatives

    @classmethod
    def from_config(cls, cfg, stage_cfg):
        if "NEG_POS_RATIO" not in stage_cfg.SAMPLER:
            raise ConfigError(
                "NegPosRatioSampler reads SAMPLER.NEG_POS_RATIO and SAMPLER.MIN_NEGATIVES, which this config "
                "lacks: list 'projects.DenseText.ratio_sampler' in IMPORTS (its add_config adds them)"
            )
        return {
            **super().from_config(cfg, stage_cfg),
            "neg_pos_ratio": stage_cfg.SAMPLER.NEG_POS_RATIO,
            "min_negatives": stage_cfg.SAMPLER.MIN_NEGATIVES,
        }

    def num_samples(self, num_positive: int, num_negative: int) -> Tuple[int, int]:
        """(positives, negatives) drawn from an image with that many of each: `RandomSampler`'s, with
        the negatives limited to the ratio (or the minimum)."""
        num_pos, num_neg = super().num_samples(num_positive, num_negative)
        return num_pos, min(num_neg, max(self.min_negatives, math.ceil(self.neg_pos_ratio * num_pos)))
