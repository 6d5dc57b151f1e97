#!/usr/bin/env python
"""Benchmarks of d2mask: time per iteration, images/s and peak memory, optionally against torchvision.

    python tools/benchmark.py --task train --compare torchvision --iters 5 --warmup 2
    python tools/benchmark.py --task inference --compare torchvision MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0
    python tools/benchmark.py --task data --config-file configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml
    python tools/benchmark.py --task rpn_targets --json

Tasks (each a function `fn(args) -> list[dict]` in TASKS; `--json` prints that list):
- train / inference: one training step (forward, backward, SGD step) or one inference of a batch, on
  synthetic inputs (`--image-size H W --num-gt K --batch-size B`, GT masks in INPUT.MASK_FORMAT) or on
  batches of a registered dataset (`--dataset NAME`). With `--compare torchvision`, torchvision's Mask
  R-CNN, built with the same image size, classes, norm, frozen stages and RPN/ROI settings wherever it
  has the knob, runs on identical inputs in the same process, its iterations alternating with
  d2mask's, and the ratio d2mask / torchvision of the median times is printed.
- data: images/s of the train loader alone, and the share of data loading in a training iteration,
  for each `--num-workers`.
- rpn_targets: `RPN.label_and_sample_anchors` and the RPN's forward + backward at several GT counts.

Each case runs in a fresh subprocess, so that one case's memory high-water mark cannot hide another's.
Times are medians over `--iters` iterations after `--warmup` untimed ones. Memory on CUDA is
`torch.cuda.max_memory_allocated` / `max_memory_reserved`; on CPU the process's peak resident set
size (`getrusage` max RSS) and, per measured step, that peak above the resident size before the step
(the high-water mark is reset first where Linux allows). Timings are never asserted; they are for
docs/benchmarks.md.
"""
import argparse
import ctypes
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

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
}


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------
def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _release_free_memory() -> None:
    """Hands the allocator's free pages back to the OS (glibc), so that what one step freed does not
    count in the next step's starting RSS and hide its growth."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Resets the process's RSS high-water mark (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Meter:
    """Times calls of one function and records its peak memory, on one device."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.times: List[float] = []
        self.cpu_times: List[float] = []  # CPU seconds of the whole process (all threads)
        self.peak: Dict[str, float] = {}
        self.exact = True

    def memory(self, fn: Callable[[], None]) -> None:
        """Runs `fn` once, untimed, keeping the largest peak memory seen over such runs."""
        import torch

        gc.collect()
        self.sync()
        _release_free_memory()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            self.exact = _reset_peak_rss() and self.exact
            base = _current_rss()
        fn()
        self.sync()
        if self.cuda:
            peaks = {
                "peak_extra_mb": (torch.cuda.max_memory_allocated() - base) / 2**20,
                "max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
                "max_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
            }
        else:
            peaks = {"peak_extra_mb": (_peak_rss() - base) / 2**20}
        for key, value in peaks.items():
            self.peak[key] = max(self.peak.get(key, value), value)

    def time(self, fn: Callable[[], None]) -> None:
        self.sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        self.sync()
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)

    def result(self, images_per_iter: int = 0) -> Dict:
        median = statistics.median(self.times)
        result = {"median_s": median, "min_s": min(self.times), "times_s": self.times,
                  "cpu_median_s": statistics.median(self.cpu_times), **self.peak}
        if images_per_iter:
            result["images_per_s"] = images_per_iter / median
        if not self.cuda and not self.exact:
            result["note"] = "peak RSS not resettable here: per-step memory is an upper bound"
        return result


def _run_interleaved(steps: Dict[str, Callable[[], None]], device, iters: int, warmup: int) -> Dict[str, _Meter]:
    """Runs the steps in turn `warmup + iters` times, the order reversed every other round so that no
    step always follows the same one; the warm-up rounds measure memory, the others time."""
    meters = {name: _Meter(device) for name in steps}
    names = list(steps)
    for i in range(warmup + iters):
        for name in names if i % 2 == 0 else names[::-1]:
            (meters[name].memory if i < warmup else meters[name].time)(steps[name])
    return meters


