"""Test-time augmentation: DatasetMapperTTA's copies, GeneralizedRCNNWithTTA's merge of their boxes
and average of their masks, and its refusals."""
import pytest
import torch
from tests.common import tiny_rcnn_cfg

from d2mask.config import ConfigError
from d2mask.data.transforms import TransformList, VFlipTransform
from d2mask.engine.validation import validate_config
from d2mask.evaluation import inference_context
from d2mask.modeling import DatasetMapperTTA, GeneralizedRCNNWithTTA, build_model
from d2mask.modeling import test_time_augmentation as tta_module
from d2mask.structures import Boxes, Instances


def _model(mask_on=True, num_classes=3, **aug):
    """A tiny random Mask R-CNN that keeps every detection, and its config with TEST.AUG set from `aug`."""
    cfg = tiny_rcnn_cfg(num_classes=num_classes)
    cfg.MODEL.MASK_ON = mask_on
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 100
    for key, value in aug.items():
        cfg.TEST.AUG[key.upper()] = value
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


# A test loader's input: the 60 x 90 original, resized to INPUT.MIN_SIZE_TEST 48.
IMAGE = torch.randint(0, 256, (3, 48, 72), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
INPUT = {"image": IMAGE, "height": 60, "width": 90}


def test_one_size_equal_to_the_input_without_flip_gives_the_models_detections():
    cfg, model = _model(min_sizes=(48,), flip=False)
    with torch.no_grad():
        plain = model([INPUT])[0]["instances"]
        augmented = GeneralizedRCNNWithTTA(cfg, model)([INPUT])[0]["instances"]
    assert len(plain) > 10 and plain.image_size == augmented.image_size == (60, 90)
    torch.testing.assert_close(augmented.pred_boxes.tensor, plain.pred_boxes.tensor)
    torch.testing.assert_close(augmented.scores, plain.scores)
    assert torch.equal(augmented.pred_classes, plain.pred_classes)
    assert torch.equal(augmented.pred_masks, plain.pred_masks)
    # the model is left as it was: its mask head is back on, and it stays in eval mode after an evaluation
    assert model.roi_heads.mask_on
    with inference_context(GeneralizedRCNNWithTTA(cfg, model)):
        pass
    assert not model.training


def test_mapper_makes_resized_and_flipped_copies_with_their_transforms():
    image = torch.arange(2 * 50 * 100, dtype=torch.float32).reshape(2, 50, 100)
    copies = DatasetMapperTTA(min_sizes=[50, 100], max_size=150, flip=True)({"image": image, "height": 25, "width": 50})
    assert [tuple(c["image"].shape) for c in copies] == [(2, 50, 100), (2, 50, 100), (2, 75, 150), (2, 75, 150)]
    assert torch.equal(copies[0]["image"], image)
    assert torch.equal(copies[1]["image"], image.flip(-1))
    assert torch.equal(copies[3]["image"], copies[2]["image"].flip(-1))
    # from the 25 x 50 original: x2 to the input, then x1 or x1.5 (MAX_SIZE 150 caps the 100), mirrored in the copy
    points = [[10.0, 5.0]]
    assert [c["transforms"].apply_coords(points).tolist() for c in copies] == [
        [[20.0, 10.0]], [[80.0, 10.0]], [[30.0, 15.0]], [[120.0, 15.0]]
    ]


def test_boxes_of_every_copy_are_mapped_back_to_the_original_image(monkeypatch):
    """The model (replaced) finds the box [10, 5, 30, 25] in each copy of a 50 x 100 image, with another
    class each so that NMS keeps all four; mapped back by hand: a copy at twice the size halves it, a
    flipped copy of width w mirrors x to w - x."""
    cfg, model = _model(mask_on=False, num_classes=4, min_sizes=(50, 100), max_size=1000, flip=True)
    seen = []

    def inference(inputs, given=None, do_postprocess=True):
        assert given is None and not do_postprocess
        results = []
        for x in inputs:
            copy = len(seen)
            seen.append(x["image"])
            results.append(Instances(
                tuple(x["image"].shape[1:]), pred_boxes=Boxes(torch.tensor([[10.0, 5.0, 30.0, 25.0]])),
                scores=torch.tensor([0.9 - 0.1 * copy]), pred_classes=torch.tensor([copy]),
            ))
        return results

    monkeypatch.setattr(model, "inference", inference)
    image = torch.randint(0, 256, (3, 50, 100), dtype=torch.uint8)
    result = GeneralizedRCNNWithTTA(cfg, model)([{"image": image}])[0]["instances"]
    assert [tuple(s.shape[1:]) for s in seen] == [(50, 100), (50, 100), (100, 200), (100, 200)]
    assert torch.equal(seen[1], seen[0].flip(-1))
    assert result.image_size == (50, 100)
    assert result.pred_classes.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(result.scores, torch.tensor([0.9, 0.8, 0.7, 0.6]))
    assert result.pred_boxes.tensor.tolist() == [
        [10.0, 5.0, 30.0, 25.0],  # as found
        [70.0, 5.0, 90.0, 25.0],  # mirrored in width 100
        [5.0, 2.5, 15.0, 12.5],  # halved
        [85.0, 2.5, 95.0, 12.5],  # mirrored in width 200 to [170, 5, 190, 25], then halved
    ]


def test_average_of_masks_mirrors_flipped_copies_back():
    left_column = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])  # (D=1, 1, M=2, M=2)
    top_left = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # predicted on the mirrored copy: top right
    average = tta_module.average_mask_probs([left_column, top_left], [False, True])
    assert average.tolist() == [[[[0.5, 0.5], [0.5, 0.0]]]]


