"""Box2BoxTransform and box_regression_loss on hand-computed cases."""
import math

import pytest
import torch

from d2mask.modeling import Box2BoxTransform, box_regression_loss

SRC = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
# centre (12, 7), size 20 x 10 against the source's centre (5, 5), size 10 x 10
TGT = torch.tensor([[2.0, 2.0, 22.0, 12.0]])


def test_get_deltas_by_hand():
    deltas = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)).get_deltas(SRC, TGT)
    torch.testing.assert_close(deltas, torch.tensor([[0.7, 0.2, math.log(2.0), 0.0]]))
    weighted = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)).get_deltas(SRC, TGT)
    torch.testing.assert_close(weighted, torch.tensor([[7.0, 2.0, 5 * math.log(2.0), 0.0]]))


def test_each_weight_scales_its_own_coordinate():
    t = Box2BoxTransform(weights=(1.0, 2.0, 3.0, 4.0))
    deltas = t.get_deltas(SRC, TGT)
    torch.testing.assert_close(deltas, torch.tensor([[0.7, 0.4, 3 * math.log(2.0), 0.0]]))
    torch.testing.assert_close(t.apply_deltas(deltas, SRC), TGT)


def test_apply_deltas_by_hand():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    out = t.apply_deltas(torch.tensor([[0.7, 0.2, math.log(2.0), 0.0]]), SRC)
    torch.testing.assert_close(out, TGT)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_round_trip(weights):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    src = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 50], dim=1)
    xy = torch.rand(50, 2, generator=g) * 100
    tgt = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 50], dim=1)
    t = Box2BoxTransform(weights=weights)
    torch.testing.assert_close(t.apply_deltas(t.get_deltas(src, tgt), src), tgt, rtol=1e-4, atol=1e-3)


def test_class_specific_deltas_decode_per_class():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.7, 0.2, math.log(2.0), 0.0]])  # (R=1, K=2 * 4)
    out = t.apply_deltas(deltas, SRC)
    assert out.shape == (1, 8)
    torch.testing.assert_close(out[:, :4], SRC)
    torch.testing.assert_close(out[:, 4:], TGT)


def test_scale_clamp_bounds_huge_sizes():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), SRC)
    # Width at most 10 * 1000 / 16 = 625 around the centre 5.
    torch.testing.assert_close(out, torch.tensor([[5 - 312.5, 5 - 312.5, 5 + 312.5, 5 + 312.5]]))


def test_smooth_l1_beta_zero_is_l1_with_finite_gradients():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    # gt deltas are (0.7, 0.2, log 2, 0); the prediction hits dh exactly, where |x| has a kink.
    pred = torch.tensor([[0.2, 0.5, 0.0, 0.0]], requires_grad=True)
    loss = box_regression_loss(t, SRC, pred, TGT, "smooth_l1", 0.0)
    assert loss.item() == pytest.approx(0.5 + 0.3 + math.log(2.0), rel=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    torch.testing.assert_close(pred.grad, torch.tensor([[-1.0, 1.0, -1.0, 0.0]]))


def test_smooth_l1_with_beta_by_hand():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    same = SRC.clone()  # gt deltas are all 0
    pred = torch.tensor([[0.5, 2.0, 0.0, -1.0]])
    loss = box_regression_loss(t, SRC, pred, same, "smooth_l1", 1.0)
    # 0.5 * 0.5^2 / 1 + (2 - 0.5) + 0 + 0.5 * 1^2 / 1 (|x| == beta lies on the linear side: 1 - 0.5)
    assert loss.item() == pytest.approx(0.125 + 1.5 + 0.0 + 0.5)


def iou_terms():
    """Anchor [0,0,10,10] predicted as itself; GT [0,0,20,10]: IoU 0.5, enclosure = union = 200."""
    iou = 0.5
    centre_dist2 = 5.0**2  # centres (5, 5) and (10, 5)
    diag2 = 20.0**2 + 10.0**2
    v = 4 / math.pi**2 * (math.atan(20 / 10) - math.atan(10 / 10)) ** 2
    alpha = v / (1 - iou + v)
    return {
        "giou": 1 - iou,
        "diou": 1 - iou + centre_dist2 / diag2,
        "ciou": 1 - iou + centre_dist2 / diag2 + alpha * v,
    }


@pytest.mark.parametrize("loss_type", ["giou", "diou", "ciou"])
def test_iou_losses_by_hand(loss_type):
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    gt = torch.tensor([[0.0, 0.0, 20.0, 10.0]])
    pred = torch.zeros(1, 4, requires_grad=True)
    loss = box_regression_loss(t, SRC, pred, gt, loss_type, 0.0)
    assert loss.item() == pytest.approx(iou_terms()[loss_type], rel=1e-5)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # Summed over boxes: two identical rows give twice the loss.
    two = box_regression_loss(t, SRC.repeat(2, 1), torch.zeros(2, 4), gt.repeat(2, 1), loss_type, 0.0)
    assert two.item() == pytest.approx(2 * iou_terms()[loss_type], rel=1e-5)


def test_unknown_loss_type_lists_the_valid_ones():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="smooth_l1"):
        box_regression_loss(t, SRC, torch.zeros(1, 4), TGT, "l2", 0.0)


@pytest.mark.parametrize("k", [1, 3])
def test_apply_deltas_on_zero_rows(k):
    """No positives in a batch, or no proposals in any image: decoding zero boxes gives zero boxes."""
    t = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    out = t.apply_deltas(torch.zeros(0, 4 * k), torch.zeros(0, 4))
    assert out.shape == (0, 4 * k)


@pytest.mark.parametrize("loss_type", ["smooth_l1", "giou", "diou", "ciou"])
def test_loss_with_no_positives_is_zero_with_gradients(loss_type):
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    pred = torch.zeros(0, 4, requires_grad=True)
    loss = box_regression_loss(t, torch.zeros(0, 4), pred, torch.zeros(0, 4), loss_type, 0.0)
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad.shape == (0, 4)