def _process_memory(device) -> Dict[str, float]:
    import torch

    if device.type == "cuda":
        return {"max_reserved_mb": torch.cuda.max_memory_reserved() / 2**20}
    return {"peak_rss_mb": _peak_rss() / 2**20}


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def _load_cfg(args):
    from d2mask.config import load_config
    from d2mask.data.datasets import set_datasets_root

    cfg = load_config(args.config_file, [*args.opts, "MODEL.DEVICE", args.device])
    set_datasets_root(cfg.DATASETS.ROOT)
    return cfg


def _random_gt_boxes(num: int, image_size, device):
    """`num` boxes with log-uniform sides of 8..256 pixels, centred uniformly, clipped to the image."""
    import torch

    g = torch.Generator().manual_seed(num)
    h, w = image_size
    centres = torch.rand(num, 2, generator=g) * torch.tensor([w, h])
    sides = torch.exp(torch.empty(num, 2).uniform_(2.08, 5.55, generator=g))  # e^2.08 ~ 8, e^5.55 ~ 256
    boxes = torch.cat((centres - sides / 2, centres + sides / 2), dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return boxes.to(device)


def _synthetic_batch(cfg, image_size, num_gt: int, batch_size: int, device) -> List[Dict]:
    """`batch_size` d2mask input dicts: noise images (float, 0..255) with `num_gt` objects each, every
    object an octagon inscribed in its box, its mask in INPUT.MASK_FORMAT."""
    import numpy as np
    import torch

    from d2mask.structures import BitMasks, Boxes, Instances, PolygonMasks

    h, w = image_size
    angles = np.arange(8) * (2 * math.pi / 8)
    batch = []
    for i in range(batch_size):
        g = torch.Generator().manual_seed(1000 + i)
        boxes = _random_gt_boxes(num_gt, image_size, "cpu")
        centres, radii = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
        polygons = [
            [np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1).ravel()]
            for (cx, cy), (rx, ry) in zip(centres.double().numpy(), radii.double().numpy())
        ]
        masks = PolygonMasks(polygons)
        if cfg.INPUT.MASK_FORMAT == "bitmask":
            masks = BitMasks.from_polygon_masks(masks, h, w)
        instances = Instances(
            (h, w),
            gt_boxes=Boxes(boxes),
            gt_classes=torch.randint(cfg.MODEL.ROI_HEADS.NUM_CLASSES, (num_gt,), generator=g),
            gt_masks=masks,
        )
        image = torch.rand(3, h, w, generator=g) * 255
        batch.append({"image": image.to(device), "instances": instances.to(device), "height": h, "width": w})
    return batch


def _dataset_batches(cfg, dataset: str, batch_size: int, count: int) -> List[List[Dict]]:
    """The first `count` batches of the train loader (augmentation included) over `dataset`, images
    as float so that both frameworks get the same tensors."""
    from d2mask.data import build_detection_train_loader

    cfg = cfg.clone()
    cfg.merge_from_list(["DATASETS.TRAIN", (dataset,), "SOLVER.IMS_PER_BATCH", batch_size,
                         "DATALOADER.NUM_WORKERS", 0])
    batches, loader = [], iter(build_detection_train_loader(cfg))
    for _ in range(count):
        batch = next(loader)
        for inputs in batch:
            inputs["image"] = inputs["image"].float()
        batches.append(batch)
    return batches


