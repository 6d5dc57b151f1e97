"""The speed-ups of the model's forward and backward compute what the plain computation does: a few
training steps and an inference of a tiny Mask R-CNN, against a copy run the unoptimised way (frozen
norms as separate ops; NCHW memory format; torchvision's ROIAlign kernel; NMS over every box)."""
import copy
import importlib

import pytest
import torch
from torch import nn

from d2mask.layers import Conv2d, FrozenBatchNorm2d
from d2mask.modeling import build_model
from d2mask.layers import roi_align, wrappers
from tests.common import tiny_rcnn_cfg
from tests.modeling.test_rcnn import _input, _instances

nms = importlib.import_module("d2mask.layers.nms")  # the package's `nms` is the function


def _model():
    """Tiny R50-FPN Mask R-CNN, FrozenBN throughout the backbone (stem and res2 frozen, res3-res5
    trained through their frozen norms), the norms holding non-trivial statistics."""
    cfg = tiny_rcnn_cfg()
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN" and cfg.MODEL.BACKBONE.FREEZE_AT == 2
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                # scales below 1 keep the random network's activations from growing layer by layer
                m.weight.uniform_(0.3, 0.8)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.8, 1.2)
    return model


def _unfused(model):
    """A copy whose frozen norms run after their convolutions, as separate ops (`Conv2d` folds only
    a norm that is itself a FrozenBatchNorm2d)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, Conv2d) and isinstance(m.norm, FrozenBatchNorm2d):
            m.norm = nn.Sequential(m.norm)
    return model


def _train_and_infer(model, steps=3):
    torch.manual_seed(1)
    batch = [_input(instances=_instances()), _input(48, 80, instances=_instances(48, 80)[:1])]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    losses = []
    model.train()
    for _ in range(steps):
        step = model(batch)
        optimizer.zero_grad()
        sum(step.values()).backward()
        optimizer.step()
        losses.append(torch.stack([step[k] for k in sorted(step)]).detach())
    model.eval()
    with torch.no_grad():
        detections = model([{"image": x["image"]} for x in batch])
    return losses, [d["instances"] for d in detections]


def _assert_same_run(fast, reference):
    (fast_losses, fast_detections), (ref_losses, ref_detections) = fast, reference
    for fast_step, ref_step in zip(fast_losses, ref_losses):
        torch.testing.assert_close(fast_step, ref_step, rtol=1e-4, atol=1e-6)
    for got, expected in zip(fast_detections, ref_detections):
        assert len(expected) > 0
        torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(got.scores, expected.scores, rtol=1e-4, atol=1e-6)
        assert torch.equal(got.pred_classes, expected.pred_classes)
        # Pasted masks are thresholded: allow a few pixels on the boundary to flip.
        assert (got.pred_masks != expected.pred_masks).float().mean() < 1e-3


def test_frozen_bn_folded_into_convolutions_trains_and_infers_as_unfused():
    model = _model()
    reference = _unfused(model)
    _assert_same_run(_train_and_infer(model), _train_and_infer(reference))


# Each CPU fast path, switched off: channels-last ResNet and mask head (against NCHW), ROIAlign as
# embedding_bag (against torchvision's kernel), NMS on the highest-scoring boxes first (against NMS
# over every box).
@pytest.mark.parametrize("module, switch", [
    (wrappers, "_CHANNELS_LAST_ON_CPU"), (roi_align, "_EMBEDDING_BAG_ON_CPU"), (nms, "_HIGHEST_SCORES_FIRST_ON_CPU"),
])
def test_cpu_fast_path_trains_and_infers_as_the_path_it_replaces(monkeypatch, module, switch):
    model = _model()
    reference = copy.deepcopy(model)
    fast = _train_and_infer(model)
    monkeypatch.setattr(module, switch, False)
    _assert_same_run(fast, _train_and_infer(reference))


def test_channels_last_backbone_outputs_channels_last_features_and_keeps_its_weights_so():
    backbone = _model().backbone
    before = copy.deepcopy(backbone.state_dict())
    features = backbone(torch.zeros(1, 3, 64, 96))
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in features.values())
    bottom_up_convs = [m for m in backbone.bottom_up.modules() if isinstance(m, nn.Conv2d)]
    assert bottom_up_convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in bottom_up_convs)
    after = backbone.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())

