"""What many test files share: the repository root, Detectron2's reference parameter lists, and the
tiny-width R-CNN config. Imported as `from tests.common import ...`."""
import os
from typing import List, Sequence, Tuple

from d2mask.config import CfgNode, get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(REPO, "tests", "data", "reference")


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