# ---------------------------------------------------------------------------------------------
# torchvision's Mask R-CNN with d2mask's settings
# ---------------------------------------------------------------------------------------------
def _torchvision_model(cfg, image_size, device):
    """torchvision's `maskrcnn_resnet50_fpn` architecture (ResNet depth from the config), random weights,
    with the config's image size, classes, norm, frozen stages and the RPN/ROI settings torchvision has.

    It is assembled as `maskrcnn_resnet50_fpn` does, because that function, given no backbone weights,
    replaces FrozenBN by BatchNorm and trains every stage; here both follow RESNETS.NORM and FREEZE_AT.
    """
    import torch
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

    norms = {"FrozenBN": FrozenBatchNorm2d, "BN": torch.nn.BatchNorm2d, "GN": lambda c: torch.nn.GroupNorm(32, c)}
    model_cfg = cfg.MODEL
    if model_cfg.RESNETS.NORM not in norms:
        raise ValueError(f"--compare torchvision supports MODEL.RESNETS.NORM in {sorted(norms)}, "
                         f"got {model_cfg.RESNETS.NORM!r}")
    backbone = resnet_fpn_backbone(
        backbone_name=f"resnet{model_cfg.RESNETS.DEPTH}", weights=None,
        norm_layer=norms[model_cfg.RESNETS.NORM], trainable_layers=5 - model_cfg.BACKBONE.FREEZE_AT,
    )
    rpn, roi = model_cfg.RPN, model_cfg.ROI_HEADS
    sizes = [tuple(s) for s in model_cfg.ANCHOR_GENERATOR.SIZES]
    ratios = [tuple(r) for r in model_cfg.ANCHOR_GENERATOR.ASPECT_RATIOS]
    ratios = ratios * len(sizes) if len(ratios) == 1 else ratios
    levels = ["0", "1", "2", "3"]  # torchvision's names of p2..p5
    model = MaskRCNN(
        backbone,
        num_classes=roi.NUM_CLASSES + 1,
        # Images come pre-sized: min_size/max_size make the test-time resize a no-op (scale 1), and
        # _skip_resize (torchvision's own option for this) skips the random training resize.
        min_size=min(image_size), max_size=max(image_size), _skip_resize=True,
        image_mean=list(model_cfg.PIXEL_MEAN), image_std=list(model_cfg.PIXEL_STD),
        rpn_anchor_generator=AnchorGenerator(tuple(sizes), tuple(ratios)),
        rpn_pre_nms_top_n_train=rpn.PRE_NMS_TOPK_TRAIN, rpn_pre_nms_top_n_test=rpn.PRE_NMS_TOPK_TEST,
        rpn_post_nms_top_n_train=rpn.POST_NMS_TOPK_TRAIN, rpn_post_nms_top_n_test=rpn.POST_NMS_TOPK_TEST,
        rpn_nms_thresh=rpn.NMS_THRESH, rpn_fg_iou_thresh=rpn.IOU_THRESHOLDS[-1],
        rpn_bg_iou_thresh=rpn.IOU_THRESHOLDS[0], rpn_batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE,
        rpn_positive_fraction=rpn.POSITIVE_FRACTION,
        box_roi_pool=MultiScaleRoIAlign(levels, model_cfg.ROI_BOX_HEAD.POOLER_RESOLUTION,
                                        model_cfg.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO),
        mask_roi_pool=MultiScaleRoIAlign(levels, model_cfg.ROI_MASK_HEAD.POOLER_RESOLUTION,
                                         model_cfg.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO),
        box_score_thresh=roi.SCORE_THRESH_TEST, box_nms_thresh=roi.NMS_THRESH_TEST,
        box_detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE, box_fg_iou_thresh=roi.IOU_THRESHOLDS[-1],
        box_bg_iou_thresh=roi.IOU_THRESHOLDS[0], box_batch_size_per_image=roi.BATCH_SIZE_PER_IMAGE,
        box_positive_fraction=roi.POSITIVE_FRACTION,
    )
    return model.to(device)


def _torchvision_inputs(batch: List[Dict]):
    """The same images and GT in torchvision's format: labels 1..K (0 is background), uint8 masks."""
    import torch

    from d2mask.structures import BitMasks, PolygonMasks

    images, targets = [], []
    for inputs in batch:
        images.append(inputs["image"])
        if "instances" not in inputs:
            continue
        instances = inputs["instances"]
        masks = instances.gt_masks
        if isinstance(masks, PolygonMasks):
            masks = BitMasks.from_polygon_masks(masks, *instances.image_size)
        targets.append({
            "boxes": instances.gt_boxes.tensor,
            "labels": instances.gt_classes + 1,
            "masks": masks.tensor.to(device=instances.gt_boxes.device, dtype=torch.uint8),
        })
    return images, targets


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------
# The box-regression layers whose weights the benchmark zeroes, by framework.
_REGRESSION_LAYERS = {
    "d2mask": ("proposal_generator.rpn_head.anchor_deltas", "roi_heads.box_predictor.bbox_pred"),
    "torchvision": ("rpn.head.bbox_pred", "roi_heads.box_predictor.bbox_pred"),
}


