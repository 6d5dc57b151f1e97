#!/usr/bin/env python
"""Runs a trained model on images and saves PNGs with its detections drawn on them.

    python tools/visualize_predictions.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml \
        --input img1.png img2.jpg --output vis/ MODEL.WEIGHTS output/model_final.pth

Without --input, the first --num-images images of the first DATASETS.TEST dataset are used.
"""
import argparse
import os
import sys
from typing import List, Optional

from d2mask.config import ConfigError, load_config
from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.datasets import set_datasets_root
from d2mask.data.detection_utils import read_image
from d2mask.engine import DefaultPredictor, report_user_errors
from d2mask.utils.visualizer import Visualizer

# This repository's configs import its projects (`IMPORTS: [projects.DenseText.atss_matcher]`). d2mask
# never adds a directory to the import path (not even the current one); its tools add the repository root.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="YAML config of the model")
    parser.add_argument("--input", nargs="+", default=None, help="image files; default: DATASETS.TEST[0]")
    parser.add_argument("--output", required=True, help="directory for the PNGs")
    parser.add_argument("--num-images", type=int, default=10, help="images to take from DATASETS.TEST[0]")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="lowest score drawn")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Returns the paths written."""
    args = parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    set_datasets_root(cfg.DATASETS.ROOT)

    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else None
    files = args.input
    if files is None:
        if not cfg.DATASETS.TEST:
            raise ConfigError("Give --input images, or name a dataset in DATASETS.TEST")
        files = [d["file_name"] for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:args.num_images]]

    predictor = DefaultPredictor(cfg)
    os.makedirs(args.output, exist_ok=True)

    written = []
    for file_name in files:
        image = read_image(file_name, "BGR", max_pixels=cfg.INPUT.MAX_IMAGE_PIXELS)
        instances = predictor(image)["instances"].to("cpu")
        instances = instances[instances.scores >= args.confidence_threshold]
        vis = Visualizer(image[:, :, ::-1], metadata).draw_instance_predictions(instances)
        path = os.path.join(args.output, os.path.splitext(os.path.basename(file_name))[0] + ".png")
        vis.save(path)
        written.append(path)
    print(f"Wrote {len(written)} images to {args.output}")
    return written


if __name__ == "__main__":
    report_user_errors(main, sys.argv[1:])
