"""Samplers: which matched anchors or proposals contribute to a head's losses.

Shape shorthand: `R` anchors or proposals, `P` sampled positives, `Q` sampled negatives.
"""
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from d2mask.config import ArgumentError, configurable
from d2mask.layers import nonzero_tuple
from d2mask.utils.registry import Registry

__all__ = ["SAMPLER_REGISTRY", "RandomSampler", "build_sampler", "resolve_sampler", "subsample_labels"]

SAMPLER_REGISTRY = Registry("SAMPLER")
SAMPLER_REGISTRY.__doc__ = """
Samplers of matched anchors/proposals, selected by `<stage>.SAMPLER.NAME` where the stage is
MODEL.RPN or MODEL.ROI_HEADS.

Each is called as `cls(cfg, stage_cfg)` and the object as `sampler(match_labels: Tensor[R])` with
labels 1 (foreground), 0 (background) and -1 (ignored), returning
`(pos_idx: Tensor[P] int64, neg_idx: Tensor[Q] int64)`. A sampler that draws at random and differs
only in how many it draws subclasses `RandomSampler` and overrides `num_samples`.
"""


def build_sampler(cfg, stage_cfg):
    """Builds the sampler named by `stage_cfg.SAMPLER.NAME` (stage_cfg is cfg.MODEL.RPN or cfg.MODEL.ROI_HEADS)."""
    return SAMPLER_REGISTRY.get(stage_cfg.SAMPLER.NAME)(cfg, stage_cfg)


def subsample_labels(
    labels: Tensor, num_samples: int, positive_fraction: float, bg_label: int
) -> Tuple[Tensor, Tensor]:
    """Draws at most `num_samples` elements, at most a `positive_fraction` of them positive, at random.

    Positives are the labels other than -1 and `bg_label`, negatives those equal to `bg_label`; -1 is
    never drawn. Takes min(#positives, int(num_samples * positive_fraction)) positives and fills the
    rest of `num_samples` with as many negatives as exist. The draw uses torch's generator on the
    labels' device, so `torch.manual_seed` makes it reproducible.

    Args:
        labels: `Tensor[R]` of -1, `bg_label`, or any other (foreground) value.
        num_samples: the most elements returned in all.
        positive_fraction: the largest share of positives, in [0, 1].
        bg_label: the background label.

    Returns:
        pos_idx: `Tensor[P]` int64, indices of the drawn positives.
        neg_idx: `Tensor[Q]` int64, indices of the drawn negatives.
    """
    positive = nonzero_tuple((labels != -1) & (labels != bg_label))[0]
    negative = nonzero_tuple(labels == bg_label)[0]
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    return _draw(positive, negative, num_pos, num_neg)


def _draw(positive: Tensor, negative: Tensor, num_pos: int, num_neg: int) -> Tuple[Tensor, Tensor]:
    """`num_pos` of the indices `positive` and `num_neg` of `negative`, uniformly at random."""
    pos_pick = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    neg_pick = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[pos_pick], negative[neg_pick]


@SAMPLER_REGISTRY.register()
class RandomSampler:
    """Uniform random sampling of a fixed budget per image with a cap on the share of positives.

    How many positives and negatives are drawn is `num_samples`, which a subclass may override.
    """

    @configurable
    def __init__(self, *, batch_size_per_image: int, positive_fraction: float):
        """
        Args:
            batch_size_per_image: the most elements sampled per image.
            positive_fraction: the largest share of positives among them, in [0, 1].
        """
        name = type(self).__name__
        if not isinstance(batch_size_per_image, int) or batch_size_per_image < 1:
            raise ArgumentError(
                f"{name} `batch_size_per_image` must be an int > 0, got {batch_size_per_image!r}", "batch_size_per_image"
            )
        if not 0.0 <= positive_fraction <= 1.0:
            raise ArgumentError(
                f"{name} `positive_fraction` must be in [0, 1], got {positive_fraction}", "positive_fraction"
            )
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    @classmethod
    def from_config(cls, cfg, stage_cfg):
        return {
            "batch_size_per_image": stage_cfg.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": stage_cfg.POSITIVE_FRACTION,
        }

    def num_samples(self, num_positive: int, num_negative: int) -> Tuple[int, int]:
        """(positives, negatives) to draw from an image with that many of each: as many positives as
        the cap allows, then negatives up to the budget."""
        num_pos = min(num_positive, int(self.batch_size_per_image * self.positive_fraction))
        return num_pos, min(num_negative, self.batch_size_per_image - num_pos)

    def __call__(self, match_labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Samples `Tensor[R]` labels (1 foreground, 0 background, -1 ignored) into (pos_idx, neg_idx)."""
        positive = nonzero_tuple(match_labels == 1)[0]
        negative = nonzero_tuple(match_labels == 0)[0]
        return _draw(positive, negative, *self.num_samples(positive.numel(), negative.numel()))


def resolve_sampler(
    owner: str,
    sampler: Optional[Callable],
    batch_size_per_image: Optional[int],
    positive_fraction: Optional[float],
) -> Callable:
    """The sampler of a head constructed in d2mask's form (a sampler object) or in Detectron2's
    (`batch_size_per_image=` and `positive_fraction=`, which mean a `RandomSampler`).

    Args:
        owner: the constructor's name, for the messages.
        sampler: d2mask's form, or None.
        batch_size_per_image, positive_fraction: Detectron2's form, or None.

    Returns:
        `sampler`, or the `RandomSampler` that Detectron2's arguments describe.
    """
    given = [name for name, value in (("batch_size_per_image", batch_size_per_image),
                                      ("positive_fraction", positive_fraction)) if value is not None]
    if sampler is not None:
        if given:
            raise ValueError(
                f"{owner} got a sampler object and {' and '.join(given)}; give either the sampler or "
                f"Detectron2's batch_size_per_image= and positive_fraction=, not both"
            )
        return sampler
    if len(given) != 2:
        raise ValueError(f"{owner} needs a sampler object, or both batch_size_per_image= and positive_fraction=")
    return RandomSampler(batch_size_per_image=batch_size_per_image, positive_fraction=positive_fraction)
