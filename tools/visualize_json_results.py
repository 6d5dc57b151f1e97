#!/usr/bin/env python
"""Draws the predictions in a COCO results json (coco_instances_results.json, written by evaluation
into OUTPUT_DIR/inference/) next to the ground truth, one PNG per image of the dataset.

    python tools/visualize_json_results.py --input output/shapes_mask_rcnn_R_18_FPN/inference/coco_instances_results.json \
        --output vis/ --dataset shapes_coco_val --conf-threshold 0.5
"""
import argparse
import json
import os
import sys
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.catalog import DatasetError
from d2mask.data.detection_utils import read_image
from d2mask.engine import report_user_errors
from d2mask.structures import Boxes, BoxMode, Instances
from d2mask.utils.file_io import PathManager
from d2mask.utils.visualizer import VisImage, Visualizer


def create_instances(predictions: List[Dict[str, Any]], image_size, conf_threshold: float,
                     dataset_id_map: Callable[[int], int]) -> Instances:
    """The predictions of one image scoring above `conf_threshold`, as Instances (boxes XYXY; masks
    and keypoints when every prediction has them)."""
    chosen = [p for p in predictions if p["score"] > conf_threshold]
    boxes = np.asarray([p["bbox"] for p in chosen], dtype=np.float64).reshape(-1, 4)
    instances = Instances(image_size)
    instances.scores = np.asarray([p["score"] for p in chosen])
    instances.pred_boxes = Boxes(BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))
    instances.pred_classes = np.asarray([dataset_id_map(p["category_id"]) for p in chosen], dtype=np.int64)
    if chosen and all("segmentation" in p for p in chosen):
        instances.pred_masks = [p["segmentation"] for p in chosen]
    if chosen and all("keypoints" in p for p in chosen):
        keypoints = np.asarray([p["keypoints"] for p in chosen], dtype=np.float64).reshape(len(chosen), -1, 3)
        keypoints[..., :2] += 0.5  # COCO's pixel indices -> continuous coordinates, as the COCO loader does
        instances.pred_keypoints = keypoints
    return instances


def _id_map(dataset: str) -> Callable[[int], int]:
    metadata = MetadataCatalog.get(dataset)
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    if id_map is None:
        DatasetCatalog.get(dataset)  # loading a COCO json sets the map
        id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    if id_map is None:
        raise DatasetError(f"Dataset '{dataset}' has no thing_dataset_id_to_contiguous_id in its metadata, so the "
                           f"category ids of the results cannot be mapped to its classes")

    def lookup(dataset_id: int) -> int:
        if dataset_id not in id_map:
            raise DatasetError(f"A result has category_id {dataset_id}, which dataset '{dataset}' does not have")
        return id_map[dataset_id]

    return lookup


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Returns the paths written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="JSON file produced by the model")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--dataset", default="coco_2017_val", help="name of the dataset")
    parser.add_argument("--conf-threshold", default=0.5, type=float, help="confidence threshold")
    args = parser.parse_args(argv)

    with PathManager.open(args.input, "r") as f:
        try:
            predictions = json.load(f)
        except ValueError as e:
            raise DatasetError(f"{args.input} is not a JSON file of results ({e})") from None
    by_image = defaultdict(list)
    for p in predictions:
        by_image[p["image_id"]].append(p)
    dicts = DatasetCatalog.get(args.dataset)
    metadata = MetadataCatalog.get(args.dataset)
    dataset_id_map = _id_map(args.dataset)

    os.makedirs(args.output, exist_ok=True)
    written = []
    for dic in dicts:
        image = read_image(dic["file_name"], "RGB")
        instances = create_instances(by_image[dic["image_id"]], image.shape[:2], args.conf_threshold, dataset_id_map)
        drawn_predictions = Visualizer(image, metadata).draw_instance_predictions(instances).get_image()
        drawn_truth = Visualizer(image, metadata).draw_dataset_dict(dic).get_image()
        path = os.path.join(args.output, os.path.splitext(os.path.basename(dic["file_name"]))[0] + ".png")
        VisImage(np.concatenate([drawn_predictions, drawn_truth], axis=1)).save(path)
        written.append(path)
    print(f"Wrote {len(written)} images to {args.output}")
    return written


if __name__ == "__main__":
    report_user_errors(main, sys.argv[1:])