def _zero_box_regression(model, framework: str) -> None:
    """Zeroes the RPN's and the box head's regression layers.

    With random weights (and FrozenBN at identity) the features grow to ~1e4, so random box deltas
    saturate their clamp: every proposal and detection becomes nearly the whole image and NMS leaves a
    handful, a far lighter workload than a trained model's. Zero deltas keep proposals on the anchors
    and detections on the proposals, so both frameworks process full sets (1000 proposals, 512 sampled
    regions, 100 detections) as a trained model would; the random scores still rank them.
    """
    import torch

    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in _REGRESSION_LAYERS[framework]:
            if name in modules:
                for param in modules[name].parameters():
                    param.zero_()


def _training_step(model, optimizer, forward: Callable[[], Dict]) -> None:
    optimizer.zero_grad(set_to_none=True)
    losses = forward()
    sum(losses.values()).backward()
    optimizer.step()


def _sgd(model):
    import torch

    # Learning rate 0: the step computes what a real one does, but the weights, and so the workload
    # of every iteration, stay those of the first.
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0, momentum=0.9,
                           weight_decay=1e-4)


def _model_case(task: str, num_gt: str, args) -> Dict:
    """One train or inference case: d2mask alone, or interleaved with torchvision."""
    import torch

    from d2mask.modeling import build_model

    cfg = _load_cfg(args)
    device = torch.device(args.device)
    num_gt = int(num_gt)
    count = args.warmup + args.iters
    if args.dataset:
        batches = _dataset_batches(cfg, args.dataset, args.batch_size, count)
    else:
        batches = [_synthetic_batch(cfg, args.image_size, num_gt, args.batch_size, device)] * count
    sizes = {tuple(x["image"].shape[-2:]) for batch in batches for x in batch}
    if args.compare and len(sizes) > 1:
        raise ValueError(f"--compare torchvision needs images of one size (torchvision resizes each image to "
                         f"its min_size/max_size); the batches hold sizes {sorted(sizes)}")
    if task == "inference":
        batches = [[{k: v for k, v in x.items() if k != "instances"} for x in batch] for batch in batches]
    train = task == "train"

    torch.manual_seed(0)
    models = {"d2mask": build_model(cfg).train(train)}
    if args.compare:
        models["torchvision"] = _torchvision_model(cfg, next(iter(sizes)), device).train(train)
    for name, model in models.items():
        _zero_box_regression(model, name)
    optimizers = {name: _sgd(model) for name, model in models.items()} if train else {}
    # Converted once, outside the timing: torchvision's inputs are what a loader would give it.
    converted = {id(b): _torchvision_inputs(b) for b in batches} if args.compare else {}
    detections = {name: [] for name in models}
    position = {name: 0 for name in models}  # each framework's next batch

    def step_fn(name: str) -> Callable[[], None]:
        model = models[name]

        def step():
            batch = batches[position[name]]
            position[name] += 1
            if name == "torchvision":
                images, targets = converted[id(batch)]
                forward = (lambda: model(images, targets)) if train else (lambda: model(images))
            else:
                forward = lambda: model(batch)  # noqa: E731
            if train:
                _training_step(model, optimizers[name], forward)
                return
            with torch.no_grad():
                outputs = forward()
            counted = [len(o["boxes"]) if name == "torchvision" else len(o["instances"]) for o in outputs]
            detections[name].append(statistics.mean(counted))

        return step

    meters = _run_interleaved({name: step_fn(name) for name in models}, device, args.iters, args.warmup)
    result = {
        "task": task, "config": args.config_file, "opts": args.opts, "device": args.device,
        "threads": torch.get_num_threads(), "dataset": args.dataset, "image_sizes": sorted(sizes), "num_gt": None if args.dataset else num_gt,
        "batch_size": args.batch_size, "iters": args.iters, "warmup": args.warmup,
    }
    for name, meter in meters.items():
        result[name] = meter.result(args.batch_size)
        if detections[name]:
            result[name]["detections_per_image"] = statistics.mean(detections[name])
    if args.compare:
        d2, tv = result["d2mask"], result["torchvision"]
        result["ratio"] = d2["median_s"] / tv["median_s"]
        # Each round's two iterations ran back to back, under the same load from other processes.
        result["ratio_paired_median"] = statistics.median(a / b for a, b in zip(d2["times_s"], tv["times_s"]))
        # On a shared machine the fastest iteration is the one least slowed by other processes.
        result["ratio_min"] = d2["min_s"] / tv["min_s"]
        result["ratio_cpu"] = d2["cpu_median_s"] / tv["cpu_median_s"]
    result.update(_process_memory(device))
    return result