def test_mask_model_averages_probabilities_of_every_copy_and_pastes_them(monkeypatch):
    cfg, model = _model(min_sizes=(40, 56), flip=True)
    averaged, average_mask_probs = [], tta_module.average_mask_probs

    def spy(masks, flipped):
        assert flipped == [False, True, False, True]
        averaged.append((masks, average_mask_probs(masks, flipped)))
        return averaged[-1][1]

    monkeypatch.setattr(tta_module, "average_mask_probs", spy)
    with torch.no_grad():
        result = GeneralizedRCNNWithTTA(cfg, model)([INPUT])[0]["instances"]
    (masks, average), = averaged
    num_detections = len(average)
    assert 10 < num_detections <= 100 and len(result) == num_detections
    side = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION * 2
    assert len(masks) == 4 and all(m.shape == (num_detections, 1, side, side) for m in masks)
    assert average.shape == (num_detections, 1, side, side)
    assert 0 <= average.min() and average.max() <= 1
    # each copy's masks differ, so the average is none of them
    assert not any(torch.allclose(average, m) for m in masks)
    assert result.pred_masks.shape == (num_detections, 60, 90) and result.pred_masks.dtype == torch.bool


def test_a_mask_model_refuses_transforms_other_than_resizes_and_flips(monkeypatch):
    cfg, model = _model()

    def mapper(inputs):
        return [{**inputs, "transforms": TransformList([VFlipTransform(inputs["image"].shape[1])])}]

    def inference(inputs, given=None, do_postprocess=True):
        assert given is None, "refused before the mask passes"
        return [Instances((48, 72), pred_boxes=Boxes(torch.tensor([[1.0, 2.0, 20.0, 30.0]])),
                          scores=torch.tensor([0.5]), pred_classes=torch.tensor([0]))]

    monkeypatch.setattr(model, "inference", inference)
    with pytest.raises(ValueError, match="resized and horizontally flipped copies only.*VFlipTransform"):
        GeneralizedRCNNWithTTA(cfg, model, tta_mapper=mapper)([INPUT])


@pytest.mark.parametrize("config, message", [
    ("COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml", "does not support keypoint models"),
    ("COCO-Detection/retinanet_R_50_FPN_1x.yaml", "runs GeneralizedRCNN models .* not RetinaNet"),
])
def test_models_it_cannot_run_are_refused_before_training(config, message):
    cfg = tiny_rcnn_cfg(config)
    cfg.TEST.AUG.ENABLED = True
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
    cfg.TEST.AUG.ENABLED = False
    validate_config(cfg)


@pytest.mark.parametrize("key, value", [("MIN_SIZES", ()), ("MIN_SIZES", (400, 0)), ("MAX_SIZE", 0)])
def test_invalid_sizes_name_their_key(key, value):
    cfg = tiny_rcnn_cfg()
    cfg.TEST.AUG.ENABLED = True
    cfg.TEST.AUG[key] = value
    with pytest.raises(ConfigError, match=f"TEST.AUG.{key}"):
        validate_config(cfg)
