#!/usr/bin/env python
"""Converts torchvision's ImageNet ResNet weights to d2mask's (Detectron2's) parameter names.

    python tools/convert-torchvision-to-d2mask.py resnet50-0676ba61.pth R-50.pkl
    python tools/convert-torchvision-to-d2mask.py resnet50-0676ba61.pth R-50-fpn.pkl --model-layout fpn

By default the names are those of the ResNet alone (`stem.conv1.weight`, `res2.0.conv1.norm.weight`)
and the file is marked for name-suffix matching, as Detectron2's own converter writes it. With
`--model-layout fpn` or `c4` the names are those of a whole d2mask model (`backbone.bottom_up.res2...`;
for C4 res5 under `roi_heads.res5`), so the file loads by exact key.

torchvision's networks were trained on RGB images normalised per channel, with the stride of each
bottleneck in its 3x3 convolution; configure the model to match:
    MODEL.RESNETS.STRIDE_IN_1X1 False
    MODEL.PIXEL_MEAN [123.675, 116.280, 103.530]
    MODEL.PIXEL_STD [58.395, 57.120, 57.375]
    INPUT.FORMAT RGB
"""
import argparse
import pickle
import re
import sys
from typing import Dict

import torch

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="torchvision ResNet checkpoint (.pth state dict)")
    parser.add_argument("output", help="d2mask checkpoint to write (.pkl)")
    parser.add_argument("--model-layout", choices=["fpn", "c4"], default="",
                        help="write a whole model's names instead of the ResNet's own")
    args = parser.parse_args(argv)

    state_dict = torch.load(args.source, map_location="cpu", weights_only=True)
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    converted = convert_torchvision_resnet(state_dict, args.model_layout)
    with open(args.output, "wb") as f:
        pickle.dump(
            {
                "model": {k: v.numpy() for k, v in converted.items()},
                "__author__": "torchvision",
                "matching_heuristics": not args.model_layout,
            },
            f,
        )
    print(f"Wrote {len(converted)} tensors to {args.output}. Set MODEL.RESNETS.STRIDE_IN_1X1 False, "
          f"INPUT.FORMAT RGB and torchvision's PIXEL_MEAN/PIXEL_STD (see this script's docstring).", file=sys.stderr)


if __name__ == "__main__":
    main()