def _data_case(num_workers: str, args) -> Dict:
    """The train loader's images/s alone, then its share of the time of training iterations."""
    import torch

    from d2mask.data import build_detection_train_loader
    from d2mask.modeling import build_model

    cfg = _load_cfg(args)
    cfg.merge_from_list(["DATALOADER.NUM_WORKERS", int(num_workers)])
    device = torch.device(args.device)
    batch_size = cfg.SOLVER.IMS_PER_BATCH

    loader = iter(build_detection_train_loader(cfg))
    meter = _Meter(device)
    for i in range(args.warmup + args.iters):
        (meter.memory if i < args.warmup else meter.time)(lambda: next(loader))
    del loader  # stops its workers before the training loop starts its own
    loader_result = meter.result(batch_size)

    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = _sgd(model)
    loader = iter(build_detection_train_loader(cfg))
    data_times, iter_times = [], []
    for i in range(args.warmup + args.iters):
        start = time.perf_counter()
        batch = next(loader)
        loaded = time.perf_counter()
        _training_step(model, optimizer, lambda: model(batch))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            data_times.append(loaded - start)
            iter_times.append(time.perf_counter() - start)
    return {
        "task": "data", "config": args.config_file, "opts": args.opts, "device": args.device,
        "datasets": list(cfg.DATASETS.TRAIN), "num_workers": int(num_workers), "batch_size": batch_size,
        "iters": args.iters, "warmup": args.warmup,
        "loader": loader_result,
        "train_iter_median_s": statistics.median(iter_times), "train_iter_times_s": iter_times,
        "data_time_median_s": statistics.median(data_times), "data_times_s": data_times,
        "data_share": sum(data_times) / sum(iter_times),
        **_process_memory(device),
    }


