"""subsample_labels / RandomSampler: counts with many, few and no positives, ignores, seeding, config."""
import pytest
import torch

from d2mask.config import get_cfg
from d2mask.modeling import RandomSampler, build_sampler, subsample_labels
from d2mask.modeling.sampling import resolve_sampler


def make_labels(num_pos, num_neg, num_ignore):
    labels = torch.tensor([1] * num_pos + [0] * num_neg + [-1] * num_ignore, dtype=torch.int8)
    # Interleave so that positions do not give the classes away.
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]


def check(labels, pos_idx, neg_idx):
    assert pos_idx.dtype == neg_idx.dtype == torch.int64
    assert (labels[pos_idx] == 1).all() and (labels[neg_idx] == 0).all()
    assert len(set(pos_idx.tolist())) == len(pos_idx) and len(set(neg_idx.tolist())) == len(neg_idx)


@pytest.mark.parametrize(
    "num_pos, num_neg, expected",
    [
        (10, 100, (4, 4)),  # many positives: capped at 8 * 0.5
        (2, 100, (2, 6)),  # few positives: negatives fill the budget
        (0, 100, (0, 8)),  # no positives
        (10, 2, (4, 2)),  # few negatives: fewer than 8 in all
    ],
)
def test_counts(num_pos, num_neg, expected):
    labels = make_labels(num_pos, num_neg, num_ignore=30)
    pos_idx, neg_idx = subsample_labels(labels, num_samples=8, positive_fraction=0.5, bg_label=0)
    check(labels, pos_idx, neg_idx)
    assert (len(pos_idx), len(neg_idx)) == expected


def test_ignored_labels_are_never_drawn():
    labels = make_labels(3, 3, num_ignore=500)
    pos_idx, neg_idx = subsample_labels(labels, num_samples=100, positive_fraction=0.5, bg_label=0)
    assert sorted(pos_idx.tolist()) == torch.nonzero(labels == 1).flatten().tolist()
    assert sorted(neg_idx.tolist()) == torch.nonzero(labels == 0).flatten().tolist()


def test_class_labels_with_background_last():
    # ROI-head style: classes 0..2 are foreground, 3 is background, -1 ignored.
    labels = torch.tensor([0, 3, 2, -1, 3, 1, 3])
    pos_idx, neg_idx = subsample_labels(labels, num_samples=4, positive_fraction=1.0, bg_label=3)
    assert sorted(pos_idx.tolist()) == [0, 2, 5]
    assert len(neg_idx) == 1 and labels[neg_idx].item() == 3


def test_reproducible_under_a_seed_and_random_otherwise():
    labels = make_labels(50, 500, 0)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append([t.tolist() for t in subsample_labels(labels, 64, 0.25, 0)])
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]
    # positives and negatives are each drawn at random, not the first ones found
    picked_pos, picked_neg = set(), set()
    for seed in range(5):
        torch.manual_seed(seed)
        pos_idx, neg_idx = subsample_labels(labels, 64, 0.25, 0)
        picked_pos.update(pos_idx.tolist())
        picked_neg.update(neg_idx.tolist())
    assert len(picked_pos) > 16 and len(picked_neg) > 48


def test_random_sampler_from_stage_config():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RPN.BATCH_SIZE_PER_IMAGE", "6", "MODEL.RPN.POSITIVE_FRACTION", "0.5"])
    sampler = build_sampler(cfg, cfg.MODEL.RPN)
    assert isinstance(sampler, RandomSampler)
    labels = make_labels(10, 10, 5)
    pos_idx, neg_idx = sampler(labels)
    check(labels, pos_idx, neg_idx)
    assert (len(pos_idx), len(neg_idx)) == (3, 3)
    roi = build_sampler(cfg, cfg.MODEL.ROI_HEADS)
    assert (roi.batch_size_per_image, roi.positive_fraction) == (512, 0.25)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size_per_image": 0, "positive_fraction": 0.5}, "batch_size_per_image must be an int > 0"),
    ({"batch_size_per_image": 8, "positive_fraction": 1.5}, r"positive_fraction must be in \[0, 1\]"),
])
def test_bad_settings_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomSampler(**kwargs)


def test_resolve_sampler_translates_detectron2_arguments_once():
    sampler = resolve_sampler("ROIHeads", None, batch_size_per_image=8, positive_fraction=0.25)
    assert isinstance(sampler, RandomSampler)
    assert (sampler.batch_size_per_image, sampler.positive_fraction) == (8, 0.25)
    own = RandomSampler(batch_size_per_image=4, positive_fraction=0.5)
    assert resolve_sampler("ROIHeads", own, None, None) is own
    with pytest.raises(ValueError, match="ROIHeads got a sampler object and positive_fraction; give either"):
        resolve_sampler("ROIHeads", own, None, 0.5)
    with pytest.raises(ValueError, match="needs a sampler object, or both"):
        resolve_sampler("ROIHeads", None, 8, None)
