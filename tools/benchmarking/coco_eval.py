"""The coco_eval task of tools/benchmark.py: COCOEvaluator on a synthetic COCO-sized set, with
faster-coco-eval (the default) and with pycocotools (the reference), one case per backend and task.

The set: `num_images` images of 480 x 640 with 0-14 GT objects each (7 on average, as COCO's val2017),
80 classes with COCO's non-contiguous ids, 1 % crowd GT (RLE masks, the others polygons), and 20
detections per image: the GT jittered (90 % with the right class), the rest placed at random. Every
object is an octagon inscribed in its box. The GT is read from a json file, as for COCO itself.
"""
import math
import os
import tempfile
import time
from typing import Dict, Iterator, List, Tuple

from .inputs import octagons
from .measure import process_memory

DETECTIONS_PER_IMAGE = 20
NUM_CLASSES = 80
IMAGE_SIZE = (480, 640)
BACKENDS = {"faster-coco-eval": True, "pycocotools": False}  # name: COCOEvaluator's use_fast_impl


def _random_boxes(rng, num: int):
    """XYXY boxes with log-uniform sides of 8..256 pixels, clipped to the image."""
    import numpy as np

    h, w = IMAGE_SIZE
    centres = rng.uniform(0, 1, (num, 2)) * (w, h)
    sides = np.exp(rng.uniform(math.log(8), math.log(256), (num, 2)))
    return np.concatenate([centres - sides / 2, centres + sides / 2], axis=1).clip(0, [w, h, w, h])


def synthetic_coco(num_images: int, seed: int = 0) -> Tuple[Dict, List[Dict]]:
    """The GT as a COCO dict, and each image's detections as `{"image_id", "boxes" [20, 4] XYXY,
    "scores" [20], "classes" [20] contiguous}` (numpy)."""
    import numpy as np
    import pycocotools.mask as mask_util

    rng = np.random.default_rng(seed)
    h, w = IMAGE_SIZE
    category_ids = [1 + k + k // 10 for k in range(NUM_CLASSES)]  # gaps, as COCO's ids 1..90
    images, annotations, detections = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w})
        boxes = _random_boxes(rng, int(rng.integers(0, 15)))
        classes = rng.integers(0, NUM_CLASSES, len(boxes))
        for box, polygon, k in zip(boxes, octagons(boxes), classes):
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_ids[k],
                   "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "iscrowd": 0,
                   "segmentation": [polygon]}
            rle = mask_util.merge(mask_util.frPyObjects([polygon], h, w))
            ann["area"] = float(mask_util.area(rle))
            if rng.uniform() < 0.01:
                rle["counts"] = rle["counts"].decode("ascii")
                ann.update(iscrowd=1, segmentation=rle)
            annotations.append(ann)
        found = boxes[:DETECTIONS_PER_IMAGE]
        sides = np.concatenate([found[:, 2:] - found[:, :2]] * 2, axis=1)
        found = (found + rng.normal(0, 0.1, found.shape) * sides).clip(0, [w, h, w, h])
        found_classes = np.where(rng.uniform(size=len(found)) < 0.9, classes[:len(found)],
                                 rng.integers(0, NUM_CLASSES, len(found)))
        spurious = _random_boxes(rng, DETECTIONS_PER_IMAGE - len(found))
        detections.append({
            "image_id": image_id,
            "boxes": np.concatenate([found, spurious]).astype(np.float32),
            "scores": rng.uniform(0.05, 1, DETECTIONS_PER_IMAGE).astype(np.float32),
            "classes": np.concatenate([found_classes, rng.integers(0, NUM_CLASSES, len(spurious))]),
        })
    categories = [{"id": i, "name": f"class{i}"} for i in category_ids]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def _model_outputs(detections: List[Dict], with_masks: bool) -> Iterator[Dict]:
    """Each image's detections as a model's output: Instances with full-image boolean masks."""
    import cv2
    import numpy as np
    import torch

    from d2mask.structures import Boxes, Instances

    for det in detections:
        instances = Instances(IMAGE_SIZE, pred_boxes=Boxes(torch.from_numpy(det["boxes"])),
                              scores=torch.from_numpy(det["scores"]), pred_classes=torch.from_numpy(det["classes"]))
        if with_masks:
            masks = np.zeros((len(det["boxes"]), *IMAGE_SIZE), dtype=np.uint8)
            for mask, polygon in zip(masks, octagons(det["boxes"].astype(np.float64))):
                cv2.fillPoly(mask, [np.round(np.reshape(polygon, (8, 2))).astype(np.int32)], 1)
            instances.pred_masks = torch.from_numpy(masks.astype(bool))
        yield {"instances": instances}


def coco_eval_case(backend: str, task: str, num_images: str, args) -> Dict:
    """COCOEvaluator with one backend on one task: the GT loaded from json, process() over every
    image (mask encoding included), then evaluate(), each timed; the model's outputs are made
    outside the timing."""
    import json

    import torch

    from d2mask.data import DatasetCatalog, MetadataCatalog
    from d2mask.evaluation import COCOEvaluator

    gt, detections = synthetic_coco(int(num_images))
    name = "coco_eval_benchmark"
    with tempfile.TemporaryDirectory() as tmp:
        json_file = os.path.join(tmp, "gt.json")
        with open(json_file, "w") as f:
            json.dump(gt, f)
        DatasetCatalog.register(name, lambda: [])
        id_map = {c["id"]: k for k, c in enumerate(gt["categories"])}
        MetadataCatalog.get(name).set(json_file=json_file, thing_classes=[c["name"] for c in gt["categories"]],
                                      thing_dataset_id_to_contiguous_id=id_map)
        start = time.perf_counter()
        evaluator = COCOEvaluator(name, (task,), False, use_fast_impl=BACKENDS[backend])
        load_s = time.perf_counter() - start
        evaluator.reset()
        process_s = 0.0
        for det, output in zip(detections, _model_outputs(detections, with_masks=task == "segm")):
            start = time.perf_counter()
            evaluator.process([{"image_id": det["image_id"]}], [output])
            process_s += time.perf_counter() - start
        start = time.perf_counter()
        results = evaluator.evaluate()[task]
        evaluate_s = time.perf_counter() - start
    return {"task": "coco_eval", "backend": backend, "eval_task": task, "num_images": int(num_images),
            "num_gt": len(gt["annotations"]), "num_detections": DETECTIONS_PER_IMAGE * int(num_images),
            "load_gt_s": load_s, "process_s": process_s, "evaluate_s": evaluate_s,
            "total_s": load_s + process_s + evaluate_s, "results": results,
            **process_memory(torch.device("cpu"))}


def compare(fast: Dict, reference: Dict) -> Dict:
    """The ratios fast / reference, and the largest difference between any two reported values."""
    differences = []
    for name, value in reference["results"].items():
        other = fast["results"].get(name, math.nan)
        if math.isnan(value) or math.isnan(other):  # NaN (no GT) must be NaN on both sides
            differences.append(0.0 if math.isnan(value) and math.isnan(other) else math.inf)
        else:
            differences.append(abs(other - value))
    return {
        "task": "coco_eval", "eval_task": fast["eval_task"], "num_images": fast["num_images"],
        "ratio_evaluate": fast["evaluate_s"] / reference["evaluate_s"],
        "ratio_total": fast["total_s"] / reference["total_s"],
        "max_ap_difference": max(differences),
        "identical": list(fast["results"]) == list(reference["results"]) and max(differences) <= 1e-4,
        "AP": reference["results"]["AP"],
    }
