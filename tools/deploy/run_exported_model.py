#!/usr/bin/env python
"""Runs a model exported by tools/deploy/export_model.py on images, without d2mask.

    python tools/deploy/run_exported_model.py exported/model.ts --input a.jpg b.jpg
    python tools/deploy/run_exported_model.py exported/model.onnx --input a.jpg --output dets.npz

Needs only what the artefact needs: torch and torchvision (model.ts, model.pt2) or onnxruntime
(model.onnx), plus numpy and OpenCV for reading and resizing images. It reads deploy.json beside the
artefact, resizes each image as the model's test loader would, runs the artefact, and brings the
detections back to the original image: boxes scaled, masks pasted into their boxes. It prints one line
per detection; --output also saves every image's arrays (boxes, scores, classes, masks or keypoints) to an .npz file.

Copy `load_model`, `preprocess` and `postprocess` into your own code to deploy.
"""
import argparse
import json
import os
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

# The default of d2mask's INPUT.MAX_IMAGE_PIXELS (this sample does not import d2mask).
MAX_IMAGE_PIXELS = 100_000_000


def load_model(path: str) -> Tuple[Callable[[np.ndarray], Dict[str, np.ndarray]], dict]:
    """The artefact at `path` as a function `Array[C, H, W] float32 -> {output name: array}`, and
    the deploy.json written beside it."""
    with open(os.path.join(os.path.dirname(path), "deploy.json")) as f:
        info = json.load(f)
    names = info["outputs"]
    if path.endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda image: dict(zip(names, session.run(names, {"image": image}))), info

    import torch
    import torchvision  # noqa: F401  (registers the NMS and ROIAlign operators the artefact calls)

    module = torch.export.load(path).module() if path.endswith(".pt2") else torch.jit.load(path)

    def run(image: np.ndarray) -> Dict[str, np.ndarray]:
        with torch.no_grad():
            outputs = module(torch.from_numpy(image))
        return {name: value.numpy() for name, value in zip(names, outputs)}

    return run, info


