#!/usr/bin/env python
"""Saves PNGs of a training dataset's ground truth, drawn on the images.

    python tools/visualize_data.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml --output vis/ --num-images 20

With --source dataloader (the default) each image is drawn as the model receives it: after the
DatasetMapper's resizing, flipping and cropping, with the instances it builds. With --source
annotation the original images and annotations are drawn.
"""
import argparse
import os
import sys
from typing import List, Optional

from d2mask.config import load_config
from d2mask.data import DatasetMapper, MetadataCatalog, get_detection_dataset_dicts
from d2mask.data.catalog import check_dataset_names
from d2mask.data.datasets import set_datasets_root
from d2mask.data.detection_utils import convert_image_to_rgb, read_image
from d2mask.engine import report_user_errors
from d2mask.utils.visualizer import Visualizer

# This repository's configs import its projects (`IMPORTS: [projects.DenseText.atss_matcher]`). d2mask
# never adds a directory to the import path (not even the current one); its tools add the repository root.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="YAML config; DATASETS.TRAIN names the datasets")
    parser.add_argument("--output", required=True, help="directory for the PNGs")
    parser.add_argument("--source", choices=["dataloader", "annotation"], default="dataloader",
                        help="draw after the mapper's transforms (dataloader) or the raw annotations")
    parser.add_argument("--num-images", type=int, default=10, help="how many images to draw")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Returns the paths written."""
    args = parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    set_datasets_root(cfg.DATASETS.ROOT)

    names = check_dataset_names(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
    dataset_dicts = get_detection_dataset_dicts(names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    metadata = MetadataCatalog.get(names[0])
    class_names = metadata.get("thing_classes")
    mapper = DatasetMapper(cfg, is_train=True)
    os.makedirs(args.output, exist_ok=True)

    written = []
    for dic in dataset_dicts[:args.num_images]:
        if args.source == "dataloader":
            item = mapper(dic)
            image = convert_image_to_rgb(item["image"].permute(1, 2, 0).numpy(), cfg.INPUT.FORMAT)
            instances = item["instances"]
            labels = [class_names[c] if class_names else str(c) for c in instances.gt_classes.tolist()]
            masks = instances.gt_masks if instances.has("gt_masks") else None
            vis = Visualizer(image, metadata).overlay_instances(boxes=instances.gt_boxes, labels=labels, masks=masks)
        else:
            image = read_image(dic["file_name"], "RGB", max_pixels=cfg.INPUT.MAX_IMAGE_PIXELS)
            vis = Visualizer(image, metadata).draw_dataset_dict(dic)
        path = os.path.join(args.output, os.path.splitext(os.path.basename(dic["file_name"]))[0] + ".png")
        vis.save(path)
        written.append(path)
    print(f"Wrote {len(written)} images to {args.output}")
    return written


if __name__ == "__main__":
    report_user_errors(main, sys.argv[1:])
