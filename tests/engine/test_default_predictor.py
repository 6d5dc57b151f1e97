"""DefaultPredictor: one BGR image in, the model's output at the image's own size out."""
import cv2
import numpy as np
import pytest
import torch

from d2mask.config import load_config
from d2mask.engine.defaults import DefaultPredictor

CONFIG = "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml"


def _predictor(*opts):
    torch.manual_seed(0)
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "64",
                               "INPUT.MAX_SIZE_TEST", "1000", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", *opts])
    return DefaultPredictor(cfg)


def _image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    cv2.circle(image, (20, 16), 9, (255, 0, 0), -1)
    return image


def _forward(model, image, **size):
    with torch.no_grad():
        return model([{"image": torch.as_tensor(image.transpose(2, 0, 1).copy()), **size}])[0]["instances"]


@pytest.mark.parametrize("input_format", ["BGR", "RGB"])
def test_predictions_are_the_models_own_at_the_original_size(input_format):
    predictor = _predictor("INPUT.FORMAT", input_format)
    image = _image()
    instances = predictor(image)["instances"]
    assert instances.image_size == (32, 48) and len(instances) > 0 and predictor.model.training is False

    # by hand: the 32 x 48 image's short side goes to MIN_SIZE_TEST 64, so the model sees 64 x 96
    model_input = cv2.resize(image if input_format == "BGR" else image[:, :, ::-1].copy(), (96, 64),
                             interpolation=cv2.INTER_LINEAR)
    expected = _forward(predictor.model, model_input, height=32, width=48)
    torch.testing.assert_close(instances.pred_boxes.tensor, expected.pred_boxes.tensor)
    torch.testing.assert_close(instances.scores, expected.scores)
    assert instances.pred_masks.shape == (len(instances), 32, 48)
    # without height/width the boxes stay in the 64 x 96 input: twice those at the original size
    at_input_size = _forward(predictor.model, model_input)
    assert at_input_size.image_size == (64, 96)
    torch.testing.assert_close(at_input_size.pred_boxes.tensor, 2 * instances.pred_boxes.tensor)


def test_metadata_and_a_wrong_image_shape():
    predictor = _predictor()
    assert predictor.metadata.thing_classes == ["circle", "square", "triangle"]
    with pytest.raises(ValueError, match=r"one BGR image of shape \(H, W, 3\), got shape \(2, 32, 48, 3\)"):
        predictor(np.zeros((2, 32, 48, 3), dtype=np.uint8))
