"""Tiny detectors built from the repository's configs, and the comparison of two sets of detections,
shared by the export tests."""
import os

import torch

from d2mask.config import get_cfg
from d2mask.modeling import build_model, detector_postprocess
from tests.common import REPO, tiny_rcnn_cfg

# Any config: CPU, random weights, few proposals, small test images.
COMMON = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "TEST.DETECTIONS_PER_IMAGE", "100", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160",
]
# Random weights on raw pixels saturate every score at 1.0 (ties, whose order is arbitrary); smaller
# inputs keep the scores apart.
SPREAD_SCORES = ["MODEL.PIXEL_STD", "[100.0, 100.0, 100.0]"]


def tiny_cfg(config_file: str, overrides=()):
    """The config of `config_file` (relative to the repository) for a test; Detectron2's R-50 configs
    (configs/COCO-*) with tiny widths (`tests.common.tiny_rcnn_cfg`)."""
    if config_file.startswith("configs/COCO-"):
        cfg = tiny_rcnn_cfg(os.path.relpath(config_file, "configs"))
        cfg.merge_from_list(SPREAD_SCORES)
    else:
        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(REPO, config_file))
    cfg.merge_from_list(COMMON + list(overrides))
    return cfg


def tiny_model(cfg, seed: int = 0):
    """The model of `cfg` in eval mode, with random weights that give decided masks (initial mask
    logits are near 0, probability 0.5, where the smallest float difference flips a pixel)."""
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    mask_head = getattr(getattr(model, "roi_heads", None), "mask_head", None)
    if mask_head is not None:
        torch.nn.init.normal_(mask_head.predictor.weight, std=1.0)
    return model


def image(height: int, width: int, seed: int) -> torch.Tensor:
    """`Tensor[3, height, width]` float of random pixel values in [0, 255]."""
    return torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(seed)).float()


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`Tensor[D]`: IoU of bool masks `Tensor[D, H, W]`, pair by pair (1 for two empty masks)."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def assert_same_detections(actual, expected, box_atol: float = 1e-2) -> None:
    """Exported vs eager detections of one image (Instances at the network's input size): the same
    classes, boxes within `box_atol` pixels, scores within 1e-4, each pasted mask with IoU > 0.99, and
    keypoints within `box_atol` pixels with their scores and heatmaps within 1e-4."""
    assert len(expected) > 0, "a comparison without detections shows nothing"
    assert len(actual) == len(expected)
    assert torch.equal(actual.pred_classes, expected.pred_classes)
    torch.testing.assert_close(actual.pred_boxes.tensor, expected.pred_boxes.tensor, atol=box_atol, rtol=0)
    torch.testing.assert_close(actual.scores, expected.scores, atol=1e-4, rtol=0)
    if expected.has("pred_masks"):
        height, width = expected.image_size
        pasted = [detector_postprocess(i, height, width).pred_masks for i in (actual, expected)]
        assert pasted[1].any(), "masks all empty"
        assert (mask_iou(*pasted) > 0.99).all()
    if expected.has("pred_keypoints"):
        # (D, J, 3) of x, y, score
        torch.testing.assert_close(actual.pred_keypoints[..., :2], expected.pred_keypoints[..., :2], atol=box_atol, rtol=0)
        torch.testing.assert_close(actual.pred_keypoints[..., 2], expected.pred_keypoints[..., 2], atol=1e-4, rtol=0)
        torch.testing.assert_close(actual.pred_keypoint_heatmaps, expected.pred_keypoint_heatmaps, atol=1e-4, rtol=0)