def _rpn_targets_case(stage: str, num_gt: str, args) -> Dict:
    """One case of the rpn_targets task: the config's RPN on random features of one image."""
    import torch

    from d2mask.modeling import build_backbone, build_proposal_generator
    from d2mask.structures import Boxes, ImageList, Instances

    num_gt = int(num_gt)
    device = torch.device(args.device)
    cfg = _load_cfg(args)
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    rpn = build_proposal_generator(cfg, shapes).to(device).train()
    torch.manual_seed(0)
    h, w = args.image_size
    divisor = max(backbone.size_divisibility, 1)
    ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor  # padded like an ImageList
    features = {  # each level ceil(padded size / stride), as strided convolutions and pooling give
        name: torch.randn(1, shapes[name].channels, -(-ph // shapes[name].stride), -(-pw // shapes[name].stride),
                          device=device)
        for name in rpn.in_features
    }
    images = ImageList(torch.zeros(1, 3, ph, pw, device=device), [(h, w)])
    gt = [Instances((h, w), gt_boxes=Boxes(_random_gt_boxes(num_gt, (h, w), device)))]
    anchors = rpn.anchor_generator([features[f] for f in rpn.in_features])

    if stage == "label_and_sample_anchors":
        def fn():
            rpn.label_and_sample_anchors(anchors, gt)
    elif stage == "rpn_forward_backward":
        def fn():
            rpn.zero_grad(set_to_none=True)
            _, losses = rpn(images, features, gt)
            sum(losses.values()).backward()
    else:
        raise ValueError(f"unknown rpn_targets stage {stage!r}")
    meter = _run_interleaved({stage: fn}, device, args.iters, max(args.warmup, 1))[stage]
    return {"task": "rpn_targets", "stage": stage, "num_gt": num_gt, "image_size": [h, w],
            "num_anchors": sum(len(a) for a in anchors), "device": args.device,
            **meter.result(), **_process_memory(device)}


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
    proc = subprocess.run([*cmd, "--", *args.opts], capture_output=True, text=True, cwd=_REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark case {case} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print_model(r: Dict) -> None:
    line = f"{r['task']:9s} {r['num_gt'] or '-'!s:>5} GT  batch {r['batch_size']}  sizes {r['image_sizes']}"
    for name in ("d2mask", "torchvision"):
        if name in r:
            m = r[name]
            line += (f"  | {name} {m['median_s']:.3f} s/iter {m['images_per_s']:.2f} img/s "
                     f"peak +{m['peak_extra_mb']:.0f} MB")
    if "ratio" in r:
        line += (f"  | ratio d2mask/torchvision {r['ratio']:.3f} (paired {r['ratio_paired_median']:.3f}, "
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
                  f"{r['train_iter_median_s']:.3f} s  data share {100 * r['data_share']:.1f} %", flush=True)
    return results


def bench_rpn_targets(args) -> List[Dict]:
    """label_and_sample_anchors, and the RPN's forward + backward in training, at several GT counts."""
    results = []
    for stage in ("label_and_sample_anchors", "rpn_forward_backward"):
        for num_gt in args.num_gt:
            results.append(_run_case_in_subprocess(args, [stage, str(num_gt)]))
            if not args.json:
                r = results[-1]
                print(f"{stage:26s} {num_gt:6d} GT  {r['num_anchors']} anchors  median {r['median_s']:8.3f} s  "
                      f"peak extra {r['peak_extra_mb']:8.1f} MB", flush=True)
    return results


TASKS: Dict[str, Callable] = {
    "train": bench_model, "inference": bench_model, "data": bench_data, "rpn_targets": bench_rpn_targets,
}
# How a subprocess runs one case of a task: fn(*case_strings, args) -> dict.
_CASES: Dict[str, Callable] = {
    "train": lambda num_gt, args: _model_case("train", num_gt, args),
    "inference": lambda num_gt, args: _model_case("inference", num_gt, args),
    "data": _data_case,
    "rpn_targets": _rpn_targets_case,
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
    parser.add_argument("--compare", choices=["torchvision"], help="train/inference: time torchvision alongside")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="synthetic image size")
    parser.add_argument("--num-gt", type=int, nargs="+", help="GT objects per image, one case each")
    parser.add_argument("--batch-size", type=int, default=2, help="images per iteration (train/inference)")
    parser.add_argument("--dataset", help="train/inference: batches of this registered dataset, not synthetic")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2], help="data: loader workers, one case each")
    parser.add_argument("--iters", type=int, help="timed iterations per case")
    parser.add_argument("--warmup", type=int, help="untimed iterations first (they measure memory)")
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)  # internal: run one case here
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    args.opts = [o for o in args.opts if o != "--"]
    if args.compare and args.task not in ("train", "inference"):
        parser.error(f"--compare applies to the train and inference tasks, not {args.task}")
    config_file, image_size, num_gt, iters, warmup = _TASK_DEFAULTS[args.task]
    args.config_file = args.config_file or os.path.join(_REPO, config_file)
    args.image_size = args.image_size or image_size
    args.num_gt = args.num_gt or num_gt
    args.iters = iters if args.iters is None else args.iters
    args.warmup = warmup if args.warmup is None else args.warmup
    args.device = args.device or _default_device()
    if args.iters < 1 or args.warmup < 0:
        parser.error(f"--iters must be >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}")
    if args.case:
        print(json.dumps(_CASES[args.task](*args.case, args)))
        return
    _load_cfg(args)  # a mistake in the config is one line here, not a failed case in a subprocess
    results = TASKS[args.task](args)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    from d2mask.engine import report_user_errors

    report_user_errors(main)
