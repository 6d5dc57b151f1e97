import math

import pytest
import torch

from d2mask.config import get_cfg
from d2mask.layers import ShapeSpec
from d2mask.modeling.roi_heads import (
    KRCNNConvDeconvUpsampleHead,
    build_keypoint_head,
    keypoint_rcnn_loss,
    select_proposals_with_visible_keypoints,
)
from d2mask.structures import Boxes, Instances, Keypoints
from tests.common import tiny_rcnn_cfg


def _regions(visibility_of_second=2):
    """Image 0: one region [0, 4] x [0, 4] with keypoints (1, 1) and (3, 1): on a 2 x 2 heatmap, cells
    0 and 1. Image 1: no region."""
    image0 = Instances((8, 8))
    image0.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 4.0, 4.0]]))
    image0.gt_keypoints = Keypoints([[[1.0, 1.0, 2], [3.0, 1.0, visibility_of_second]]])
    image1 = Instances((8, 8))
    image1.proposal_boxes = Boxes(torch.zeros(0, 4))
    image1.gt_keypoints = Keypoints(torch.zeros(0, 2, 3))
    return [image0, image1]


def _logits():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, 0, 0] = math.log(3.0)  # keypoint 0's cell has probability 3 / 6
    return logits  # keypoint 1: uniform, its cell has probability 1 / 4


def test_keypoint_loss_by_hand():
    both = math.log(2.0) + math.log(4.0)
    assert keypoint_rcnn_loss(_logits(), _regions(), None).item() == pytest.approx(both / 2)  # by the 2 labelled
    assert keypoint_rcnn_loss(_logits(), _regions(), 5.0).item() == pytest.approx(both / 5)
    # an unlabelled keypoint counts neither in the loss nor in the normaliser
    assert keypoint_rcnn_loss(_logits(), _regions(visibility_of_second=0), None).item() == pytest.approx(math.log(2.0))
    # nothing to learn from: 0, still attached to the graph
    logits = _logits().requires_grad_()
    loss = keypoint_rcnn_loss(logits, _regions(visibility_of_second=0)[1:] + [], None)
    assert loss.item() == 0 and loss.requires_grad


def test_head_normalisers_from_config():
    cfg = get_cfg()
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 2
    cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = [4]
    cfg.MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT = 3.0
    head = build_keypoint_head(cfg, ShapeSpec(channels=4, height=1, width=1))
    assert head.loss_normalizer == "visible"
    head.layers = lambda x: _logits()
    both = math.log(2.0) + math.log(4.0)
    assert head(torch.zeros(1, 4, 1, 1), _regions())["loss_keypoint"].item() == pytest.approx(3.0 * both / 2)

    # Detectron2's fixed normaliser: NUM_KEYPOINTS x BATCH_SIZE_PER_IMAGE x POSITIVE_FRACTION per image
    cfg.MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS = False
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE, cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION = 8, 0.25
    head = build_keypoint_head(cfg, ShapeSpec(channels=4, height=1, width=1))
    assert head.loss_normalizer == 2 * 8 * 0.25
    head.layers = lambda x: _logits()
    loss = head(torch.zeros(1, 4, 1, 1), _regions())["loss_keypoint"]  # 2 images
    assert loss.item() == pytest.approx(3.0 * both / (2 * 4.0))

    with pytest.raises(ValueError, match="loss_normalizer must be 'visible' or a positive number"):
        KRCNNConvDeconvUpsampleHead(ShapeSpec(channels=4), num_keypoints=2, conv_dims=[4], loss_normalizer="all")
    with pytest.raises(ValueError, match=r"conv_dims \(MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS\) must be positive ints, got \[4, 0\]"):
        KRCNNConvDeconvUpsampleHead(ShapeSpec(channels=4), num_keypoints=2, conv_dims=[4, 0])
    with pytest.raises(ValueError, match="num_keypoints must be a positive int, got 0"):
        KRCNNConvDeconvUpsampleHead(ShapeSpec(channels=4), num_keypoints=0, conv_dims=[4])


def test_head_layers_and_inference_shapes():
    head = KRCNNConvDeconvUpsampleHead(ShapeSpec(channels=4), num_keypoints=3, conv_dims=[8, 8]).eval()
    assert [name for name, _ in head.named_parameters()] == [
        "conv_fcn1.weight", "conv_fcn1.bias", "conv_fcn2.weight", "conv_fcn2.bias", "score_lowres.weight", "score_lowres.bias",
    ]
    detections = [Instances((50, 50), pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 20.0, 10.0], [5.0, 5.0, 30.0, 40.0]]))),
                  Instances((50, 50), pred_boxes=Boxes(torch.zeros(0, 4)))]
    with torch.no_grad():
        out = head(torch.randn(2, 4, 7, 7), detections)
    assert out[0].pred_keypoints.shape == (2, 3, 3) and out[1].pred_keypoints.shape == (0, 3, 3)
    assert out[0].pred_keypoint_heatmaps.shape == (2, 3, 28, 28)  # S -> 4S
    # every keypoint lies in its box
    xy, boxes = out[0].pred_keypoints[..., :2], out[0].pred_boxes.tensor[:, None]
    assert ((xy >= boxes[..., :2]) & (xy <= boxes[..., 2:])).all()


def test_only_proposals_with_a_labelled_keypoint_inside_are_kept():
    image = Instances((20, 20))
    image.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0], [10.0, 10.0, 15.0, 15.0], [0.0, 0.0, 15.0, 15.0]]))
    image.gt_keypoints = Keypoints([
        [[2.0, 2.0, 1], [12.0, 12.0, 0]],  # labelled (occluded) keypoint inside: kept
        [[2.0, 2.0, 2], [12.0, 12.0, 0]],  # only an unlabelled one inside: dropped
        [[16.0, 16.0, 2], [20.0, 1.0, 2]],  # labelled ones outside: dropped
    ])
    no_gt = Instances((20, 20), proposal_boxes=Boxes(torch.zeros(0, 4)))  # an image without GT
    kept = select_proposals_with_visible_keypoints([image, no_gt])
    assert kept[0].proposal_boxes.tensor.tolist() == [[0.0, 0.0, 5.0, 5.0]] and len(kept[1]) == 0


def test_keypoint_rcnn_trains_and_predicts_through_standard_roi_heads():
    from d2mask.modeling import build_model

    cfg = tiny_rcnn_cfg("COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml", num_classes=1)
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 3
    cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = [8]
    torch.manual_seed(0)
    model = build_model(cfg)
    instances = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 40.0, 50.0]])),
                          gt_classes=torch.tensor([0]), gt_keypoints=Keypoints([[[12.0, 15.0, 2], [30.0, 40.0, 2], [0, 0, 0]]]))
    batch = [{"image": torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), "instances": instances}]
    losses = model(batch)
    assert losses["loss_keypoint"] > 0
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"]}])[0]["instances"]
    assert out.pred_keypoints.shape == (len(out), 3, 3)


def test_res5_roi_heads_refuse_keypoints():
    from d2mask.config import ConfigError
    from d2mask.modeling import build_model

    cfg = tiny_rcnn_cfg("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml")
    cfg.MODEL.KEYPOINT_ON = True
    with pytest.raises(ConfigError, match="MODEL.KEYPOINT_ON is implemented by StandardROIHeads"):
        build_model(cfg)
