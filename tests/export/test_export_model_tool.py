"""tools/deploy/export_model.py run as a user runs it, and the artefacts it writes run by
tools/deploy/run_exported_model.py in a process where d2mask cannot be imported: the detections on the
original image equal the eager model's."""
import json
import os
import runpy
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import torch

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.data import build_detection_test_loader
from d2mask.data import transforms as T
from d2mask.data.detection_utils import read_image
from d2mask.engine import DefaultTrainer
from d2mask.evaluation import inference_on_dataset
from d2mask.modeling import build_model

from tests.common import TINY_WIDTHS

from .tiny_models import COMMON, REPO, SPREAD_SCORES, mask_iou, tiny_cfg, tiny_model

CONFIG = "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
EXPORT = os.path.join(REPO, "tools/deploy/export_model.py")
SAMPLE = os.path.join(REPO, "tools/deploy/run_exported_model.py")
# The sample runs with `import d2mask` made to fail.
WITHOUT_D2MASK = (
    "import runpy, sys; sys.modules['d2mask'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Mask R-CNN's weights file, the overrides that describe it, an image, and the eager
    model's detections on that image at its original size."""
    root = tmp_path_factory.mktemp("export_tool")
    model = tiny_model(tiny_cfg(CONFIG))
    DetectionCheckpointer(model, save_dir=str(root)).save("model")
    image_file = str(root / "image.png")
    cv2.imwrite(image_file, np.random.RandomState(0).randint(0, 256, (90, 140, 3)).astype(np.uint8))
    opts = COMMON + TINY_WIDTHS + ["MODEL.ROI_HEADS.NUM_CLASSES", "3"] + SPREAD_SCORES + ["MODEL.WEIGHTS", str(root / "model.pth")]

    cfg = tiny_cfg(CONFIG)
    original = read_image(image_file, cfg.INPUT.FORMAT)
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
    resized = resize.get_transform(original).apply_image(original)
    inputs = {"image": torch.as_tensor(resized.transpose(2, 0, 1).copy()), "height": 90, "width": 140}
    with torch.no_grad():
        expected = model([inputs])[0]["instances"]
    return root, opts, image_file, expected


ARTEFACTS = {"torchscript": "model.ts", "onnx": "model.onnx", "pt2": "model.pt2"}


@pytest.mark.parametrize(
    "method_and_format", [("tracing", "torchscript"), ("tracing", "onnx"), ("torch_export", "pt2")]
)
def test_exported_model_runs_without_d2mask_and_matches_eager(trained, method_and_format):
    method, fmt = method_and_format
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="ONNX export is tested with the 'export' extra")
        pytest.importorskip("onnx", reason="ONNX export is tested with the 'export' extra")
    root, opts, image_file, expected = trained
    out = root / fmt
    export = _run([
        EXPORT, "--config-file", CONFIG, "--export-method", method, "--format", fmt,
        "--sample-image", image_file, "--output", str(out), *opts,
    ])
    assert export.returncode == 0, export.stderr
    artefact = out / ARTEFACTS[fmt]
    assert f"run_exported_model.py {artefact}" in export.stdout
    assert f"Checked: {artefact} reproduces the eager model's" in export.stdout

    npz = root / f"{fmt}.npz"
    run = _run(["-c", WITHOUT_D2MASK, SAMPLE, str(artefact), "--input", image_file, "--output", str(npz)])
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == len(expected) > 0
    actual = np.load(npz)
    assert np.array_equal(actual["0_classes"], expected.pred_classes.numpy())
    np.testing.assert_allclose(actual["0_boxes"], expected.pred_boxes.tensor.numpy(), atol=1e-2, rtol=0)
    np.testing.assert_allclose(actual["0_scores"], expected.scores.numpy(), atol=1e-4, rtol=0)
    masks = torch.from_numpy(actual["0_masks"])
    assert masks.shape == expected.pred_masks.shape and expected.pred_masks.any()
    assert (mask_iou(masks, expected.pred_masks) > 0.99).all()

    if fmt != "torchscript":
        return  # the image limit does not depend on the format: checked once
    refused = _run(["-c", WITHOUT_D2MASK, SAMPLE, str(artefact), "--input", image_file, "--max-pixels", "12599"])
    assert refused.returncode == 1 and refused.stdout == ""
    # (torch.jit.load's deprecation warning may come before it)
    assert refused.stderr.splitlines()[-1] == (
        f"Image {image_file} is 140x90 (width x height), more than --max-pixels 12599; it was not decoded"
    )


