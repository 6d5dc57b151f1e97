#!/usr/bin/env python
"""Exports a trained Faster/Mask/Keypoint R-CNN for deployment, to run without d2mask (see docs/deployment.md).

    python tools/deploy/export_model.py --config-file CFG --export-method tracing --format torchscript \
        --sample-image img.jpg --output exported/ MODEL.WEIGHTS output/model_final.pth
    python tools/deploy/export_model.py ... --export-method tracing --format onnx ...
    python tools/deploy/export_model.py ... --export-method torch_export ...        # model.pt2

Writes into --output the artefact (model.ts, model.onnx or model.pt2) and deploy.json, what the sample
tools/deploy/run_exported_model.py needs to run it (input format and test resize, output names), then
runs the saved artefact on the sample and checks that it reproduces the eager model's detections.
Without --sample-image, the first image of DATASETS.TEST[0] is the sample. --run-eval then evaluates
the artefact on DATASETS.TEST as `train_net.py --eval-only` evaluates the eager model. Config and flag mistakes,
and models that cannot be exported, end with one line and exit status 2.
"""
import argparse
import json
import logging
import math
import os
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.config import load_config
from d2mask.data import build_detection_test_loader
from d2mask.data import transforms as T
from d2mask.data.detection_utils import read_image
from d2mask.engine import EXIT_USER_ERROR, USER_ERRORS, DefaultTrainer, user_error_message
from d2mask.evaluation import inference_on_dataset
from d2mask.export import (
    ExportError,
    dump_torchscript_IR,
    export_onnx,
    export_torch_export,
    export_torchscript,
    input_size_range,
    output_names,
    verify_export,
)
from d2mask.modeling import build_model, detector_postprocess
from d2mask.utils.logger import setup_logger

# This repository's configs import its projects (`IMPORTS: [projects.DenseText.atss_matcher]`). d2mask
# never adds a directory to the import path (not even the current one); its tools add the repository root.
sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# The file each (method, format) writes; other pairs are refused.
ARTEFACTS = {
    ("tracing", "torchscript"): "model.ts",
    ("tracing", "onnx"): "model.onnx",
    ("torch_export", "pt2"): "model.pt2",
}
logger = logging.getLogger("d2mask.export")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="YAML config of the model")
    parser.add_argument(
        "--export-method", choices=["tracing", "torch_export"], default="tracing",
        help="torch.jit.trace (for TorchScript and ONNX) or torch.export",
    )
    parser.add_argument(
        "--format", choices=["torchscript", "onnx", "pt2"], default=None,
        help="artefact format; default torchscript for tracing, pt2 for torch_export",
    )
    parser.add_argument("--sample-image", default=None, help="image to trace with; default: first of DATASETS.TEST[0]")
    parser.add_argument("--output", required=True, help="directory for the artefact and deploy.json")
    parser.add_argument(
        "--run-eval", action="store_true",
        help="evaluate the saved artefact on DATASETS.TEST (results in OUTPUT/inference), as Detectron2's flag",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs (MODEL.WEIGHTS ...)")
    args = parser.parse_args(argv)
    if args.format is None:
        args.format = "pt2" if args.export_method == "torch_export" else "torchscript"
    if (args.export_method, args.format) not in ARTEFACTS:
        pairs = ", ".join(f"--export-method {m} --format {f}" for m, f in ARTEFACTS)
        parser.error(f"--export-method {args.export_method} cannot write --format {args.format}; one of: {pairs}")
    return args


def sample_image(cfg, file_name: Optional[str]) -> torch.Tensor:
    """`Tensor[C, H, W]` float: the sample image, read and resized as the test loader does."""
    if file_name is None:
        if not cfg.DATASETS.TEST:
            raise ExportError("Give --sample-image, or name a dataset in DATASETS.TEST to take the sample from")
        return next(iter(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])))[0]["image"].float()
    image = read_image(file_name, format=cfg.INPUT.FORMAT, max_pixels=cfg.INPUT.MAX_IMAGE_PIXELS)
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
    image = resize.get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))  # (H, W, C) -> (C, H, W)


