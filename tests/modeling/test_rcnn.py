"""Model I/O of the meta-architectures: Detectron2's input dicts in, losses or rescaled Instances out."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from d2mask.config import get_cfg
from d2mask.modeling import GeneralizedRCNN, ProposalNetwork, build_model
from d2mask.structures import BitMasks, Boxes, Instances, PolygonMasks
from d2mask.utils.events import EventStorage
from tests.common import tiny_rcnn_cfg


def _cfg(name):
    """The tiny-width config with few proposals and detections, keeping low-scoring ones."""
    cfg = tiny_rcnn_cfg(f"COCO-InstanceSegmentation/{name}")
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 50
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    return cfg


@pytest.fixture(scope="module", params=["mask_rcnn_R_50_FPN_1x.yaml", "mask_rcnn_R_50_C4_1x.yaml", "mask_rcnn_R_50_DC5_1x.yaml"])
def model_and_cfg(request):
    torch.manual_seed(0)
    cfg = _cfg(request.param)
    return build_model(cfg), cfg


def _input(h=64, w=80, **extra):
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    return {"image": image, **extra}


def _instances(height=64, width=80):
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 30.0], [30.0, 20.0, 70.0, 60.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    masks = torch.zeros(2, height, width, dtype=torch.bool)
    masks[0, 8:30, 8:40] = True
    masks[1, 20:60, 30:70] = True
    inst.gt_masks = BitMasks(masks)
    return inst


def test_training_returns_every_loss(model_and_cfg):
    model, _ = model_and_cfg
    model.train()
    losses = model([_input(instances=_instances()), _input(48, 80, instances=_instances(48, 80)[:1])])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


@pytest.mark.parametrize("config", ["mask_rcnn_R_50_FPN_1x.yaml", "mask_rcnn_R_50_C4_1x.yaml"])
def test_batch_losses_are_the_per_image_losses_weighted_by_their_counts(config):
    """With budgets that sample every anchor and proposal, no draw is random and each image's losses
    do not depend on the other's (of one size, they need no padding). Then the RPN losses of a batch are the
    mean of the images' (divided by budget x images), the box head's the mean weighted by sampled
    regions, and the mask loss's the mean weighted by foreground regions."""
    cfg = _cfg(config)
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 100000
    torch.manual_seed(0)
    model = build_model(cfg).train()
    inputs = [_input(instances=_instances()), _input(instances=_instances()[1:])]
    batch = {k: v.item() for k, v in model(inputs).items()}
    single = [{k: v.item() for k, v in model([x]).items()} for x in inputs]

    regions, foreground = [], []
    with torch.no_grad():
        for x in inputs:
            images = model.preprocess_image([x])
            features = model.backbone(images.tensor)
            proposals, _ = model.proposal_generator(images, features, [x["instances"]])
            (sampled,) = model.roi_heads.label_and_sample_proposals(proposals, [x["instances"]])
            regions.append(len(sampled))
            foreground.append(int((sampled.gt_classes < cfg.MODEL.ROI_HEADS.NUM_CLASSES).sum()))
    assert min(foreground) > 0 and regions[0] != regions[1]

    def weighted(name, weights):
        return sum(w * s[name] for w, s in zip(weights, single)) / sum(weights)

    for name in ("loss_rpn_cls", "loss_rpn_loc"):
        assert batch[name] == pytest.approx(weighted(name, [1, 1]), rel=1e-4), name
    for name in ("loss_cls", "loss_box_reg"):
        assert batch[name] == pytest.approx(weighted(name, regions), rel=1e-4), name
    assert batch["loss_mask"] == pytest.approx(weighted("loss_mask", foreground), rel=1e-4)


def test_training_on_an_image_without_objects(model_and_cfg):
    model, _ = model_and_cfg
    model.train()
    empty = Instances((64, 80), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
    empty.gt_masks = PolygonMasks([])
    losses = model([_input(instances=empty)])
    assert all(torch.isfinite(v) for v in losses.values())
    # Nothing to regress or segment: every sampled region is background.
    assert losses["loss_box_reg"].item() == 0 and losses["loss_mask"].item() == 0
    assert losses["loss_rpn_loc"].item() == 0
    sum(losses.values()).backward()


def test_inference_fields_dtypes_and_sizes(model_and_cfg):
    model, _ = model_and_cfg
    model.eval()
    with torch.no_grad():
        outputs = model([_input(height=128, width=160), _input(64, 80, height=128, width=160)])
    assert len(outputs) == 2
    for out in outputs:
        inst = out["instances"]
        assert inst.image_size == (128, 160)
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
        assert 0 < len(inst) <= 10
        assert isinstance(inst.pred_boxes, Boxes)
        assert inst.scores.dtype == torch.float32 and inst.pred_classes.dtype == torch.int64
        assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape == (len(inst), 128, 160)
        assert ((inst.pred_classes >= 0) & (inst.pred_classes < 3)).all()
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 128).all()
    # Input 1 was upscaled twice: its boxes cover the output image, not just the 64 x 80 input.
    assert outputs[1]["instances"].pred_boxes.tensor[:, 2:].max() > 80


