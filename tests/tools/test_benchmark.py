"""tools/benchmark.py run as a user runs it, each task on tiny sizes: the JSON it prints has every field.

No timing is asserted: only that each figure exists and is positive. This module also registers the
tiny dataset the benchmark's subprocesses load, through the config's IMPORTS.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from d2mask.data.datasets.shapes import register_shapes
from tests.common import REPO

QUICK_START = "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml"
TINY_DATASET = "benchmark_tiny_shapes"

register_shapes(TINY_DATASET, num_images=4, seed=3, image_size=64, object_size=(16, 32), max_objects=2)

# The quick-start model with few proposals and regions: each iteration takes well under a second.
SMALL_HEADS = [
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "100", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "TEST.DETECTIONS_PER_IMAGE", "10",
    # an untrained model scores low: keep its detections, so that the mask branch runs
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
]


def run_benchmark(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--json", "--device", "cpu", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def assert_timing(measured, images=True):
    assert measured["median_s"] > 0 and all(t > 0 for t in measured["times_s"]) and measured["cpu_median_s"] > 0
    assert measured["peak_extra_mb"] > 0
    if images:
        assert measured["images_per_s"] > 0


@pytest.mark.parametrize("task, twin", [("train", "torchvision"), ("inference", "torchvision"),
                                        ("train", "torchvision-matched")])
def test_model_tasks_compare_with_torchvision(task, twin):
    results = run_benchmark(
        "--task", task, "--config-file", QUICK_START, "--compare", twin, "--image-size", "64", "96",
        "--num-gt", "2", "--batch-size", "1", "--iters", "2", "--warmup", "1", *SMALL_HEADS,
    )
    assert len(results) == 1
    r = results[0]
    assert (r["task"], r["num_gt"], r["batch_size"], r["image_sizes"]) == (task, 2, 1, [[64, 96]])
    assert r["compare"] == twin
    for name in ("d2mask", "torchvision"):
        assert_timing(r[name])
        assert len(r[name]["times_s"]) == 2
        if task == "inference":
            assert r[name]["detections_per_image"] > 0
    assert r["ratio"] == pytest.approx(r["d2mask"]["median_s"] / r["torchvision"]["median_s"])
    assert r["ratio_paired_median"] > 0 and r["ratio_min"] > 0 and r["ratio_cpu"] > 0
    assert r["peak_rss_mb"] > 0


def test_train_on_a_registered_dataset(tmp_path):
    results = run_benchmark(
        "--task", "train", "--config-file", QUICK_START, "--dataset", TINY_DATASET, "--batch-size", "2",
        "--iters", "1", "--warmup", "0", *SMALL_HEADS, "IMPORTS", "['tests.tools.test_benchmark']",
        "DATASETS.ROOT", str(tmp_path), "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
    )
    r = results[0]
    assert r["dataset"] == TINY_DATASET and r["image_sizes"] == [[64, 64]]
    assert "torchvision" not in r and "ratio" not in r
    assert r["d2mask"]["median_s"] > 0 and r["d2mask"]["images_per_s"] > 0


def test_data_task(tmp_path):
    results = run_benchmark(
        "--task", "data", "--config-file", QUICK_START, "--num-workers", "1", "--iters", "2", "--warmup", "1",
        *SMALL_HEADS, "IMPORTS", "['tests.tools.test_benchmark']", "DATASETS.TRAIN", f"('{TINY_DATASET}',)",
        "DATASETS.ROOT", str(tmp_path), "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "SOLVER.IMS_PER_BATCH", "2",
    )
    assert len(results) == 1
    r = results[0]
    assert (r["num_workers"], r["batch_size"], r["datasets"]) == (1, 2, [TINY_DATASET])
    assert_timing(r["loader"])
    assert r["train_iter_median_s"] > 0 and r["data_time_median_s"] > 0
    assert 0 < r["data_share"] < 1
    assert r["train_step_median_s"] > 0
    assert r["loader_to_step_ratio"] == pytest.approx(r["loader"]["images_per_s"] / r["train_step_images_per_s"])
    assert r["peak_rss_mb"] > 0


def test_data_task_on_a_synthetic_coco_set():
    results = run_benchmark(
        "--task", "data", "--config-file", QUICK_START, "--synthetic-coco", "3", "--image-size", "96", "128",
        "--num-workers", "0", "--iters", "1", "--warmup", "1", *SMALL_HEADS, "MODEL.ROI_HEADS.NUM_CLASSES", "80",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128", "SOLVER.IMS_PER_BATCH", "2",
    )
    r = results[0]
    assert r["datasets"] == ["synthetic_coco_benchmark"] and r["synthetic_coco"] == 3
    assert r["image_sizes"] == [[96, 128]]  # the JPEGs' size, kept by the resize to 96 x 128
    assert_timing(r["loader"])
    assert r["train_step_images_per_s"] > 0 and r["loader_to_step_ratio"] > 0


def test_rpn_targets_task():
    results = run_benchmark(
        "--task", "rpn_targets", "--config-file", QUICK_START, "--num-gt", "5", "--image-size", "128", "160",
        "--iters", "1", "--warmup", "1",
    )
    assert [(r["stage"], r["num_gt"]) for r in results] == [
        ("label_and_sample_anchors", 5), ("rpn_forward_backward", 5), ("label_and_sample_proposals", 5)]
    for r in results:
        assert_timing(r, images=False)
    for r in results[:2]:
        # 3 anchors per location on p2..p6 of the 128 x 160 image (p6: 2 x 3 locations)
        assert r["num_anchors"] == 3 * sum((128 // s) * (160 // s) for s in (4, 8, 16, 32)) + 3 * 2 * 3
    assert results[2]["num_proposals"] == 2000 + 5  # the GT boxes appended


def test_a_failing_case_is_one_line_naming_it():
    proc = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--task", "rpn_targets", "--device", "cpu", "--config-file", QUICK_START,
         "--num-gt", "-1", "--image-size", "64", "64", "--iters", "1", "--warmup", "0"],
        cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "Benchmark case 'rpn_targets label_and_sample_anchors -1' failed: RuntimeError: Trying to create tensor "
        "with negative dimension -1: [-1, 2]"]


def test_compare_is_refused_for_other_tasks():
    proc = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--task", "data", "--compare", "torchvision"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and "--compare applies to the train and inference tasks" in proc.stderr


def test_coco_eval_task():
    results = run_benchmark("--task", "coco_eval", "--num-images", "12")
    assert [(r["eval_task"], r.get("backend")) for r in results] == [
        ("bbox", "faster-coco-eval"), ("bbox", "pycocotools"), ("bbox", None),
        ("segm", "faster-coco-eval"), ("segm", "pycocotools"), ("segm", None),
    ]
    for run in results[0:2] + results[3:5]:
        assert run["num_images"] == 12 and run["num_detections"] == 12 * 20 and run["num_gt"] > 0
        assert run["load_gt_s"] > 0 and run["process_s"] > 0 and run["evaluate_s"] > 0
        assert 0 < run["results"]["AP"] < 100
    for comparison in results[2], results[5]:
        assert comparison["identical"] and comparison["max_ap_difference"] <= 1e-4
        assert comparison["ratio_evaluate"] > 0 and comparison["ratio_total"] > 0


def _conv_shapes(model):
    """(in, out, kernel, stride, groups) of every convolution, in a sorted list."""
    import torch

    return sorted((m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups)
                  for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("config", [QUICK_START, "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"])
def test_torchvision_matched_twin_has_the_configs_architecture(config):
    """Same convolutions (with Detectron2's strides in the 1x1 of R50's bottlenecks), same linear
    layers, same frozen parameters; torchvision's predictors alone add the background class."""
    import importlib.util

    import torch

    from d2mask.config import load_config
    from d2mask.modeling import build_model

    spec = importlib.util.spec_from_file_location(
        "torchvision_twin", os.path.join(REPO, "tools", "benchmarking", "torchvision_twin.py"))
    twin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(twin)
    cfg = load_config(os.path.join(REPO, config), ["MODEL.DEVICE", "cpu"])
    ours, theirs = build_model(cfg), twin.torchvision_matched_model(cfg, (256, 320), "cpu")
    classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    mask_dim, fc_dim = cfg.MODEL.ROI_MASK_HEAD.CONV_DIM, cfg.MODEL.ROI_BOX_HEAD.FC_DIM
    # The mask predictor's 1x1 convolution has one more output, for the background.
    expected = _conv_shapes(ours)
    expected[expected.index((mask_dim, classes, (1, 1), (1, 1), 1))] = (mask_dim, classes + 1, (1, 1), (1, 1), 1)
    assert _conv_shapes(theirs) == sorted(expected)
    if cfg.MODEL.RESNETS.DEPTH >= 50:  # stride 2 in a 1x1 convolution: the MSRA layout, not torchvision's
        assert (256, 128, (1, 1), (2, 2), 1) in expected
    linear = lambda m: sorted((l.in_features, l.out_features) for l in m.modules() if isinstance(l, torch.nn.Linear))
    expected = linear(ours)
    expected[expected.index((fc_dim, 4 * classes))] = (fc_dim, 4 * (classes + 1))  # class-specific boxes
    assert linear(theirs) == sorted(expected)
    frozen = lambda m: sum(p.numel() for p in m.parameters() if not p.requires_grad)
    assert frozen(theirs) == frozen(ours)
    background = 4 * (fc_dim + 1) + (mask_dim + 1)  # box regression and mask logits of class 0
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(theirs) - count(ours) == background


def test_export_task():
    methods = ["tracing", "onnx"] if importlib.util.find_spec("onnxruntime") else ["tracing"]
    results = run_benchmark(
        "--task", "export", "--config-file", QUICK_START, "--image-size", "96", "128", "--methods", *methods,
        "--iters", "2", "--warmup", "1", *SMALL_HEADS,
    )
    assert len(results) == 1
    r = results[0]
    assert (r["task"], r["image_size"], r["device"]) == ("export", [96, 128], "cpu")
    assert r["detections"] == 10  # TEST.DETECTIONS_PER_IMAGE, every artefact checked to give the same
    assert_timing(r["eager"])
    for method in methods:
        assert_timing(r[method])
        assert len(r[method]["times_s"]) == 2 and r[method]["export_s"] > 0
        assert r[method]["ratio"] == pytest.approx(r[method]["median_s"] / r["eager"]["median_s"])
        assert r[method]["ratio_paired_median"] > 0
    assert "torch_export" not in r


def test_export_task_is_refused_on_another_device():
    proc = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--task", "export", "--device", "cuda"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and "--task export measures on the CPU, not --device cuda" in proc.stderr
