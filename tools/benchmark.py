#!/usr/bin/env python
"""Benchmarks of d2mask: time per iteration, images/s and peak memory, optionally against torchvision.

    python tools/benchmark.py --task train --compare torchvision --iters 5 --warmup 2
    python tools/benchmark.py --task inference --compare torchvision MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0
    python tools/benchmark.py --task inference --compare torchvision-matched --batch-size 1 MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0
    python tools/benchmark.py --task data --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml
    python tools/benchmark.py --task data --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml --synthetic-coco 64 --iters 3 --warmup 1 SOLVER.IMS_PER_BATCH 2
    python tools/benchmark.py --task rpn_targets --json
    python tools/benchmark.py --task coco_eval --json
    python tools/benchmark.py --task export MODEL.ROI_HEADS.SCORE_THRESH_TEST 0 MODEL.PIXEL_STD [100,100,100]

Tasks (each a function `fn(args) -> list[dict]` in TASKS; `--json` prints that list):
- train / inference: one training step (forward, backward, SGD step) or one inference of a batch, on
  synthetic inputs (`--image-size H W --num-gt K --batch-size B`, GT masks in INPUT.MASK_FORMAT) or on
  batches of a registered dataset (`--dataset NAME`). With `--compare torchvision`, torchvision's Mask
  R-CNN, built with the same image size, classes, norm, frozen stages and RPN/ROI settings wherever it
  has the knob, runs on identical inputs in the same process, its iterations alternating with
  d2mask's, and the ratio d2mask / torchvision of the median times is printed. `--compare
  torchvision-matched` builds torchvision's modules in the config's own architecture instead
  (Detectron2's ResNet block layout, FPN width and norm, box and mask head sizes; see
  docs/benchmarks.md for what it matches and what it cannot).
- data: images/s of the train loader alone, the share of data loading in a training iteration, and
  the loader's images/s against the training step's, for each `--num-workers`; on the config's
  training set or (`--synthetic-coco N`) on N COCO-like JPEG images written to a temporary folder.
- rpn_targets: `RPN.label_and_sample_anchors`, the RPN's forward + backward, and the ROI heads'
  `label_and_sample_proposals` (2000 proposals plus the GT boxes), at several GT counts.
- coco_eval: COCOEvaluator (loading the GT json, process() of every image, evaluate()) on a synthetic
  set of `--num-images` images x 20 detections, bbox and segm, with faster-coco-eval and with
  pycocotools: the times, their ratio, and the largest difference between the two backends' reported
  values (AP, AP50, ..., per class).
- export: eager inference against the artefacts of d2mask.export (`--methods`: TorchScript by tracing,
  torch.export, ONNX Runtime) on one `--image-size` image, random weights, on the CPU; each artefact
  is first checked to give the eager detections, then the runs are interleaved and each method's
  ratio to eager is printed (tools/benchmarking/export.py).

Each case runs in a fresh subprocess, so that one case's memory high-water mark cannot hide another's.
Times are medians over `--iters` iterations after `--warmup` untimed ones. Memory on CUDA is
`torch.cuda.max_memory_allocated` / `max_memory_reserved`; on CPU the process's peak resident set
size (`getrusage` max RSS) and, per measured step, that peak above the resident size before the step
(the high-water mark is reset first where Linux allows). Timings are never asserted; they are for
docs/benchmarks.md.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
from typing import Callable, Dict, List, Optional

from benchmarking.cases import CASES  # tools/benchmarking/, beside this script
from benchmarking.coco_eval import BACKENDS, compare
from benchmarking.export import METHODS, print_export
from benchmarking.inputs import load_cfg
from benchmarking.torchvision_twin import TWINS

# This repository's configs import its projects (`IMPORTS: [projects.DenseText.atss_matcher]`). d2mask
# never adds a directory to the import path (not even the current one); its tools add the repository root.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(_REPO)
_R50 = "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
# Per task when not given: config file, image size, GT counts, iterations, warm-up iterations.
_TASK_DEFAULTS = {
    "train": (_R50, (512, 640), [8], 5, 2),
    "inference": (_R50, (512, 640), [8], 5, 2),
    "rpn_targets": (_R50, (800, 1333), [10, 100, 1000, 3000], 3, 1),
    "data": ("configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml", None, [0], 20, 5),
    "coco_eval": (_R50, None, [0], 1, 0),  # the config is not used; each case runs once
    "export": (_R50, (512, 512), [0], 5, 2),
}


def _run_case_in_subprocess(args, case: List[str]) -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--task", args.task, "--config-file", args.config_file,
           "--device", args.device, "--iters", str(args.iters), "--warmup", str(args.warmup),
           "--batch-size", str(args.batch_size), "--case", *case]
    if args.image_size:
        cmd += ["--image-size", *map(str, args.image_size)]
    if args.dataset:
        cmd += ["--dataset", args.dataset]
    if args.compare:
        cmd += ["--compare", args.compare]
    if args.synthetic_coco:
        cmd += ["--synthetic-coco", str(args.synthetic_coco)]
    proc = subprocess.run([*cmd, "--", *args.opts], capture_output=True, text=True, cwd=_REPO)
    if proc.returncode != 0:
        # One line, not the case's traceback: SystemExit prints it and ends the run with status 1.
        raise SystemExit(f"Benchmark case '{args.task} {' '.join(case)}' failed: {_case_error(proc)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _case_error(proc: subprocess.CompletedProcess) -> str:
    """The error that ended a case's subprocess: the last line of its traceback, or the signal."""
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit status {proc.returncode}"


