"""torchvision's ImageNet ResNet weights under d2mask's (Detectron2's) parameter names.

torchvision's networks were trained on RGB images normalised per channel, with the stride of each
bottleneck in its 3x3 convolution; a model loading them is configured to match:
    MODEL.RESNETS.STRIDE_IN_1X1 False
    MODEL.PIXEL_MEAN [123.675, 116.280, 103.530]
    MODEL.PIXEL_STD [58.395, 57.120, 57.375]
    INPUT.FORMAT RGB
"""
import pickle
import re
from typing import Dict

import torch

from ..utils.atomic_write import atomic_write
from .detection_checkpoint import read_pth

__all__ = ["convert_torchvision_resnet", "convert_torchvision_checkpoint"]

# torchvision name fragment -> d2mask name fragment, applied in order.
_RENAMES = [
    (r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}."),
    (r"\.downsample\.0\.", lambda m: ".shortcut."),
    (r"\.downsample\.1\.", lambda m: ".shortcut.norm."),
    (r"\.bn(\d)\.", lambda m: f".conv{m.group(1)}.norm."),
    (r"^conv1\.", lambda m: "stem.conv1."),
    (r"^bn1\.", lambda m: "stem.conv1.norm."),
]
_PREFIXES = {
    "fpn": lambda name: "backbone.bottom_up." + name,
    "c4": lambda name: ("roi_heads." if name.startswith("res5.") else "backbone.") + name,
}


def convert_torchvision_resnet(state_dict: Dict[str, torch.Tensor], model_layout: str = "") -> Dict[str, torch.Tensor]:
    """Renames a torchvision ResNet state dict to d2mask names.

    The classifier (`fc.*`) and BatchNorm step counters are dropped: a detector has no use for them.

    Args:
        state_dict: torchvision's `resnet*().state_dict()`.
        model_layout: "" for backbone-relative names, or "fpn" / "c4" for a whole model's names.

    Returns:
        The renamed tensors, in the input's order.
    """
    if model_layout and model_layout not in _PREFIXES:
        raise ValueError(f"model_layout must be '', 'fpn' or 'c4', got {model_layout!r}")
    converted = {}
    for name, value in state_dict.items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        new = name
        for pattern, repl in _RENAMES:
            new = re.sub(pattern, repl, new)
        if new == name:
            raise ValueError(f"'{name}' is not a parameter of a torchvision ResNet; is this a ResNet checkpoint?")
        converted[_PREFIXES[model_layout](new) if model_layout else new] = value
    return converted


def convert_torchvision_checkpoint(source: str, output: str, model_layout: str = "") -> int:
    """Writes torchvision's ResNet checkpoint `source` (a .pth state dict) as a d2mask `.pkl`.

    With backbone-relative names (`model_layout` "") the file is marked for name-suffix matching, as
    Detectron2's own converter writes it; with "fpn" or "c4" it holds a whole model's names and loads
    by exact key.

    Returns:
        The number of tensors written.
    """
    state_dict = read_pth(source)
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    converted = convert_torchvision_resnet(state_dict, model_layout)
    data = {
        "model": {k: v.numpy() for k, v in converted.items()},
        "__author__": "torchvision",
        "matching_heuristics": not model_layout,
    }
    with atomic_write(output, "wb") as f:
        pickle.dump(data, f)
    return len(converted)
