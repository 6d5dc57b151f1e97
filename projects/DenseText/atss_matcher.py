"""ATSS: an anchor matcher whose IoU threshold adapts to each ground-truth box (Zhang et al., 2020,
"Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive Training Sample Selection").

Registered in ANCHOR_MATCHER_REGISTRY as "ATSSMatcher"; select it with `MODEL.RPN.MATCHER.NAME`.

Why it suits dense scenes of small objects: a fixed IoU threshold of 0.7 is out of reach for an object
smaller than the smallest anchor (a 10 x 10 box inside a 16 x 16 anchor has IoU 0.39), so the default
matcher leaves such objects with their single best anchor as the only positive. ATSS instead takes,
for each GT box, the `topk` anchors of each level whose centres are nearest to the GT centre and keeps
those whose IoU reaches the mean plus the standard deviation of these candidates' IoUs: every object
gets positives whatever its size, in numbers that follow how well the anchors fit it.

Shape shorthand: `G` ground-truth boxes, `R` anchors, `L` anchor levels, `T` candidates per GT box.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from d2mask.config import ConfigError, configurable
from d2mask.modeling import ANCHOR_MATCHER_REGISTRY
from d2mask.structures import Boxes, matched_pairwise_iou

__all__ = ["ATSSMatcher", "add_config"]

# Distances computed at once. Sorting a chunk keeps about 20 bytes per element alive (distances,
# their sorted copy and int64 positions), so a chunk costs ~80 MB whatever the number of GT boxes.
_MAX_CHUNK_ELEMENTS = 1 << 22
# An anchor centre must lie this far inside a GT box to count as inside (the ATSS paper's margin).
_INSIDE_EPS = 0.01


def add_config(cfg) -> None:
    """Adds MATCHER.TOPK to both matcher stages (called for configs that list this module in IMPORTS).

    Keys already present keep their values, so listing the module twice changes nothing.
    """
    for stage in (cfg.MODEL.RPN, cfg.MODEL.ROI_HEADS):
        if "TOPK" not in stage.MATCHER:
            # Candidates per level and GT box for ATSSMatcher (the paper's k).
            stage.MATCHER.TOPK = 9


@ANCHOR_MATCHER_REGISTRY.register()
class ATSSMatcher:
    """Adaptive training sample selection for anchors spread over levels of different sizes.

    For each GT box: take the `topk` anchors nearest (centre to centre) on each level, compute their
    IoUs with the box, and make foreground those whose IoU is at least mean + std of those IoUs and
    whose centre lies inside the box. An anchor chosen by several GT boxes goes to the one it overlaps
    most. Every other anchor is background; none is ignored.

    The levels are those of the registry contract's `num_per_level` (which the RPN passes): the
    anchors of level 0 first, then those of level 1, and so on.

    Distances are reduced chunk by chunk (at most `max_chunk_elements` per chunk), so the G x R
    distance matrix is never held (3,000 GT boxes on 250,000 anchors stay within ~100 MB); the
    candidates' IoUs are a G x T matrix with T = topk * L.
    """

    @configurable
    def __init__(self, *, topk: int = 9, max_chunk_elements: int = _MAX_CHUNK_ELEMENTS):
        """
        Args:
            topk: candidates per level and GT box, chosen by centre distance.
            max_chunk_elements: the most distances computed at once; bounds the memory used.
        """
        if topk < 1:
            raise ValueError(f"ATSSMatcher topk (MATCHER.TOPK) must be >= 1, got {topk}")
        self.topk = topk
        self.max_chunk_elements = max_chunk_elements

    @classmethod
    def from_config(cls, cfg, stage_cfg):
        if "TOPK" not in stage_cfg.MATCHER:
            raise ConfigError(
                "ATSSMatcher reads MATCHER.TOPK, which this config lacks: list 'projects.DenseText.atss_matcher' "
                "in IMPORTS (its add_config adds the key)"
            )
        return {"topk": stage_cfg.MATCHER.TOPK}

    def __call__(
        self, gt_boxes: Boxes, anchors: Boxes, num_per_level: Optional[List[int]] = None
    ) -> Tuple[Tensor, Tensor]:
        """
        Args:
            gt_boxes: the G ground-truth boxes of one image.
            anchors: the R anchors of that image, all levels together, level by level.
            num_per_level: the L per-level anchor counts (summing to R).

        Returns:
            matched_idxs: `Tensor[R]` int64, the GT box of each foreground anchor (0 for the others).
            match_labels: `Tensor[R]` int8, 1 foreground, 0 background.
        """
        if num_per_level is None:
            raise ValueError(
                "ATSSMatcher picks candidates level by level and needs num_per_level, the anchors of each "
                "level; it matches anchors (MODEL.RPN.MATCHER.NAME), not proposals"
            )
        if sum(num_per_level) != len(anchors):
            raise ValueError(f"ATSSMatcher: num_per_level {list(num_per_level)} does not add up to the {len(anchors)} anchors")
        device = anchors.device
        n, m = len(anchors), len(gt_boxes)
        matched_idxs = torch.zeros(n, dtype=torch.int64, device=device)
        match_labels = torch.zeros(n, dtype=torch.int8, device=device)
        if m == 0 or n == 0:
            return matched_idxs, match_labels

        candidates = self._nearest_candidates(gt_boxes, anchors, num_per_level)  # (G, T) anchor indices
        k = candidates.shape[1]
        candidate_boxes = Boxes(anchors.tensor[candidates.reshape(-1)])
        gt_repeated = Boxes(gt_boxes.tensor[:, None, :].expand(m, k, 4).reshape(-1, 4))
        ious = matched_pairwise_iou(gt_repeated, candidate_boxes).view(m, k)
        # A single candidate has no spread: its own IoU is the threshold.
        spread = ious.std(dim=1, keepdim=True) if k > 1 else torch.zeros_like(ious[:, :1])
        threshold = ious.mean(dim=1, keepdim=True) + spread
        centers = candidate_boxes.get_centers().view(m, k, 2)
        gt = gt_boxes.tensor[:, None, :]  # (G, 1, 4)
        # (G, T, 4): distances from each candidate centre to the four sides of its GT box
        margins = torch.cat([centers - gt[..., :2], gt[..., 2:] - centers], dim=2)
        positive = (ious >= threshold) & (margins.min(dim=2).values > _INSIDE_EPS)

        # Resolve anchors chosen by several GT boxes: highest IoU wins, then the lowest GT index.
        anchor_ids = candidates[positive]
        gt_ids = torch.arange(m, device=device)[:, None].expand(m, k)[positive]
        pos_ious = ious[positive]
        best_iou = torch.full((n,), -1.0, device=device).scatter_reduce(0, anchor_ids, pos_ious, "amax")
        wins = pos_ious == best_iou[anchor_ids]
        winner = torch.full((n,), m, dtype=torch.int64, device=device)
        winner.scatter_reduce_(0, anchor_ids[wins], gt_ids[wins], "amin")
        foreground = winner < m
        matched_idxs[foreground] = winner[foreground]
        match_labels[foreground] = 1
        return matched_idxs, match_labels

    def _nearest_candidates(self, gt_boxes: Boxes, anchors: Boxes, num_per_level: List[int]) -> Tensor:
        """`Tensor[G, T]` int64: for each GT box, the indices of the `topk` anchors of each level
        nearest to its centre (fewer on a level with fewer anchors)."""
        gt_centers = gt_boxes.get_centers()  # (G, 2)
        anchor_centers = anchors.get_centers()  # (R, 2), level by level
        step = max(1, self.max_chunk_elements // len(gt_boxes))
        candidates = []
        start = 0
        for count in num_per_level:
            end = start + count
            best_dist = best_idx = None
            # A running top-k over chunks of this level's anchors, so only (G, step) distances exist.
            # Each step sorts [previous best, chunk] stably: ties then go to the lower anchor index
            # (anchors sharing a centre tie exactly), and the result does not depend on the chunking.
            for chunk in range(start, end, step):
                chunk_end = min(chunk + step, end)
                # (G, chunk); computed directly rather than by matrix products, whose rounding would
                # reorder near-equal distances
                dist = torch.cdist(
                    gt_centers, anchor_centers[chunk:chunk_end], compute_mode="donot_use_mm_for_euclid_dist"
                )
                kept = 0 if best_dist is None else best_dist.shape[1]
                if kept:
                    dist = torch.cat([best_dist, dist], dim=1)
                dist, pick = dist.sort(dim=1, stable=True)
                best_dist, pick = dist[:, : self.topk], pick[:, : self.topk]
                # Sorted positions -> anchor positions: the first `kept` columns were the running best.
                from_chunk = chunk + pick - kept
                best_idx = from_chunk if not kept else torch.where(
                    pick < kept, best_idx.gather(1, pick.clamp(max=kept - 1)), from_chunk
                )
            if best_idx is not None:
                candidates.append(best_idx)
            start = end
        return torch.cat(candidates, dim=1)
