"""NegPosRatioSampler: hand-counted draws, exact index sets where everything is taken, and config."""
import pytest
import torch

from d2mask.config import ConfigError, get_cfg
from d2mask.modeling import build_sampler
from projects.DenseText.ratio_sampler import NegPosRatioSampler


def test_takes_everything_when_the_budget_allows():
    labels = torch.tensor([1, 0, -1, 1, 0, 0, -1, 0], dtype=torch.int8)
    # 2 positives, ratio 1.5 -> ceil(3) = 3 of the 4 negatives
    sampler = NegPosRatioSampler(batch_size_per_image=100, positive_fraction=0.5, neg_pos_ratio=1.5, min_negatives=0)
    pos_idx, neg_idx = sampler(labels)
    assert sorted(pos_idx.tolist()) == [0, 3]
    assert len(neg_idx) == 3 and set(neg_idx.tolist()) <= {1, 4, 5, 7}
    # ratio 2 -> all 4 negatives, exactly
    sampler = NegPosRatioSampler(batch_size_per_image=100, positive_fraction=0.5, neg_pos_ratio=2.0, min_negatives=0)
    pos_idx, neg_idx = sampler(labels)
    assert sorted(pos_idx.tolist()) == [0, 3] and sorted(neg_idx.tolist()) == [1, 4, 5, 7]
    assert pos_idx.dtype == neg_idx.dtype == torch.int64


@pytest.mark.parametrize(
    "num_pos, num_neg, expected",
    [
        (3, 10, (3, 3)),  # 3 positives (cap 4), 1 negative each
        (0, 10, (0, 2)),  # no positives: the minimum of 2 negatives
        (6, 10, (4, 4)),  # positives capped at 8 * 0.5 = 4, then 4 negatives fill the budget of 8
        (1, 1, (1, 1)),  # as many negatives as the image has
    ],
)
def test_counts(num_pos, num_neg, expected):
    sampler = NegPosRatioSampler(batch_size_per_image=8, positive_fraction=0.5, neg_pos_ratio=1.0, min_negatives=2)
    labels = torch.tensor([1] * num_pos + [0] * num_neg + [-1] * 5, dtype=torch.int8)[torch.randperm(num_pos + num_neg + 5)]
    pos_idx, neg_idx = sampler(labels)
    assert (len(pos_idx), len(neg_idx)) == expected
    assert (labels[pos_idx] == 1).all() and (labels[neg_idx] == 0).all()
    assert len(set(pos_idx.tolist())) == len(pos_idx) and len(set(neg_idx.tolist())) == len(neg_idx)


def test_fewer_negatives_than_random_sampler_on_a_sparse_image():
    cfg = get_cfg()
    cfg.merge_from_list(["IMPORTS", "['projects.DenseText.ratio_sampler']", "MODEL.RPN.SAMPLER.NAME", "NegPosRatioSampler",
                         "MODEL.RPN.SAMPLER.NEG_POS_RATIO", "3.0", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "512"])
    sampler = build_sampler(cfg, cfg.MODEL.RPN)
    assert isinstance(sampler, NegPosRatioSampler)
    assert (sampler.min_negatives, sampler.positive_fraction) == (16, 0.5)  # the keys add_config added
    labels = torch.zeros(5000, dtype=torch.int8)
    labels[:5] = 1
    _, neg_idx = sampler(labels)
    assert len(neg_idx) == 16  # max(16, 3 * 5); RandomSampler would draw 507


def test_config_without_the_import_says_what_to_import():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.ROI_HEADS.SAMPLER.NAME", "NegPosRatioSampler"])
    with pytest.raises(ConfigError, match="projects.DenseText.ratio_sampler"):
        build_sampler(cfg, cfg.MODEL.ROI_HEADS)
