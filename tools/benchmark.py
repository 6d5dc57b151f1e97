#!/usr/bin/env python
"""Benchmarks of d2mask's hot paths: median time and peak extra memory.

    python tools/benchmark.py --task rpn_targets            # a table
    python tools/benchmark.py --task rpn_targets --json     # one JSON list

Each task is a function `fn(args) -> list[dict]` listed in TASKS. Memory is measured in a fresh
subprocess per case, so that one case's high-water mark cannot hide another's: on CUDA as
`torch.cuda.max_memory_allocated` above what was allocated before, on CPU as the process's peak
resident set size (`getrusage` max RSS, its high-water mark reset first where Linux allows) above
the resident size before. Timings are not asserted anywhere; they are for docs/benchmarks.md.
"""
import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

# An 800x1333 image padded to the FPN's size divisibility of 32.
_IMAGE_SIZE = (800, 1333)
_PADDED_SIZE = (800, 1344)


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Resets the process's RSS high-water mark (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure(fn: Callable[[], None], device, repeats: int) -> Dict[str, float]:
    """Runs `fn` once for its peak extra memory, then `repeats` times for the median time."""
    import torch

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gc.collect()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        exact = _reset_peak_rss()
        base = _current_rss()
    fn()
    sync()
    peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss()) - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    result = {"median_s": statistics.median(times), "times_s": times, "peak_extra_mb": peak / 2**20}
    if not cuda and not exact:
        result["note"] = "peak RSS not resettable here: memory is an upper bound"
    return result


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


def _rpn_targets_case(stage: str, num_gt: str, device_name: str, repeats: int) -> Dict:
    """One case of the rpn_targets task, run inside its own subprocess."""
    import torch

    from d2mask.config import get_cfg
    from d2mask.layers import ShapeSpec
    from d2mask.modeling import build_proposal_generator
    from d2mask.structures import Boxes, ImageList, Instances

    num_gt = int(num_gt)
    device = torch.device(device_name)
    cfg = get_cfg()
    # Detectron2's Base-RCNN-FPN RPN on features p2..p6 of 256 channels.
    cfg.merge_from_list([
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64], [128], [256], [512]]",
        "MODEL.RPN.IN_FEATURES", "['p2', 'p3', 'p4', 'p5', 'p6']",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "2000",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "1000",
    ])
    levels = range(2, 7)
    shapes = {f"p{i}": ShapeSpec(channels=256, stride=2**i) for i in levels}
    rpn = build_proposal_generator(cfg, shapes).to(device).train()
    torch.manual_seed(0)
    h, w = _PADDED_SIZE
    features = {
        f"p{i}": torch.randn(1, 256, -(-h // 2**i), -(-w // 2**i), device=device) for i in levels
    }
    images = ImageList(torch.zeros(1, 3, h, w, device=device), [_IMAGE_SIZE])
    gt = [Instances(_IMAGE_SIZE, gt_boxes=Boxes(_random_gt_boxes(num_gt, _IMAGE_SIZE, device)))]
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
    result = {"stage": stage, "num_gt": num_gt, "num_anchors": sum(len(a) for a in anchors), "device": device_name}
    result.update(_measure(fn, device, repeats))
    return result


def _run_case_in_subprocess(task: str, case: List[str], args) -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--task", task, "--device", args.device,
           "--repeats", str(args.repeats), "--case", *case]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_rpn_targets(args) -> List[Dict]:
    """label_and_sample_anchors, and the RPN's forward + backward in training, at several GT counts."""
    results = []
    for stage in ("label_and_sample_anchors", "rpn_forward_backward"):
        for num_gt in args.num_gt:
            results.append(_run_case_in_subprocess("rpn_targets", [stage, str(num_gt)], args))
            if not args.json:
                r = results[-1]
                print(f"{stage:26s} {num_gt:6d} GT  {r['num_anchors']} anchors  median {r['median_s']:8.3f} s  "
                      f"peak extra {r['peak_extra_mb']:8.1f} MB", flush=True)
    return results


TASKS: Dict[str, Callable] = {"rpn_targets": bench_rpn_targets}
# How a subprocess runs one case of a task: fn(*case_strings, device, repeats) -> dict.
_CASES: Dict[str, Callable] = {"rpn_targets": _rpn_targets_case}


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--json", action="store_true", help="print the results as one JSON list")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (after one untimed run)")
    parser.add_argument("--num-gt", type=int, nargs="+", default=[10, 100, 1000, 3000],
                        help="GT box counts (rpn_targets)")
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)  # internal: run one case here
    args = parser.parse_args(argv)
    args.device = args.device or _default_device()
    if args.case:
        print(json.dumps(_CASES[args.task](*args.case, args.device, args.repeats)))
        return
    results = TASKS[args.task](args)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