def test_unsupported_model_is_one_line(trained, monkeypatch, capsys):
    root, opts, image_file, _ = trained
    argv = [EXPORT, "--config-file", CONFIG, "--sample-image", image_file, "--output", str(root / "rpn"),
            *opts, "MODEL.META_ARCHITECTURE", "ProposalNetwork"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(EXPORT, run_name="__main__")
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ExportError: Exporting ProposalNetwork is not supported"), lines


def test_format_the_method_cannot_write_is_refused(capsys):
    export_model = runpy.run_path(EXPORT)  # the module's functions, without running main
    with pytest.raises(SystemExit) as e:
        export_model["parse_args"](
            ["--config-file", CONFIG, "--export-method", "torch_export", "--format", "onnx", "--output", "x"]
        )
    assert e.value.code == 2
    assert "--export-method torch_export cannot write --format onnx" in capsys.readouterr().err


def test_sample_scales_keypoints_to_the_original_image():
    postprocess = runpy.run_path(SAMPLE)["postprocess"]  # the sample's function, without running main
    outputs = {
        "image_size": np.array([50, 100]),  # the network's input, (H, W)
        "pred_boxes": np.array([[10.0, 5.0, 30.0, 25.0]], np.float32),
        "scores": np.array([0.9], np.float32),
        "pred_classes": np.array([2]),
        "pred_keypoints": np.array([[[20.0, 10.0, 0.7], [12.0, 24.0, 0.3]]], np.float32),  # (D, J, 3): x, y, score
    }
    result = postprocess(outputs, 100, 300)  # the original image: 3x wider, 2x higher
    np.testing.assert_allclose(result["boxes"], [[30.0, 10.0, 90.0, 50.0]])
    np.testing.assert_allclose(result["keypoints"], [[[60.0, 20.0, 0.7], [36.0, 48.0, 0.3]]])


def _png_declaring(path, width: int, height: int) -> str:
    """A PNG file of one pixel whose header declares `width` x `height` (its data cannot be decoded)."""
    data = bytearray(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR: width, height ...
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # ... and the chunk's CRC
    path.write_bytes(bytes(data))
    return str(path)


def test_sample_refuses_images_of_too_many_pixels_before_decoding(tmp_path, monkeypatch):
    sample = runpy.run_path(SAMPLE)  # the sample's functions, without running main
    read = sample["read_image"]
    # 108 million pixels declared: more than d2mask's INPUT.MAX_IMAGE_PIXELS, the sample's default
    large = _png_declaring(tmp_path / "large.png", 12000, 9000)
    with pytest.raises(
        SystemExit, match=r"is 12000x9000 \(width x height\), more than --max-pixels 100000000; it was not decoded$"
    ):
        read(large)
    # Beyond Pillow's own limit, which hides the size
    with pytest.raises(
        SystemExit, match=r"declares more than \d+ pixels, more than --max-pixels 100000000; it was not decoded$"
    ):
        read(_png_declaring(tmp_path / "huge.png", 30000, 20000))

    small = str(tmp_path / "small.png")
    cv2.imwrite(small, np.full((10, 12, 3), 7, np.uint8))
    assert read(small, max_pixels=120).shape == (10, 12, 3)
    with pytest.raises(SystemExit, match=r"is 12x10 \(width x height\), more than --max-pixels 119; it was not decoded$"):
        read(small, max_pixels=119)
    # Without Pillow the size is checked after decoding, before the model runs.
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(SystemExit, match=r"is 12x10 \(width x height\), more than --max-pixels 119$"):
        read(small, max_pixels=119)


def test_run_eval_evaluates_the_artefact_as_the_eager_model_is_evaluated(trained, tmp_path, monkeypatch):
    """--run-eval (Detectron2's flag): the artefact's predictions on DATASETS.TEST, written by the
    evaluator train_net uses, are the eager model's."""
    root, opts, _, _ = trained
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path / "datasets"))
    opts = opts + ["DATASETS.TEST", "('shapes_val',)", "DATALOADER.NUM_WORKERS", "0"]
    export = _run([EXPORT, "--config-file", CONFIG, "--output", str(tmp_path / "ts"), "--run-eval", *opts])
    assert export.returncode == 0, export.stderr
    assert "Evaluation of the artefact on shapes_val: " in export.stdout

    cfg = tiny_cfg(CONFIG, opts[len(COMMON):])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    evaluator = DefaultTrainer.build_evaluator(cfg, "shapes_val", str(tmp_path / "eager"))
    inference_on_dataset(model, build_detection_test_loader(cfg, "shapes_val"), evaluator)
    results = [
        json.loads((folder / "coco_instances_results.json").read_text())
        for folder in (tmp_path / "ts" / "inference" / "shapes_val", tmp_path / "eager")
    ]
    assert len(results[1]) > 0 and len(results[0]) == len(results[1])
    # Detections of equal score may come in either order: each of the artefact's is matched to one of eager's.
    unmatched = list(results[1])
    for actual in results[0]:
        match = next(
            i for i, expected in enumerate(unmatched)
            if (actual["image_id"], actual["category_id"]) == (expected["image_id"], expected["category_id"])
            and actual["bbox"] == pytest.approx(expected["bbox"], abs=0.05)
            and actual["score"] == pytest.approx(expected["score"], abs=1e-4)
        )
        del unmatched[match]
