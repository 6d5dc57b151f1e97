"""SemSegFPNHead's loss and structure, the padding of the GT label maps, sem_seg_postprocess, and
SemanticSegmentor learning a tiny case."""
import math

import pytest
import torch

from d2mask.config import ConfigError
from d2mask.data import MetadataCatalog
from d2mask.engine.training import check_model_fits_data
from d2mask.layers import ShapeSpec
from d2mask.modeling import SemanticSegmentor, build_model, sem_seg_postprocess
from d2mask.modeling.meta_arch.semantic_seg import SemSegFPNHead, padded_sem_seg_targets
from tests.common import tiny_rcnn_cfg

IGNORE = 255


def _head(common_stride=1, **kwargs):
    shapes = kwargs.pop("input_shape", {"p": ShapeSpec(channels=2, stride=common_stride)})
    return SemSegFPNHead(shapes, num_classes=2, conv_dims=4, common_stride=common_stride, ignore_value=IGNORE, **kwargs)


def test_loss_is_the_mean_cross_entropy_over_labelled_pixels():
    head = _head(loss_weight=0.5)
    # Three pixels: class-1 logit ln 3 with GT 1 (p = 3/4), equal logits with GT 0 (p = 1/2), one ignored.
    logits = torch.tensor([[0.0, 0.0, 5.0], [math.log(3.0), 0.0, -5.0]]).view(1, 2, 1, 3)
    targets = torch.tensor([[[1, 0, IGNORE]]])
    loss = head.losses(logits, targets)["loss_sem_seg"]
    assert loss.item() == pytest.approx(0.5 * (math.log(4 / 3) + math.log(2)) / 2)


def test_loss_of_a_batch_without_labelled_pixels_is_zero():
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = _head().losses(logits, torch.full((1, 2, 2), IGNORE))["loss_sem_seg"]
    assert loss.item() == 0.0
    loss.backward()  # still a graph: an image without labels trains like any other
    assert logits.grad.abs().sum() == 0


def test_loss_upsamples_the_logits_to_the_targets():
    # Constant logits at stride 4 cover the 8x8 targets; half the pixels of each class.
    logits = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    targets = torch.zeros(1, 8, 8, dtype=torch.int64)
    targets[0, 4:] = 1
    loss = _head(common_stride=4, input_shape={"p2": ShapeSpec(channels=2, stride=4)}).losses(logits, targets)
    p0 = 1 / (1 + math.exp(-2.0))
    assert loss["loss_sem_seg"].item() == pytest.approx((-math.log(p0) - math.log(1 - p0)) / 2, rel=1e-5)


def test_head_brings_every_level_to_the_common_stride():
    shapes = {f"p{i}": ShapeSpec(channels=8, stride=2 ** i) for i in (2, 3, 4, 5)}
    head = SemSegFPNHead(shapes, num_classes=3, conv_dims=4, common_stride=4, norm="")
    convs = {name: sum(isinstance(m, torch.nn.Conv2d) for m in getattr(head, name)) for name in shapes}
    assert convs == {"p2": 1, "p3": 1, "p4": 2, "p5": 3}
    features = {f"p{i}": torch.randn(2, 8, 64 // 2 ** i, 96 // 2 ** i) for i in (2, 3, 4, 5)}
    head.eval()
    logits, losses = head(features)
    assert logits.shape == (2, 3, 64, 96) and losses == {}


def test_head_refuses_a_stride_it_cannot_reach():
    with pytest.raises(ValueError, match=r"COMMON_STRIDE \(4\) times a power of 2; got \{'p': 12\}"):
        _head(common_stride=4, input_shape={"p": ShapeSpec(channels=2, stride=12)})


def test_targets_are_padded_with_the_ignore_value():
    backbone = type("B", (), {"size_divisibility": 4, "padding_constraints": {}})()
    inputs = [{"sem_seg": torch.ones(3, 5, dtype=torch.uint8)}, {"sem_seg": torch.zeros(2, 2, dtype=torch.uint8)}]
    targets = padded_sem_seg_targets(inputs, backbone, IGNORE, "cpu")
    assert targets.shape == (2, 4, 8) and targets.dtype == torch.int64
    assert (targets[0, :3, :5] == 1).all() and (targets[1, :2, :2] == 0).all()
    assert (targets == IGNORE).sum() == 2 * 32 - 15 - 4
    with pytest.raises(ValueError, match=r"'sem_seg' label map in every input dict.*inputs \[1\]"):
        padded_sem_seg_targets([inputs[0], {"image": None}], backbone, IGNORE, "cpu")


def test_sem_seg_postprocess_cuts_the_padding_then_resizes():
    result = torch.zeros(2, 4, 6)
    result[1, :2, :3] = 1.0  # the image; the rest is padding
    out = sem_seg_postprocess(result, (2, 3), 4, 6)
    assert out.shape == (2, 4, 6)
    assert (out[1] == 1.0).all() and (out[0] == 0.0).all()


def _semantic_cfg():
    cfg = tiny_rcnn_cfg()
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 8
    cfg.MODEL.SEM_SEG_HEAD.NORM = ""
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [127.5] * 3, [64.0] * 3
    return cfg


def test_semantic_segmentor_overfits_one_image_and_outputs_the_original_size():
    torch.manual_seed(0)
    model = build_model(_semantic_cfg())
    assert isinstance(model, SemanticSegmentor)
    image = torch.zeros(3, 32, 48, dtype=torch.uint8)
    sem_seg = torch.zeros(32, 48, dtype=torch.int64)
    image[:, 8:24, 8:20], sem_seg[8:24, 8:20] = 200, 1
    image[:, 4:28, 30:44], sem_seg[4:28, 30:44] = 100, 2
    inputs = [{"image": image, "sem_seg": sem_seg, "height": 64, "width": 96}]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(40):
        loss = model(inputs)["loss_sem_seg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]

    model.eval()
    with torch.no_grad():
        (output,) = model(inputs)
    assert output["sem_seg"].shape == (3, 64, 96)
    upsampled = sem_seg.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert (output["sem_seg"].argmax(0) == upsampled).float().mean() > 0.9


def test_training_refuses_fewer_classes_than_the_dataset_has():
    model = build_model(_semantic_cfg())  # 3 classes
    MetadataCatalog.get("semantic_seg_test_4").set(stuff_classes=["a", "b", "c", "d"])
    try:
        with pytest.raises(ConfigError, match=r"MODEL.SEM_SEG_HEAD.NUM_CLASSES is 3 but the training set "
                                              r"\('semantic_seg_test_4',\) has 4 stuff_classes \(a, b, c, d\); set "
                                              r"MODEL.SEM_SEG_HEAD.NUM_CLASSES 4"):
            check_model_fits_data(model, [], ["semantic_seg_test_4"])
    finally:
        MetadataCatalog.remove("semantic_seg_test_4")
