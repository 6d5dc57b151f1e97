import math

import pytest
import torch

from d2mask.config import get_cfg
from d2mask.layers import ShapeSpec
from d2mask.modeling.roi_heads.mask_head import (
    MaskRCNNConvUpsampleHead,
    build_mask_head,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from d2mask.structures import BitMasks, Boxes, Instances, PolygonMasks
from d2mask.utils.events import EventStorage


def _softplus(x):
    return math.log1p(math.exp(x))


def _foreground_regions():
    """Image 0: one class-1 region over a GT mask whose left half is set; image 1: no region."""
    gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    gt[0, :, :2] = True
    image0 = Instances((8, 8))
    image0.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 4.0, 4.0]]))
    image0.gt_classes = torch.tensor([1])
    image0.gt_masks = BitMasks(gt)
    image1 = Instances((8, 8))
    image1.proposal_boxes = Boxes(torch.zeros(0, 4))
    image1.gt_classes = torch.zeros(0, dtype=torch.int64)
    image1.gt_masks = BitMasks(torch.zeros(0, 8, 8))
    return [image0, image1]


def test_mask_loss_on_a_hand_made_case():
    logits = torch.full((1, 2, 2, 2), 100.0)  # class 0's channel is wrong everywhere: must be ignored
    logits[0, 1] = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    # The box covers the GT's left half on its own left half: the 2 x 2 target is [[1, 0], [1, 0]].
    expected = (_softplus(-2.0) + _softplus(-1.0) + _softplus(0.0) + _softplus(3.0)) / 4
    assert mask_rcnn_loss(logits, _foreground_regions()).item() == pytest.approx(expected, rel=1e-5)
    agnostic = mask_rcnn_loss(logits[:, 1:], _foreground_regions())
    assert agnostic.item() == pytest.approx(expected, rel=1e-5)


def test_mask_loss_with_polygons_equals_bitmasks():
    regions = _foreground_regions()
    regions[0].gt_masks = PolygonMasks([[[0.0, 0.0, 2.0, 0.0, 2.0, 8.0, 0.0, 8.0]]])
    logits = torch.randn(1, 2, 2, 2)
    torch.testing.assert_close(mask_rcnn_loss(logits, regions), mask_rcnn_loss(logits, _foreground_regions()))


def test_mask_loss_without_regions_is_zero_and_differentiable():
    logits = torch.zeros(0, 3, 28, 28, requires_grad=True)
    loss = mask_rcnn_loss(logits, [])
    loss.backward()
    assert loss.item() == 0.0


def test_mask_inference_takes_the_predicted_class():
    logits = torch.stack([torch.full((4, 4), float(c)) for c in range(3)])[None].repeat(3, 1, 1, 1)  # (3, 3, 4, 4)
    detections = [Instances((10, 10), pred_classes=torch.tensor([2, 0])), Instances((10, 10), pred_classes=torch.tensor([1]))]
    mask_rcnn_inference(logits, detections)
    assert detections[0].pred_masks.shape == (2, 1, 4, 4)
    expected = torch.sigmoid(torch.tensor([2.0, 0.0, 1.0]))
    torch.testing.assert_close(detections[0].pred_masks[:, 0, 0, 0], expected[:2])
    torch.testing.assert_close(detections[1].pred_masks[:, 0, 0, 0], expected[2:])


def test_conv_upsample_head_layers_and_modes():
    head = MaskRCNNConvUpsampleHead(ShapeSpec(channels=8), num_classes=3, conv_dims=[16, 16, 12])
    names = [n for n, _ in head.named_parameters()]
    assert names == [
        "mask_fcn1.weight", "mask_fcn1.bias", "mask_fcn2.weight", "mask_fcn2.bias",
        "deconv.weight", "deconv.bias", "predictor.weight", "predictor.bias",
    ]
    assert head.layers(torch.rand(5, 8, 14, 14)).shape == (5, 3, 28, 28)

    head.eval()
    with torch.no_grad():
        empty = head(torch.zeros(0, 8, 14, 14), [Instances((20, 20), pred_classes=torch.zeros(0, dtype=torch.int64))])
    assert empty[0].pred_masks.shape == (0, 1, 28, 28)

    head.train()
    regions = _foreground_regions()
    losses = head(torch.rand(1, 8, 1, 1), regions)  # 1 x 1 features -> 2 x 2 masks, matching the case above
    assert set(losses) == {"loss_mask"} and losses["loss_mask"].requires_grad


def test_build_mask_head_from_config():
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 5
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    head = build_mask_head(cfg, ShapeSpec(channels=4, height=14, width=14))
    assert isinstance(head, MaskRCNNConvUpsampleHead)
    assert head.predictor.weight.shape == (5, 16, 1, 1)
    cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True
    assert build_mask_head(cfg, ShapeSpec(channels=4)).predictor.weight.shape == (1, 16, 1, 1)


def test_mask_loss_puts_prediction_beside_gt_every_vis_period():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    loss = mask_rcnn_loss(logits, _foreground_regions(), vis_period=2)  # no event storage: no image, no error
    with EventStorage(start_iter=3) as storage:
        assert mask_rcnn_loss(logits, _foreground_regions(), vis_period=2) == loss
        assert storage.images == []
        storage.iter = 4
        mask_rcnn_loss(logits, _foreground_regions(), vis_period=2)
        (name, image, iteration), = storage.images
    assert name == "Left: mask prediction;   Right: mask GT (0)" and iteration == 4
    # grey (R = G = B): the class-1 probabilities, then the 2 x 2 target [[1, 0], [1, 0]]
    expected = torch.tensor([[2.0, -1.0], [0.0, 3.0]]).sigmoid()
    expected = torch.cat([expected, torch.tensor([[1.0, 0.0], [1.0, 0.0]])], dim=1)
    assert image.shape == (3, 2, 4) and all(torch.allclose(torch.from_numpy(c), expected) for c in image)


def test_mask_head_takes_vis_period_from_the_config():
    cfg = get_cfg()
    cfg.VIS_PERIOD = 7
    head = build_mask_head(cfg, ShapeSpec(channels=4, height=14, width=14))
    assert head.vis_period == 7
    regions = _foreground_regions()
    head.train()
    with EventStorage(start_iter=14) as storage:
        head(torch.rand(1, 4, 1, 1), regions)
        assert len(storage.images) == 1
