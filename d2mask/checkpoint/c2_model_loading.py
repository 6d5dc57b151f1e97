"""Name matching for checkpoints whose tensor names differ from the model's.

Two kinds of files need it (both flagged `matching_heuristics` by `DetectionCheckpointer._load_file`):
- ImageNet backbones in Caffe2 naming, e.g. Detectron2's `ImageNetPretrained/MSRA/R-50.pkl`
  (`res2_0_branch2a_w`), converted here to Detectron2's ResNet names (`res2.0.conv1.weight`);
- backbones saved on their own (e.g. converted from torchvision: `stem.conv1.weight`), whose names
  lack the model's prefix (`backbone.bottom_up.`), matched by suffix.
"""
import logging
import re
from typing import Dict, List, Optional

from torch import Tensor

__all__ = ["convert_c2_resnet_names", "align_and_update_state_dicts"]

logger = logging.getLogger(__name__)

_C2_BRANCHES = {"branch1": "shortcut", "branch2a": "conv1", "branch2b": "conv2", "branch2c": "conv3"}
_C2_SUFFIXES = {
    "w": "weight",
    "b": "bias",
    "bn_s": "norm.weight",
    "bn_b": "norm.bias",
    "bn_rm": "norm.running_mean",
    "bn_riv": "norm.running_var",
}
_C2_BLOCK = re.compile(r"res(\d+)_(\d+)_(branch1|branch2[abc])_(w|b|bn_s|bn_b|bn_rm|bn_riv)")
_C2_STEM = re.compile(r"(?:res_)?conv1_(w|b|bn_s|bn_b|bn_rm|bn_riv)")


def _c2_to_d2_name(name: str) -> Optional[str]:
    block = _C2_BLOCK.fullmatch(name)
    if block:
        stage, index, branch, suffix = block.groups()
        return f"res{stage}.{index}.{_C2_BRANCHES[branch]}.{_C2_SUFFIXES[suffix]}"
    stem = _C2_STEM.fullmatch(name)
    if stem:
        return f"stem.conv1.{_C2_SUFFIXES[stem.group(1)]}"
    return None


def convert_c2_resnet_names(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Renames a Caffe2 ResNet's tensors to Detectron2's ResNet names; unknown names (e.g. the ImageNet
    classifier `fc1000_w`) are kept and end up reported as unexpected.

    Caffe2's ResNets normalise with AffineChannel (a scale and a bias, no statistics). Such a norm
    gets mean 0 and variance 1, so the FrozenBatchNorm2d it loads into computes the same affine map.
    """
    converted = {}
    for name, value in state_dict.items():
        converted[_c2_to_d2_name(name) or name] = value
    for name in list(converted):
        if name.endswith(".norm.weight"):
            prefix = name[: -len("weight")]
            converted.setdefault(prefix + "running_mean", converted[name].new_zeros(converted[name].shape))
            converted.setdefault(prefix + "running_var", converted[name].new_ones(converted[name].shape))
    return converted


def align_and_update_state_dicts(
    model_state_dict: Dict[str, Tensor], ckpt_state_dict: Dict[str, Tensor]
) -> Dict[str, Tensor]:
    """Renames checkpoint tensors to the model names they are a suffix of.

    Each model name takes the longest checkpoint name equal to it or ending it at a "." boundary:
    `res2.0.conv1.weight` goes to `backbone.bottom_up.res2.0.conv1.weight`. A checkpoint name that
    several model names end with (the model holds the same sub-network twice) is ambiguous and not
    loaded. Shapes are not checked here; the caller skips mismatched shapes.

    Args:
        model_state_dict: the model's state dict (only its names are read).
        ckpt_state_dict: the checkpoint's tensors.

    Returns:
        The matched tensors under their model names, plus the unmatched checkpoint tensors under their
        own names (so that they are reported as unexpected).
    """
    claimed: Dict[str, List[str]] = {}
    for model_name in model_state_dict:
        parts = model_name.split(".")
        for start in range(len(parts)):
            candidate = ".".join(parts[start:])
            if candidate in ckpt_state_dict:
                claimed.setdefault(candidate, []).append(model_name)
                break

    result = {}
    for ckpt_name, value in ckpt_state_dict.items():
        model_names = claimed.get(ckpt_name)
        if model_names is None:
            result[ckpt_name] = value
        elif len(model_names) > 1:
            logger.warning(
                f"Checkpoint tensor '{ckpt_name}' matches several model tensors {model_names}; it is not loaded"
            )
        else:
            result[model_names[0]] = value
    logger.info(f"Matched {sum(len(v) == 1 for v in claimed.values())} of {len(ckpt_state_dict)} checkpoint "
                f"tensors to the model by name suffix")
    return result
