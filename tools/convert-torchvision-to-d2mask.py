#!/usr/bin/env python
"""Converts torchvision's ImageNet ResNet weights to d2mask's (Detectron2's) parameter names.

    python tools/convert-torchvision-to-d2mask.py resnet50-0676ba61.pth R-50.pkl
    python tools/convert-torchvision-to-d2mask.py resnet50-0676ba61.pth R-50-fpn.pkl --model-layout fpn

By default the names are those of the ResNet alone (`stem.conv1.weight`, `res2.0.conv1.norm.weight`)
and the file is marked for name-suffix matching, as Detectron2's own converter writes it. With
`--model-layout fpn` or `c4` the names are those of a whole d2mask model (`backbone.bottom_up.res2...`;
for C4 res5 under `roi_heads.res5`), so the file loads by exact key. The conversion is
`d2mask.checkpoint.convert_torchvision_checkpoint`; its module says how to configure the model.
"""
import argparse
import sys

from d2mask.checkpoint import convert_torchvision_checkpoint
from d2mask.engine import report_user_errors


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="torchvision ResNet checkpoint (.pth state dict)")
    parser.add_argument("output", help="d2mask checkpoint to write (.pkl)")
    parser.add_argument("--model-layout", choices=["fpn", "c4"], default="",
                        help="write a whole model's names instead of the ResNet's own")
    args = parser.parse_args(argv)
    count = convert_torchvision_checkpoint(args.source, args.output, args.model_layout)
    print(f"Wrote {count} tensors to {args.output}. Set MODEL.RESNETS.STRIDE_IN_1X1 False, INPUT.FORMAT RGB and "
          f"torchvision's PIXEL_MEAN/PIXEL_STD (see d2mask/checkpoint/torchvision_model_loading.py).", file=sys.stderr)


if __name__ == "__main__":
    report_user_errors(main)