def _print_model(r: Dict) -> None:
    line = f"{r['task']:9s} {r['num_gt'] or '-'!s:>5} GT  batch {r['batch_size']}  sizes {r['image_sizes']}"
    for name in ("d2mask", "torchvision"):
        if name in r:
            m = r[name]
            line += (f"  | {r['compare'] if name == 'torchvision' else name} {m['median_s']:.3f} s/iter {m['images_per_s']:.2f} img/s "
                     f"peak +{m['peak_extra_mb']:.0f} MB")
    if "ratio" in r:
        line += (f"  | ratio d2mask/{r['compare']} {r['ratio']:.3f} (paired {r['ratio_paired_median']:.3f}, "
                 f"fastest {r['ratio_min']:.3f}, CPU time {r['ratio_cpu']:.3f})")
    print(line, flush=True)


def bench_model(args) -> List[Dict]:
    """A training step or an inference, per GT count (or on a dataset), optionally vs torchvision."""
    results = []
    for num_gt in [None] if args.dataset else args.num_gt:
        results.append(_run_case_in_subprocess(args, [str(num_gt or 0)]))
        if not args.json:
            _print_model(results[-1])
    return results


def bench_data(args) -> List[Dict]:
    """Loader throughput and data share of a training iteration, per number of loader workers."""
    results = []
    for workers in args.num_workers:
        results.append(_run_case_in_subprocess(args, [str(workers)]))
        if not args.json:
            r = results[-1]
            print(f"NUM_WORKERS {workers}: loader {r['loader']['images_per_s']:.1f} img/s  train iter "
                  f"{r['train_iter_median_s']:.3f} s  data share {100 * r['data_share']:.1f} %  training step "
                  f"{r['train_step_images_per_s']:.2f} img/s  loader / step {r['loader_to_step_ratio']:.1f}x "
                  f"(images {r['image_sizes']})", flush=True)
    return results


def bench_rpn_targets(args) -> List[Dict]:
    """label_and_sample_anchors, the RPN's forward + backward in training, and the ROI heads'
    label_and_sample_proposals, at several GT counts."""
    results = []
    for stage in ("label_and_sample_anchors", "rpn_forward_backward", "label_and_sample_proposals"):
        for num_gt in args.num_gt:
            results.append(_run_case_in_subprocess(args, [stage, str(num_gt)]))
            if not args.json:
                r = results[-1]
                boxes = f"{r['num_anchors']} anchors" if "num_anchors" in r else f"{r['num_proposals']} proposals"
                print(f"{stage:26s} {num_gt:6d} GT  {boxes}  median {r['median_s']:8.3f} s  "
                      f"peak extra {r['peak_extra_mb']:8.1f} MB", flush=True)
    return results


