"""ViTDet's COCO Mask R-CNN ViT-B config, written as Detectron2's with `detectron2` renamed: it loads,
its model has the ViT-B structure, its optimiser decays the learning rate layer by layer, its
schedule and its large-scale-jitter mapper work."""
import os

import cv2
import numpy as np
import pytest
import torch

from d2mask.config import LazyConfig, instantiate
from d2mask.structures import BoxMode
from tests.common import REPO

CONFIG = os.path.join(REPO, "projects", "ViTDet", "configs", "COCO", "mask_rcnn_vitdet_b_100ep.py")


@pytest.fixture(scope="module")
def cfg():
    return LazyConfig.load(CONFIG)


def test_model_and_layer_wise_learning_rates(cfg):
    assert set(cfg) == {"dataloader", "model", "train", "lr_multiplier", "optimizer"}
    with torch.device("meta"):  # shapes only
        model = instantiate(cfg.model)
    assert len(model.backbone.net.blocks) == 12 and model.backbone.padding_constraints == {"square_size": 1024}
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)
    hyper = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    net, base = model.backbone.net, 1e-4
    # 12 blocks: the embeddings decay 0.7**13, block i 0.7**(12 - i), the rest none; no weight
    # decay on pos_embed (override) and on norms.
    assert hyper[id(net.pos_embed)] == (pytest.approx(base * 0.7**13), 0.0)
    assert hyper[id(net.patch_embed.proj.weight)] == (pytest.approx(base * 0.7**13), 0.1)
    assert hyper[id(net.blocks[0].attn.qkv.weight)] == (pytest.approx(base * 0.7**12), 0.1)
    assert hyper[id(net.blocks[11].norm1.weight)] == (pytest.approx(base * 0.7), 0.0)
    assert hyper[id(model.roi_heads.box_predictor.cls_score.weight)] == (base, 0.1)


def test_schedule_warms_up_then_steps_down(cfg):
    assert cfg.train.max_iter == 184375 and cfg.train.amp.enabled and cfg.train.ddp.fp16_compression
    multiplier = instantiate(cfg.lr_multiplier)  # a function of the fraction of training done
    assert multiplier(0.0) == pytest.approx(0.001)
    assert multiplier(0.5) == 1.0
    assert multiplier(163889 / 184375) == pytest.approx(0.1)
    assert multiplier(177546 / 184375) == pytest.approx(0.01)


def test_train_mapper_jitters_to_at_most_1024(cfg, tmp_path):
    image = np.full((480, 640, 3), 90, dtype=np.uint8)
    image[100:300, 200:400] = (20, 200, 40)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    square = [200.0, 100.0, 400.0, 100.0, 400.0, 300.0, 200.0, 300.0]
    record = {
        "file_name": str(tmp_path / "a.png"),
        "height": 480,
        "width": 640,
        "image_id": 1,
        "annotations": [
            {"bbox": [200, 100, 200, 200], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "segmentation": [square]}
        ],
    }
    mapper = instantiate(cfg.dataloader.train.mapper)
    np.random.seed(0)
    sizes = set()
    for _ in range(8):
        out = mapper(dict(record))
        c, h, w = out["image"].shape
        assert c == 3 and h <= 1024 and w <= 1024
        sizes.add((h, w))
        boxes = out["instances"].gt_boxes.tensor
        assert (boxes[:, 2:] <= torch.tensor([w, h])).all()
    assert len(sizes) > 1  # the scale is drawn per image