def export(cfg, args: argparse.Namespace):
    """Exports the model of `cfg` as `args` ask; returns the artefact's path and its TracingAdapter."""
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    image = sample_image(cfg, args.sample_image)
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, ARTEFACTS[(args.export_method, args.format)])
    info = {"export_method": args.export_method, "format": args.format, "file": os.path.basename(path)}
    if args.format == "torchscript":
        traced, adapter = export_torchscript(model, image)
        torch.jit.save(traced, path)
        dump_torchscript_IR(traced, args.output)
    elif args.format == "onnx":
        adapter = export_onnx(model, image, path)
    else:
        program, adapter = export_torch_export(model, image)
        torch.export.save(program, path)
        # JSON has no infinity: an unbounded side is null.
        sizes = input_size_range(program)
        info["input_size_range"] = [[low, None if math.isinf(high) else high] for low, high in sizes]
    info.update(
        outputs=output_names(adapter),
        input_format=cfg.INPUT.FORMAT,
        min_size_test=cfg.INPUT.MIN_SIZE_TEST,
        max_size_test=cfg.INPUT.MAX_SIZE_TEST,
    )
    with open(os.path.join(args.output, "deploy.json"), "w") as f:
        json.dump(info, f, indent=2)
    logger.info(f"Outputs schema: {adapter.outputs_schema}")
    return path, adapter


def load_artefact(path: str, adapter) -> Optional[Callable[[torch.Tensor], List[torch.Tensor]]]:
    """The saved artefact as a function of one image `Tensor[C, H, W]` returning its flat outputs;
    None for an ONNX model without onnxruntime."""
    if path.endswith(".onnx"):
        try:
            import onnxruntime
        except ImportError:
            logger.warning("onnxruntime is not installed (the 'export' extra): the ONNX model cannot be run")
            return None
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = output_names(adapter)
        return lambda image: [torch.from_numpy(o) for o in session.run(names, {"image": image.numpy()})]
    module = torch.export.load(path).module() if path.endswith(".pt2") else torch.jit.load(path)
    return lambda image: list(module(image))


def check(path: str, run: Callable[[torch.Tensor], List[torch.Tensor]], adapter) -> None:
    """Runs the saved artefact on the sample and compares its detections with the eager model's."""
    with torch.no_grad():
        outputs = run(adapter.flattened_inputs[0])
    count = verify_export(outputs, adapter)
    print(f"Checked: {path} reproduces the eager model's {count} detections on the sample.")


class ArtefactDetector(nn.Module):
    """The artefact behind the eager model's interface (batched input dicts in, `{"instances": ...}`
    at each image's original size out), so that the evaluators take it as they take the model."""

    def __init__(self, run: Callable[[torch.Tensor], List[torch.Tensor]], adapter):
        super().__init__()
        self.run = run
        self.outputs_schema = adapter.outputs_schema

    def forward(self, batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        results = []
        for inputs in batched_inputs:
            image = inputs["image"].float()
            instances = self.outputs_schema(self.run(image))
            height, width = inputs.get("height", image.shape[-2]), inputs.get("width", image.shape[-1])
            results.append({"instances": detector_postprocess(instances, height, width)})
        return results


def evaluate(cfg, detector: nn.Module, output: str) -> Dict[str, Any]:
    """Results of `detector` on each dataset of DATASETS.TEST, with the evaluator train_net would use."""
    results = {}
    for name in cfg.DATASETS.TEST:
        evaluator = DefaultTrainer.build_evaluator(cfg, name, os.path.join(output, "inference", name))
        results[name] = inference_on_dataset(detector, build_detection_test_loader(cfg, name), evaluator)
        print(f"Evaluation of the artefact on {name}: {json.dumps(results[name])}")
    return results


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    setup_logger(name="d2mask")
    cfg = load_config(args.config_file, args.opts)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.freeze()
    # Tracing warns at every size check it records as a constant; the comparison with the eager model
    # on the sample (`check`) is the test that matters, and reports a difference as one line.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    path, adapter = export(cfg, args)
    run = load_artefact(path, adapter)
    if run is not None:
        check(path, run, adapter)
    print(f"Wrote {path} and {os.path.join(args.output, 'deploy.json')}. Run it without d2mask:")
    print(f"    python tools/deploy/run_exported_model.py {path} --input IMAGE [IMAGE ...]")
    if args.run_eval:
        if run is None:
            raise ExportError("--run-eval on an ONNX model needs onnxruntime: pip install -e \".[export]\"")
        evaluate(cfg, ArtefactDetector(run, adapter), args.output)
    return path


if __name__ == "__main__":
    try:
        main()
    except USER_ERRORS + (ExportError,) as e:
        print(user_error_message(e), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