def bench_coco_eval(args) -> List[Dict]:
    """Per task (bbox, segm): COCOEvaluator's times with each backend, then their comparison."""
    results = []
    for task in ("bbox", "segm"):
        runs = [_run_case_in_subprocess(args, [backend, task, str(args.num_images)]) for backend in BACKENDS]
        results += [*runs, compare(*runs)]
        if not args.json:
            for r in runs:
                print(f"{task} {r['backend']:16s} {r['num_images']} images: load GT {r['load_gt_s']:7.2f} s  "
                      f"process {r['process_s']:7.2f} s  evaluate {r['evaluate_s']:7.2f} s  "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
            c = results[-1]
            print(f"{task} ratio faster-coco-eval / pycocotools: evaluate {c['ratio_evaluate']:.3f}  "
                  f"total {c['ratio_total']:.3f}  |  AP {c['AP']:.3f}, largest difference of a reported value "
                  f"{c['max_ap_difference']:.2g} ({'identical' if c['identical'] else 'DIFFERENT'} to 1e-4)", flush=True)
    return results


def bench_export(args) -> List[Dict]:
    """Eager inference against each of `--methods`' artefacts, interleaved in one process."""
    if "onnx" in args.methods:
        import onnxruntime  # noqa: F401  (an ImportError is one line: install the 'export' extra)
    results = [_run_case_in_subprocess(args, [",".join(args.methods)])]
    if not args.json:
        print_export(results[0])
    return results


TASKS: Dict[str, Callable] = {
    "train": bench_model, "inference": bench_model, "data": bench_data, "rpn_targets": bench_rpn_targets,
    "coco_eval": bench_coco_eval,
    "export": bench_export,
}


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--config-file", default=None, help="default: R50-FPN Mask R-CNN; quick start for data")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON list")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--compare", choices=sorted(TWINS), help="train/inference: time torchvision alongside, "
                        "in its own architecture (torchvision) or in the config's (torchvision-matched)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="synthetic image size")
    parser.add_argument("--num-gt", type=int, nargs="+", help="GT objects per image, one case each")
    parser.add_argument("--batch-size", type=int, default=2, help="images per iteration (train/inference)")
    parser.add_argument("--dataset", help="train/inference: batches of this registered dataset, not synthetic")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2], help="data: loader workers, one case each")
    parser.add_argument("--num-images", type=int, default=5000, help="coco_eval: images in the synthetic set")
    parser.add_argument("--synthetic-coco", type=int, metavar="N", help="data: train on N COCO-like JPEG images of "
                        "--image-size (default 800 1333) with ~7 polygon objects each, written to a temporary folder")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="export: the export methods to time against eager")
    parser.add_argument("--iters", type=int, help="timed iterations per case")
    parser.add_argument("--warmup", type=int, help="untimed iterations first (they measure memory)")
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)  # internal: run one case here
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    args.opts = [o for o in args.opts if o != "--"]
    if args.synthetic_coco is not None and (args.task != "data" or args.synthetic_coco < 1):
        parser.error(f"--synthetic-coco takes a number of images >= 1 and applies to the data task, "
                     f"got {args.synthetic_coco} for {args.task}")
    if args.compare and args.task not in ("train", "inference"):
        parser.error(f"--compare applies to the train and inference tasks, not {args.task}")
    config_file, image_size, num_gt, iters, warmup = _TASK_DEFAULTS[args.task]
    args.config_file = args.config_file or os.path.join(_REPO, config_file)
    args.image_size = args.image_size or image_size
    args.num_gt = args.num_gt or num_gt
    args.iters = iters if args.iters is None else args.iters
    args.warmup = warmup if args.warmup is None else args.warmup
    # Exported artefacts are compared on the CPU, where ONNX Runtime runs them here.
    args.device = args.device or ("cpu" if args.task == "export" else _default_device())
    if args.task == "export" and args.device != "cpu":
        parser.error(f"--task export measures on the CPU, not --device {args.device}")
    if args.iters < 1 or args.warmup < 0:
        parser.error(f"--iters must be >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}")
    if args.case:
        print(json.dumps(CASES[args.task](*args.case, args)))
        return
    load_cfg(args)  # a mistake in the config is one line here, not a failed case in a subprocess
    results = TASKS[args.task](args)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    from d2mask.engine import report_user_errors

    report_user_errors(main)