def test_no_detection_gives_empty_instances_with_every_field(model_and_cfg):
    model, _ = model_and_cfg
    model.eval()
    threshold = model.roi_heads.box_predictor.test_score_thresh
    model.roi_heads.box_predictor.test_score_thresh = 1.0
    try:
        with torch.no_grad():
            inst = model([_input(height=32, width=40)])[0]["instances"]
    finally:
        model.roi_heads.box_predictor.test_score_thresh = threshold
    assert len(inst) == 0 and inst.image_size == (32, 40)
    assert inst.pred_boxes.tensor.shape == (0, 4)
    assert inst.scores.shape == (0,) and inst.pred_classes.shape == (0,)
    assert inst.pred_masks.shape == (0, 32, 40) and inst.pred_masks.dtype == torch.bool


def test_uint8_and_float_images_agree_and_raw_outputs(model_and_cfg):
    model, _ = model_and_cfg
    model.eval()
    x = _input()
    with torch.no_grad():
        a = model([x])[0]["instances"]
        b = model([{"image": x["image"].float()}])[0]["instances"]
        raw = model.inference([x], do_postprocess=False)[0]
        given = model.inference([x], detected_instances=[raw[:2]], do_postprocess=False)[0]
    torch.testing.assert_close(a.scores, b.scores)
    assert raw.image_size == (64, 80) and raw.pred_masks.dim() == 4  # (D, 1, M, M) probabilities
    torch.testing.assert_close(given.pred_masks, raw.pred_masks[:2])


def test_preprocessing_buffers_and_input_errors(model_and_cfg):
    model, cfg = model_and_cfg
    assert isinstance(model, GeneralizedRCNN)
    assert model.pixel_mean.shape == (3, 1, 1) and model.pixel_std.shape == (3, 1, 1)
    torch.testing.assert_close(model.pixel_mean.flatten(), torch.tensor(cfg.MODEL.PIXEL_MEAN))
    assert "pixel_mean" not in model.state_dict()
    images = model.preprocess_image([_input(30, 50), _input(20, 70)])
    divisor = model.backbone.size_divisibility
    assert images.image_sizes == [(30, 50), (20, 70)]
    if divisor:
        assert images.tensor.shape[-2] % divisor == 0 and images.tensor.shape[-1] % divisor == 0
    model.eval()
    with pytest.raises(ValueError, match=r"Input 0 .*Tensor\[C, H, W\]"):
        model([{"image": torch.zeros(64, 80)}])
    model.train()
    with pytest.raises(ValueError, match="instances"):
        model([_input()])


def test_preprocessing_honours_the_backbones_padding_constraints(model_and_cfg, monkeypatch):
    model, _ = model_and_cfg
    monkeypatch.setattr(type(model.backbone), "padding_constraints", property(lambda self: {"square_size": 96}))
    images = model.preprocess_image([_input(30, 50), _input(20, 70)])
    assert images.tensor.shape[-2:] == (96, 96) and images.image_sizes == [(30, 50), (20, 70)]


def test_proposal_network():
    cfg = _cfg("mask_rcnn_R_50_FPN_1x.yaml")
    cfg.MODEL.META_ARCHITECTURE = "ProposalNetwork"
    model = build_model(cfg)
    assert isinstance(model, ProposalNetwork)
    losses = model([_input(instances=_instances())])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    model.eval()
    with torch.no_grad():
        out = model([_input(height=32, width=40)])[0]["proposals"]
    assert out.image_size == (32, 40) and 0 < len(out) <= 50
    assert out.proposal_boxes.tensor[:, 2].max() <= 40 and out.proposal_boxes.tensor[:, 3].max() <= 32


def test_training_visualisation_goes_to_the_event_storage(model_and_cfg):
    model, _ = model_and_cfg
    model.train()
    model.vis_period = 2
    try:
        with EventStorage(start_iter=3) as storage:
            model([_input(instances=_instances())])  # iteration 3: nothing
            assert storage.images == []
            storage.iter = 4
            model([_input(instances=_instances())])
            (name, image, iteration), = storage.images
    finally:
        model.vis_period = 0
    assert "proposals" in name and iteration == 4
    assert image.shape == (3, 64, 160) and image.dtype == np.uint8


def test_the_model_package_imports_neither_data_nor_drawing():
    # VIS_PERIOD's drawing imports them where it runs; a model alone loads neither.
    code = "import sys, d2mask.modeling; print([m for m in sys.modules if m.startswith(('d2mask.data', 'd2mask.utils.visualizer'))])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_semantic_segmentation_heads_registry_builds_by_name():
    from d2mask.layers import ShapeSpec
    from d2mask.modeling import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head
    from d2mask.config import CfgNode

    @SEM_SEG_HEADS_REGISTRY.register()
    class RcnnTestSemSegHead(torch.nn.Module):
        def __init__(self, cfg, input_shape):
            super().__init__()
            self.input_shape = input_shape

    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD = CfgNode({"NAME": "RcnnTestSemSegHead"})  # the key a project's config function adds
    head = build_sem_seg_head(cfg, {"p2": ShapeSpec(channels=8, stride=4)})
    assert isinstance(head, RcnnTestSemSegHead) and head.input_shape["p2"].channels == 8
