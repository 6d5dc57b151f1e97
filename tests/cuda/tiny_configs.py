"""Tiny versions of the shipped and project configs, and a batch to train them on, for the tests of
tests/cuda: each config keeps its structure (backbone, heads, matchers), with small widths and budgets."""
import glob
import os
from typing import Sequence

import torch

from d2mask.config import CfgNode, LazyConfig, get_cfg
from d2mask.projects.port_example import add_port_example_config
from d2mask.structures import BitMasks, Boxes, Instances, Keypoints
from tests.common import REPO as ROOT

YAML_CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for pattern in ("configs/**/*.yaml", "projects/*/configs/*.yaml")
    for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)
PY_CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    if os.sep + "common" + os.sep not in p
)

# The same structure as each config, with widths and budgets small enough for a test (channels
# stay multiples of 32 for GroupNorm).
TINY = {
    "MODEL.WEIGHTS": "",
    "MODEL.FPN.OUT_CHANNELS": 32,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 16,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 32,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS": [32, 32],
    "MODEL.ROI_HEADS.NUM_CLASSES": 3,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 200,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 50,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 50,
    "TEST.DETECTIONS_PER_IMAGE": 10,
}
TINY_BOTTLENECK = {  # ResNet-18/34's widths are fixed
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 8,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 16,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 4,
}
TINY_CONVNEXT = {"MODEL.CONVNEXT.DEPTHS": [1, 1, 1, 1], "MODEL.CONVNEXT.DIMS": [8, 8, 16, 16]}


# Projects whose configs need keys added before merging (Detectron2's style: their train_net.py adds them).
PROJECT_CONFIG_KEYS = {"projects/PortExample/": add_port_example_config}


def tiny_config(path: str, device: str, overrides: Sequence = ()) -> CfgNode:
    """The YAML config at `path` (relative to the repository) on `device`, shrunk, then `overrides`."""
    cfg = get_cfg()
    for project, add_config in PROJECT_CONFIG_KEYS.items():
        if path.startswith(project):
            add_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, path))
    tiny = dict(TINY, **{"MODEL.DEVICE": device})
    if cfg.MODEL.RESNETS.DEPTH >= 50:
        tiny.update(TINY_BOTTLENECK)
    if "CONVNEXT" in cfg.MODEL:
        tiny.update(TINY_CONVNEXT)
    cfg.merge_from_list([x for kv in tiny.items() for x in kv] + list(overrides))
    return cfg


def tiny_lazy_model_config(path: str):
    """The model of the Python config at `path`, shrunk, not yet built."""
    cfg = LazyConfig.load(os.path.join(ROOT, path))
    cfg.model.backbone.out_channels = 32
    if "head" in cfg.model:  # RetinaNet
        cfg.model.head.conv_dims = [32, 32]
        return cfg.model
    roi_heads = cfg.model.roi_heads
    roi_heads.num_classes = 3  # as TINY: the batch's classes (keypoint R-CNN has 1)
    roi_heads.box_head.fc_dims = [16]
    roi_heads.box_predictor.input_shape.channels = 16
    for name in ("mask_head", "keypoint_head"):
        if name in roi_heads:
            roi_heads[name].conv_dims = [32, 32]
    return cfg.model


def batch(size: int = 64, num_keypoints: int = 0):
    """Two images of different sizes, each with two objects (boxes, classes, masks, and with
    `num_keypoints` > 0 keypoints: all labelled, along each box's diagonal) and a semantic label map
    (0 on the objects, 1 elsewhere, as Panoptic FPN's)."""
    batch = []
    for h, w in ((size, size + 16), (size - 8, size)):
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 30.0, 28.0], [20.0, 16.0, w - 2.0, h - 4.0]]))
        instances.gt_classes = torch.tensor([0, 2])
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, 6:28, 4:30] = True
        masks[1, 16 : h - 4, 20 : w - 2] = True
        instances.gt_masks = BitMasks(masks)
        if num_keypoints:
            along = torch.linspace(0.1, 0.9, num_keypoints)[:, None]  # (J, 1)
            boxes = instances.gt_boxes.tensor[:, None]  # (2, 1, 4)
            xy = boxes[..., :2] + along * (boxes[..., 2:] - boxes[..., :2])  # (2, J, 2)
            instances.gt_keypoints = Keypoints(torch.cat([xy, torch.full((2, num_keypoints, 1), 2.0)], dim=2))
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        sem_seg = (~masks.any(dim=0)).long()
        batch.append({"image": image, "height": h, "width": w, "instances": instances, "sem_seg": sem_seg})
    return batch
