"""The ROI heads registry and `ROIHeads`, the base class that matches proposals to GT and samples them.

Shape shorthand: `R` proposals of one image, `G` its GT boxes, `K` foreground classes (class `K` is
background), `S` sampled proposals.
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from d2mask.config import config_keys, configurable
from d2mask.layers import ShapeSpec
from d2mask.structures import Boxes, ImageList, Instances
from d2mask.utils.registry import Registry

from ..matcher import build_anchor_matcher, classes_of_matches, stage_keys
from ..proposal_generator import add_ground_truth_to_proposals
from ..sampling import build_sampler, resolve_sampler

__all__ = [
    "ROI_HEADS_REGISTRY",
    "build_roi_heads",
    "ROIHeads",
    "select_foreground_proposals",
    "select_proposals_with_visible_keypoints",
]

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = """
ROI heads, named by MODEL.ROI_HEADS.NAME. An entry is called as `obj(cfg, input_shape)` with the
backbone's {feature name: ShapeSpec} and returns an `ROIHeads`, called as
`heads(images, features, proposals, targets=None) -> (list[Instances], dict of losses)`.
"""


def build_roi_heads(cfg, input_shape: Dict[str, ShapeSpec]) -> "ROIHeads":
    """The ROI heads named by `cfg.MODEL.ROI_HEADS.NAME`, built on backbone features `input_shape`."""
    return ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME)(cfg, input_shape)


def select_foreground_proposals(
    proposals: List[Instances], bg_label: int
) -> Tuple[List[Instances], List[Tensor]]:
    """The proposals matched to a GT object, e.g. to train the mask head on them only.

    Args:
        proposals: per image, sampled proposals with `gt_classes` (`bg_label` for background, -1 ignored).
        bg_label: the background class, K.

    Returns:
        Per image, the foreground proposals, and `Tensor[R]` bool which of its proposals they are.
    """
    foreground, masks = [], []
    for per_image in proposals:
        is_fg = (per_image.gt_classes != -1) & (per_image.gt_classes != bg_label)
        foreground.append(per_image[is_fg])
        masks.append(is_fg)
    return foreground, masks


def select_proposals_with_visible_keypoints(proposals: List[Instances]) -> List[Instances]:
    """The proposals with at least one labelled GT keypoint inside their box, the only ones the keypoint
    head can learn from.

    Args:
        proposals: per image, foreground proposals with `proposal_boxes` and `gt_keypoints`
            (`Keypoints` of J keypoints; an image without GT has none and no proposal is kept).

    Returns:
        Per image, the proposals kept.
    """
    kept = []
    for per_image in proposals:
        if not per_image.has("gt_keypoints"):
            kept.append(per_image[:0])
            continue
        keypoints = per_image.gt_keypoints.tensor  # (R, J, 3)
        boxes = per_image.proposal_boxes.tensor[:, None]  # (R, 1, 4)
        x, y = keypoints[..., 0], keypoints[..., 1]  # (R, J)
        inside = (x >= boxes[..., 0]) & (x <= boxes[..., 2]) & (y >= boxes[..., 1]) & (y <= boxes[..., 3])
        kept.append(per_image[(inside & (keypoints[..., 2] > 0)).any(dim=1)])
    return kept


class ROIHeads(nn.Module):
    """Base class of the ROI heads: in training it labels and samples the proposals (fields
    gt_classes, gt_boxes, gt_masks... set on each sampled proposal); subclasses define `forward`,
    the heads that run on the sampled regions in training and on all proposals in inference."""

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        batch_size_per_image: Optional[int] = None,
        positive_fraction: Optional[float] = None,
        proposal_matcher: Callable,
        proposal_append_gt: bool = True,
        proposal_sampler: Optional[Callable] = None,
    ):
        """
        Args:
            num_classes: K, the number of foreground classes.
            batch_size_per_image, positive_fraction: Detectron2's form instead of `proposal_sampler`:
                a `RandomSampler` with these settings.
            proposal_matcher: called as `matcher(gt_boxes, proposal_boxes) -> (matched_idxs: Tensor[R]
                int64, match_labels: Tensor[R] with 1 foreground, 0 background, -1 ignore)`.
            proposal_append_gt: add each image's GT boxes to its proposals in training.
            proposal_sampler: called as `sampler(match_labels) -> (pos_idx, neg_idx)`, the proposals
                kept to train the heads.
        """
        super().__init__()
        if not num_classes > 0:
            name = type(self).__name__
            raise ValueError(f"{name} num_classes (MODEL.ROI_HEADS.NUM_CLASSES) must be an int > 0, got {num_classes}")
        self.num_classes = num_classes
        self.proposal_matcher = proposal_matcher
        self.proposal_sampler = resolve_sampler(
            type(self).__name__, proposal_sampler, batch_size_per_image, positive_fraction
        )
        self.proposal_append_gt = proposal_append_gt

    @classmethod
    def from_config(cls, cfg):
        stage_cfg = cfg.MODEL.ROI_HEADS
        with config_keys(**stage_keys("MODEL.ROI_HEADS")):
            matcher, sampler = build_anchor_matcher(cfg, stage_cfg), build_sampler(cfg, stage_cfg)
        return {
            "num_classes": stage_cfg.NUM_CLASSES,
            "proposal_matcher": matcher,
            "proposal_sampler": sampler,
            "proposal_append_gt": stage_cfg.PROPOSAL_APPEND_GT,
        }

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: List[Instances], targets: List[Instances]) -> List[Instances]:
        """Matches each image's proposals to its GT boxes and samples those the heads train on.

        Args:
            proposals: per image, Instances(proposal_boxes, objectness_logits).
            targets: per image, Instances(gt_boxes, gt_classes, and any further gt_* field).

        Returns:
            Per image, the S sampled proposals, foreground first, labelled by `_label_proposals`.
        """
        if targets is None or len(targets) != len(proposals):
            raise ValueError(
                f"ROI heads in training need the GT instances of each of the {len(proposals)} images, got "
                f"{'none' if targets is None else len(targets)}; give each input dict an 'instances' field"
            )
        if self.proposal_append_gt:
            # Early in training the RPN rarely proposes anything close to a GT box; the GT boxes
            # themselves give the box and mask heads well-aligned foreground from the first iteration.
            proposals = add_ground_truth_to_proposals(targets, proposals)
        sampled = []
        for proposals_i, targets_i in zip(proposals, targets):
            matched_idxs, match_labels = self.proposal_matcher(targets_i.gt_boxes, proposals_i.proposal_boxes)
            pos_idx, neg_idx = self.proposal_sampler(match_labels)
            keep = torch.cat([pos_idx, neg_idx])  # (S,)
            sampled.append(self._label_proposals(proposals_i[keep], targets_i, matched_idxs[keep], match_labels[keep]))
        return sampled

    def _label_proposals(
        self, proposals: Instances, targets: Instances, matched_idxs: Tensor, match_labels: Tensor
    ) -> Instances:
        """One image's proposals with the fields the heads' losses read.

        Args:
            proposals: R proposals of one image.
            targets: its GT instances (gt_boxes, gt_classes, and any further gt_* field).
            matched_idxs, match_labels: `Tensor[R]`, the matcher's output for these proposals.

        Returns:
            `proposals` with `gt_classes` (K for background, -1 for ignored) and every gt_* field of
            the target each is matched to. Background proposals carry the fields of their nearest GT
            (or, in an image without GT, `gt_boxes` equal to themselves); the losses read those only
            for foreground.
        """
        if len(targets) > 0:
            for name, value in targets.get_fields().items():
                if name.startswith("gt_") and name != "gt_classes" and not proposals.has(name):
                    proposals.set(name, value[matched_idxs])
        else:
            proposals.gt_boxes = Boxes(proposals.proposal_boxes.tensor.clone())
        proposals.gt_classes = classes_of_matches(targets.gt_classes, matched_idxs, match_labels, self.num_classes)
        return proposals

    def forward(
        self,
        images: ImageList,
        features: Dict[str, Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, Tensor]]:
        """
        Args:
            images: the input batch (its image sizes; heads rarely need the pixels).
            features: the backbone's {feature name: `Tensor[N, C, H_f, W_f]`}.
            proposals: per image, Instances(proposal_boxes, objectness_logits).
            targets: per image, the GT instances; needed in training only.

        Returns:
            In training, the sampled proposals and {loss name: Tensor}; in inference, per image,
            Instances(pred_boxes, scores, pred_classes[, pred_masks]) and {}.
        """
        raise NotImplementedError


def __getattr__(name: str):
    # Detectron2 defines these in this module and projects import them from here; d2mask gives each
    # its own file, which imports this one, so they are looked up on first use instead of imported.
    if name == "StandardROIHeads":
        from .standard_roi_heads import StandardROIHeads

        return StandardROIHeads
    if name == "Res5ROIHeads":
        from .res5_roi_heads import Res5ROIHeads

        return Res5ROIHeads
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
