"""Inputs for tools/benchmark.py: the config, synthetic batches with GT boxes and masks, dataset batches."""
import math
from typing import Dict, List, Optional


def load_cfg(args):
    from d2mask.config import load_config
    from d2mask.data.datasets import set_datasets_root

    cfg = load_config(args.config_file, [*args.opts, "MODEL.DEVICE", args.device])
    set_datasets_root(cfg.DATASETS.ROOT)
    return cfg


def random_gt_boxes(num: int, image_size, device, seed: Optional[int] = None):
    """`num` boxes with log-uniform sides of 8..256 pixels, centred uniformly, clipped to the image;
    the random seed is `num` unless given."""
    import torch

    g = torch.Generator().manual_seed(num if seed is None else seed)
    h, w = image_size
    centres = torch.rand(num, 2, generator=g) * torch.tensor([w, h])
    sides = torch.exp(torch.empty(num, 2).uniform_(2.08, 5.55, generator=g))  # e^2.08 ~ 8, e^5.55 ~ 256
    boxes = torch.cat((centres - sides / 2, centres + sides / 2), dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return boxes.to(device)


def octagons(boxes) -> List[List[float]]:
    """Flat polygons [x0, y0, x1, y1, ...] of the octagons inscribed in `boxes` (XYXY numpy, `[R, 4]`)."""
    import numpy as np

    angles = np.arange(8) * (2 * math.pi / 8)
    centres, radii = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
    xs = centres[:, :1] + radii[:, :1] * np.cos(angles)
    ys = centres[:, 1:] + radii[:, 1:] * np.sin(angles)
    return np.stack([xs, ys], axis=2).reshape(len(boxes), 16).tolist()


def synthetic_batch(cfg, image_size, num_gt: int, batch_size: int, device) -> List[Dict]:
    """`batch_size` d2mask input dicts: noise images (float, 0..255) with `num_gt` objects each, every
    object an octagon inscribed in its box, its mask in INPUT.MASK_FORMAT."""
    import numpy as np
    import torch

    from d2mask.structures import BitMasks, Boxes, Instances, PolygonMasks

    h, w = image_size
    batch = []
    for i in range(batch_size):
        g = torch.Generator().manual_seed(1000 + i)
        boxes = random_gt_boxes(num_gt, image_size, "cpu")
        masks = PolygonMasks([[np.asarray(p)] for p in octagons(boxes.double().numpy())])
        if cfg.INPUT.MASK_FORMAT == "bitmask":
            masks = BitMasks.from_polygon_masks(masks, h, w)
        instances = Instances(
            (h, w),
            gt_boxes=Boxes(boxes),
            gt_classes=torch.randint(cfg.MODEL.ROI_HEADS.NUM_CLASSES, (num_gt,), generator=g),
            gt_masks=masks,
        )
        image = torch.rand(3, h, w, generator=g) * 255
        batch.append({"image": image.to(device), "instances": instances.to(device), "height": h, "width": w})
    return batch


def dataset_batches(cfg, dataset: str, batch_size: int, count: int) -> List[List[Dict]]:
    """The first `count` batches of the train loader (augmentation included) over `dataset`, images
    as float so that both frameworks get the same tensors."""
    from d2mask.data import build_detection_train_loader

    cfg = cfg.clone()
    cfg.merge_from_list(["DATASETS.TRAIN", (dataset,), "SOLVER.IMS_PER_BATCH", batch_size,
                         "DATALOADER.NUM_WORKERS", 0])
    batches, loader = [], iter(build_detection_train_loader(cfg))
    for _ in range(count):
        batch = next(loader)
        for inputs in batch:
            inputs["image"] = inputs["image"].float()
        batches.append(batch)
    return batches


SYNTHETIC_COCO = "synthetic_coco_benchmark"


def write_synthetic_coco(folder: str, num_images: int, image_size, num_classes: int = 80, seed: int = 0) -> str:
    """Writes a COCO-like training set into `folder` and registers it as SYNTHETIC_COCO: `num_images`
    JPEG images of `image_size` (H, W) with 7 objects each on average (0-14, as COCO's), every object
    an octagon inscribed in a box of 8..256 px sides (COCO's polygon masks), drawn in its own colour on
    a smooth background with mild noise (so that the JPEG decodes like a photo, not like noise)."""
    import json
    import os

    import cv2
    import numpy as np

    from d2mask.data.datasets import register_coco_instances

    rng = np.random.default_rng(seed)
    h, w = image_size
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] + np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        image = (ramp * rng.uniform(20, 100, 3) + rng.uniform(0, 100, 3)).astype(np.float32)
        boxes = random_gt_boxes(int(rng.integers(0, 15)), image_size, "cpu", seed=image_id).double().numpy()
        for box, polygon in zip(boxes, octagons(boxes)):
            cv2.fillPoly(image, [np.round(np.reshape(polygon, (8, 2))).astype(np.int32)], rng.uniform(0, 255, 3).tolist())
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "category_id": int(rng.integers(1, num_classes + 1)), "segmentation": [polygon],
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                "area": float((box[2] - box[0]) * (box[3] - box[1]) * 0.83)})  # an octagon's share
        image += rng.normal(0, 4, image.shape).astype(np.float32)
        file_name = f"{image_id:06d}.jpg"
        cv2.imwrite(os.path.join(folder, file_name), image.clip(0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
    categories = [{"id": k, "name": f"class{k}"} for k in range(1, num_classes + 1)]
    json_file = os.path.join(folder, "instances.json")
    with open(json_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    register_coco_instances(SYNTHETIC_COCO, {}, json_file, folder)
    return json_file
