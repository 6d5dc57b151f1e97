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