def read_image(file_name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """`Array[H, W, 3]` uint8 BGR of the image file. Exits with one line if the file cannot be read
    or has more than `max_pixels` pixels; the size is checked in the file's header before decoding
    where Pillow can read it there, otherwise after decoding."""
    declared = _declared_size(file_name, max_pixels)
    if declared is not None and declared[0] * declared[1] > max_pixels:
        raise SystemExit(f"Image {file_name} is {declared[0]}x{declared[1]} (width x height), more than "
                         f"--max-pixels {max_pixels}; it was not decoded")
    image = cv2.imread(file_name, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"Cannot read image {file_name}")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise SystemExit(f"Image {file_name} is {image.shape[1]}x{image.shape[0]} (width x height), more than "
                         f"--max-pixels {max_pixels}")
    return image


def _declared_size(file_name: str, max_pixels: int) -> Optional[Tuple[int, int]]:
    """(width, height) declared in the image file's header, read by Pillow without decoding; None
    where Pillow is not installed or cannot parse the header."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is max_pixels
            with Image.open(file_name) as image:
                return image.size
    except Image.DecompressionBombError:  # Pillow's own limit, above which it hides the size
        bomb_limit = 2 * Image.MAX_IMAGE_PIXELS
        if max_pixels < bomb_limit:
            raise SystemExit(f"Image {file_name} declares more than {bomb_limit} pixels, more than "
                             f"--max-pixels {max_pixels}; it was not decoded") from None
        return None
    except Exception:  # Pillow raises many types for files it cannot parse; OpenCV decides
        return None


def preprocess(image: np.ndarray, info: dict) -> np.ndarray:
    """`Array[H, W, 3]` uint8 BGR (as cv2.imread gives) -> the model's input `Array[C, H', W']`
    float32: channels in the model's INPUT.FORMAT, the shorter side resized to MIN_SIZE_TEST unless the
    longer would exceed MAX_SIZE_TEST."""
    if info["input_format"] == "RGB":
        image = image[:, :, ::-1]
    elif info["input_format"] == "L":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
    height, width = image.shape[:2]
    scale = info["min_size_test"] / min(height, width)
    if max(height, width) * scale > info["max_size_test"]:
        scale = info["max_size_test"] / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    resized = resized.reshape(new_h, new_w, -1)  # cv2 drops a channel axis of size 1
    return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)  # (H, W, C) -> (C, H, W)


def paste_masks(masks: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float = 0.5) -> np.ndarray:
    """`Array[D, M, M]` mask probabilities, each covering its box of `Array[D, 4]` (x0, y0, x1, y1) ->
    `Array[D, height, width]` bool image masks, by bilinear resampling into the box (as d2mask does).

    Image pixel i's centre lies at mask coordinate u = (i + 0.5 - x0) / (x1 - x0) * M; mask cell j
    contributes with weight max(0, 1 - |u - 0.5 - j|), one axis at a time.
    """
    mask_side = masks.shape[1]

    def weights(lo: np.ndarray, hi: np.ndarray, length: int) -> np.ndarray:  # (D, length, M)
        u = (np.arange(length, dtype=np.float32)[None] + 0.5 - lo[:, None]) / np.maximum(hi - lo, 1e-6)[:, None]
        u = u * mask_side - 0.5
        return np.clip(1 - np.abs(u[:, :, None] - np.arange(mask_side, dtype=np.float32)), 0, None)

    boxes = boxes.astype(np.float32)
    wy = weights(boxes[:, 1], boxes[:, 3], height)
    wx = weights(boxes[:, 0], boxes[:, 2], width)
    return (wy @ masks.astype(np.float32) @ wx.transpose(0, 2, 1)) >= threshold


def postprocess(outputs: Dict[str, np.ndarray], height: int, width: int) -> Dict[str, np.ndarray]:
    """The artefact's outputs (at the resized input's size) -> detections on the original
    `height x width` image: boxes scaled and clipped, empty ones dropped, masks pasted, keypoints scaled."""
    input_h, input_w = outputs["image_size"]
    scale = np.array([width / input_w, height / input_h], dtype=np.float32)
    boxes = outputs["pred_boxes"] * np.tile(scale, 2)
    boxes = np.clip(boxes, 0, [width, height, width, height])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    result = {"boxes": boxes[keep], "scores": outputs["scores"][keep], "classes": outputs["pred_classes"][keep]}
    if "pred_masks" in outputs:
        result["masks"] = paste_masks(outputs["pred_masks"][keep][:, 0], result["boxes"], height, width)
    if "pred_keypoints" in outputs:  # (D, J, 3) of x, y, score
        keypoints = outputs["pred_keypoints"][keep].copy()
        keypoints[..., :2] *= scale
        result["keypoints"] = keypoints
    return result


def main(argv: Optional[List[str]] = None) -> List[Dict[str, np.ndarray]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model.ts, model.onnx or model.pt2, with deploy.json beside it")
    parser.add_argument("--input", nargs="+", required=True, help="image files")
    parser.add_argument("--output", default=None, help="an .npz file for the detections' arrays")
    parser.add_argument("--max-pixels", type=int, default=MAX_IMAGE_PIXELS,
                        help="refuse images of more pixels (width x height) than this")
    args = parser.parse_args(argv)
    if args.max_pixels < 1:
        parser.error(f"--max-pixels must be a positive number of pixels, got {args.max_pixels}")
    run, info = load_model(args.model)
    results, arrays = [], {}
    for i, file_name in enumerate(args.input):
        image = read_image(file_name, args.max_pixels)
        detections = postprocess(run(preprocess(image, info)), *image.shape[:2])
        results.append(detections)
        arrays.update({f"{i}_{key}": value for key, value in detections.items()})
        for box, score, cls in zip(detections["boxes"], detections["scores"], detections["classes"]):
            print(f"{file_name}: class {int(cls)} score {score:.3f} box {np.round(box, 1).tolist()}")
    if args.output:
        np.savez_compressed(args.output, **arrays)
    return results


if __name__ == "__main__":
    main()
