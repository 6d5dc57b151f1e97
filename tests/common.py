"""What many test files share: the repository root, Detectron2's reference parameter lists, the
tiny-width R-CNN config, a one-image Cityscapes split, box-shaped predicted instances, and loading a
script. Imported as
`from tests.common import ...`."""
import importlib.util
import os
from types import ModuleType
from typing import List, Sequence, Tuple

import numpy as np
import torch

from d2mask.config import CfgNode, get_cfg
from d2mask.structures import Boxes, Instances

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(REPO, "tests", "data", "reference")


def load_script(path: str) -> ModuleType:
    """The script at `path` in the repository (e.g. "tools/train_net.py"), run as a fresh module named
    after its file: the tools and the demo are files to run, not a package to import."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_reference(filename: str, prefixes: Sequence[str] = ("",)) -> List[Tuple[str, Tuple[int, ...]]]:
    """(name, shape) of each entry of a reference list in tests/data/reference whose name starts with
    one of `prefixes`, in Detectron2's order."""
    entries = []
    with open(os.path.join(REFERENCE, filename)) as f:
        for line in f:
            name, shape = line.strip().rsplit(" (", 1)
            if name.startswith(tuple(prefixes)):
                entries.append((name, tuple(int(s) for s in shape.rstrip(")").split(",") if s.strip())))
    return entries


# Tiny widths for Detectron2's R-50 configs, as command-line overrides (tools under test take them too).
TINY_WIDTHS = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "4", "MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "8", "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "[8, 8]",
]


def tiny_rcnn_cfg(config: str = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", num_classes: int = 3) -> CfgNode:
    """A config of configs/ (path relative to it) with tiny widths: Detectron2's structure and names,
    a few thousand parameters, random weights, on the CPU."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", config))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.merge_from_list(TINY_WIDTHS)
    return cfg


# A one-image Cityscapes split of 20 x 12 pixels. Polygons in drawing order (later ones paint over
# earlier ones, as Cityscapes' json2instanceImg draws them): road everywhere, a car, a person over the
# car's right part, a caravan (ignored in evaluation) over the person's top-right corner, a crowd of
# cars, a license plate (never drawn) and a deleted object.
CITYSCAPES_STEM = "aachen_000000_000019"
CITYSCAPES_OBJECTS = [
    {"label": "road", "polygon": [[0, 0], [19, 0], [19, 11], [0, 11]]},
    {"label": "car", "polygon": [[2, 2], [8, 2], [8, 6], [2, 6]]},
    {"label": "person", "polygon": [[6, 0], [12, 0], [12, 11], [6, 11]]},
    {"label": "caravan", "polygon": [[10, 0], [12, 0], [12, 2], [10, 2]]},
    {"label": "cargroup", "polygon": [[14, 8], [17, 8], [17, 10], [14, 10]]},
    {"label": "license plate", "polygon": [[3, 3], [4, 3], [4, 4], [3, 4]]},
    {"label": "bus", "polygon": [[0, 0], [19, 0], [19, 11]], "deleted": 1},
]


def cityscapes_instance_ids() -> np.ndarray:
    """`ndarray[12, 20]`: the instanceIds map Cityscapes makes of CITYSCAPES_OBJECTS (label id, or
    label id * 1000 + k for an instance), with one more instance, a motorcycle one pixel wide at x = 19."""
    ids = np.full((12, 20), 7, dtype=np.int64)  # road
    ids[2:7, 2:9] = 26000  # car: rows 2..6, columns 2..8
    ids[0:12, 6:13] = 24000  # person
    ids[0:3, 10:13] = 29000  # caravan
    ids[8:11, 14:18] = 26  # crowd of cars
    ids[0:4, 19] = 32000  # motorcycle
    return ids


def write_cityscapes_tree(root: str) -> Tuple[str, str]:
    """Writes the split under `root` in Cityscapes' layout; returns (image_dir, gt_dir)."""
    import json

    from PIL import Image

    from d2mask.data.datasets.builtin_meta import CITYSCAPES_LABELS

    image_dir, gt_dir = os.path.join(root, "leftImg8bit", "val"), os.path.join(root, "gtFine", "val")
    os.makedirs(os.path.join(image_dir, "aachen"))
    os.makedirs(os.path.join(gt_dir, "aachen"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)).save(
        os.path.join(image_dir, "aachen", f"{CITYSCAPES_STEM}_leftImg8bit.png"))
    ids = cityscapes_instance_ids()
    label_ids = np.where(ids >= 1000, ids // 1000, ids)
    train_ids = np.full(256, 255, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        if label.id >= 0:
            train_ids[label.id] = label.train_id
    prefix = os.path.join(gt_dir, "aachen", f"{CITYSCAPES_STEM}_gtFine_")
    Image.fromarray(ids.astype(np.uint16)).save(prefix + "instanceIds.png")
    Image.fromarray(label_ids.astype(np.uint8)).save(prefix + "labelIds.png")
    Image.fromarray(train_ids[label_ids]).save(prefix + "labelTrainIds.png")
    with open(prefix + "polygons.json", "w") as f:
        json.dump({"imgHeight": 12, "imgWidth": 20, "objects": CITYSCAPES_OBJECTS}, f)
    return image_dir, gt_dir


def boxed_instances(objects: Sequence[Tuple[int, int, int, int, int]], h: int, w: int) -> Instances:
    """Predicted `Instances` of an h x w image, score 0.9 each, from (class, x0, y0, x1, y1) tuples,
    each with a mask filling its box."""
    masks = torch.zeros(len(objects), h, w, dtype=torch.bool)
    for i, (_, x0, y0, x1, y1) in enumerate(objects):
        masks[i, y0:y1, x0:x1] = True
    return Instances((h, w), pred_boxes=Boxes(torch.tensor([o[1:] for o in objects], dtype=torch.float32)),
                     scores=torch.full((len(objects),), 0.9), pred_classes=torch.tensor([o[0] for o in objects]),
                     pred_masks=masks)
