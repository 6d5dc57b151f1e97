"""Exported detectors against eager ones, on the same weights and images: TorchScript by tracing,
ONNX run by onnxruntime, torch.export; Faster, Mask and Keypoint R-CNN, FPN and C4; many candidate detections; a
project's backbone; and the one-line refusal of what cannot be exported.

Each artefact is exported on one image and run on another of a different size (not a multiple of the
FPN's 32), so a size, a proposal count or a detection count recorded from the sample would show.
"""
import io

import pytest
import torch
from torch import nn

from d2mask.export import (
    ExportError,
    detector_inference,
    detector_tracing_adapter,
    dump_torchscript_IR,
    export_onnx,
    export_torch_export,
    export_torchscript,
    input_size_range,
    output_names,
    scripting_with_instances,
    verify_export,
)
from d2mask.modeling import build_model
from d2mask.structures import Boxes

from .tiny_models import assert_same_detections, image, tiny_cfg, tiny_model

MODELS = {
    "faster_FPN": "configs/COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
    "faster_C4": "configs/COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
    "mask_FPN": "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "mask_C4": "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml",
}
# The quick-start model (R-18 FPN, GroupNorm): torch.export takes half as long on its 8 blocks as on R-50's 16.
QUICK_START = "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml"
KEYPOINT = "configs/Shapes/keypoint_rcnn_R_18_FPN_shapes.yaml"
SAMPLE = image(96, 128, seed=1)
# Another size, another content: other proposal and detection counts than the sample's.
TEST_IMAGES = [image(112, 84, seed=2), SAMPLE]


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return tiny_model(tiny_cfg(MODELS[request.param]))


def _eager(model, img):
    with torch.no_grad():
        return detector_inference(model, img)


def test_torchscript_matches_eager_on_another_image_size(model, tmp_path):
    traced, adapter = export_torchscript(model, SAMPLE)
    torch.jit.save(traced, str(tmp_path / "model.ts"))
    loaded = torch.jit.load(str(tmp_path / "model.ts"))
    counts = set()
    for img in TEST_IMAGES:
        expected = _eager(model, img)
        assert_same_detections(adapter.outputs_schema(loaded(img)), expected)
        counts.add(len(expected))
    assert len(counts) == 2, "the test images should give different detection counts"


@pytest.mark.parametrize("name", ["faster_FPN", "mask_FPN", "mask_C4"])
def test_onnx_runtime_matches_eager(name):
    onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export is tested with the 'export' extra")
    pytest.importorskip("onnx", reason="ONNX export is tested with the 'export' extra")
    model = tiny_model(tiny_cfg(MODELS[name]))
    f = io.BytesIO()
    adapter = export_onnx(model, SAMPLE, f)
    session = onnxruntime.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    names = output_names(adapter)
    assert [o.name for o in session.get_outputs()] == names
    for img in TEST_IMAGES:
        outputs = session.run(names, {"image": img.numpy()})
        actual = adapter.outputs_schema([torch.from_numpy(o) for o in outputs])
        assert_same_detections(actual, _eager(model, img))


@pytest.mark.parametrize("config_file", [QUICK_START, MODELS["faster_C4"], MODELS["mask_C4"]])
def test_torch_export_matches_eager(config_file, tmp_path):
    model = tiny_model(tiny_cfg(config_file))
    program, adapter = export_torch_export(model, SAMPLE)
    torch.export.save(program, str(tmp_path / "model.pt2"))
    module = torch.export.load(str(tmp_path / "model.pt2")).module()
    for img in TEST_IMAGES:
        assert_same_detections(adapter.outputs_schema(module(img)), _eager(model, img))
    # The FPN's P6 map is 1 pixel for sides <= 64: a different program, refused by a guard that says so.
    low = 65 if config_file == QUICK_START else 17
    assert input_size_range(program) == [(low, float("inf"))] * 2
    with pytest.raises(Exception, match=f">= {low}"):
        module(image(low - 1, 128, seed=3))


def test_torch_export_runs_when_the_rpn_keeps_fewer_than_two_proposals():
    # C4 has one feature level: with one box per level before NMS, NMS keeps exactly one. torchvision's
    # fake NMS promised torch.export at least two kept boxes, and the program asserted it at run time.
    model = tiny_model(tiny_cfg(MODELS["mask_C4"], ["MODEL.RPN.PRE_NMS_TOPK_TEST", "1"]))
    program, adapter = export_torch_export(model, SAMPLE)
    module = program.module()
    for img in TEST_IMAGES:
        assert_same_detections(adapter.outputs_schema(module(img)), _eager(model, img))


def _export_and_count_nms(method: str, model) -> tuple:
    """Exports `model` by `method`; returns its detections on each of TEST_IMAGES as Instances and the
    number of NMS operations in the artefact."""
    if method == "onnx":
        onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export is tested with the 'export' extra")
        onnx = pytest.importorskip("onnx", reason="ONNX export is tested with the 'export' extra")
        f = io.BytesIO()
        adapter = export_onnx(model, SAMPLE, f)
        session = onnxruntime.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
        names = output_names(adapter)
        run = lambda img: [torch.from_numpy(o) for o in session.run(names, {"image": img.numpy()})]  # noqa: E731
        count = [n.op_type for n in onnx.load_from_string(f.getvalue()).graph.node].count("NonMaxSuppression")
    elif method == "tracing":
        run, adapter = export_torchscript(model, SAMPLE)
        count = len(run.inlined_graph.findAllNodes("torchvision::nms"))
    else:
        program, adapter = export_torch_export(model, SAMPLE)
        run = program.module()
        count = [n.target for n in program.graph.nodes].count(torch.ops.torchvision.nms.default)
    return [adapter.outputs_schema(run(img)) for img in TEST_IMAGES], count


@pytest.mark.parametrize("method", ["tracing", "onnx", "torch_export"])
def test_many_candidates_match_eager_with_one_nms_per_class(method):
    # SCORE_THRESH_TEST 0: every (region, class) pair is a candidate, 160 x 8 = 1280, more than the 1000
    # boxes from which eager mode runs NMS class by class. The artefact does the same, one NMS per class
    # and per RPN level (p2-p6), not one over all candidates, whose time grows with their square.
    overrides = ["MODEL.ROI_HEADS.NUM_CLASSES", "8", "MODEL.RPN.POST_NMS_TOPK_TEST", "160",
                 "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0", "TEST.DETECTIONS_PER_IMAGE", "20"]
    model = tiny_model(tiny_cfg(QUICK_START, overrides))
    # Initial class scores are all near 1/9: spread them, so that the 20 best lie ~1e-4 apart and ONNX
    # Runtime's float differences (~1e-7) cannot reorder them.
    torch.nn.init.normal_(model.roi_heads.box_predictor.cls_score.weight, std=0.1)
    detections, count = _export_and_count_nms(method, model)
    assert count == 8 + 5
    for actual, img in zip(detections, TEST_IMAGES):
        expected = _eager(model, img)
        assert len(expected) == 20  # TEST.DETECTIONS_PER_IMAGE: NMS left more, the best 20 are kept
        assert_same_detections(actual, expected)


@pytest.mark.parametrize("method", ["tracing", "onnx", "torch_export"])
def test_keypoint_rcnn_matches_eager(method):
    # Decoding a keypoint resizes its heatmap to the detection's box: the artefact must take the resized
    # sizes, the number of detections and the heatmaps' split per image from its input, not the sample.
    model = tiny_model(tiny_cfg(KEYPOINT))
    detections, _ = _export_and_count_nms(method, model)
    counts = set()
    for actual, img in zip(detections, TEST_IMAGES):
        expected = _eager(model, img)
        assert expected.pred_keypoints.shape[1:] == (4, 3)
        assert_same_detections(actual, expected)
        counts.add(len(expected))
    assert len(counts) == 2, "the test images should give different detection counts"


def test_keypoint_rcnn_onnx_runs_on_an_image_without_detections():
    # ONNX Runtime cannot infer a reshape's -1 on a tensor without elements; the keypoint decoding
    # once flattened its resized heatmaps so, and the artefact failed on an image with no detections.
    pytest.importorskip("onnxruntime", reason="ONNX export is tested with the 'export' extra")
    model = tiny_model(tiny_cfg(KEYPOINT))
    sample, other = TEST_IMAGES[1], TEST_IMAGES[0]
    best = [_eager(model, img).scores.max().item() for img in (sample, other)]
    assert best[0] > best[1]
    model.roi_heads.box_predictor.test_score_thresh = sum(best) / 2  # detections on the sample only
    detections, _ = _export_and_count_nms("onnx", model)
    assert len(_eager(model, other)) == 0 and len(_eager(model, sample)) > 0
    assert detections[0].pred_keypoints.shape == (0, 4, 3)
    assert_same_detections(detections[1], _eager(model, sample))


@pytest.mark.parametrize("method", ["tracing", "onnx", "torch_export"])
def test_cascade_mask_rcnn_matches_eager(method):
    # More detections than elsewhere, so the two images give different counts.
    cfg = tiny_cfg("configs/Shapes/cascade_mask_rcnn_R_18_FPN_shapes.yaml", ["TEST.DETECTIONS_PER_IMAGE", "300"])
    model = tiny_model(cfg)
    detections, _ = _export_and_count_nms(method, model)
    counts = set()
    for actual, img in zip(detections, TEST_IMAGES):
        expected = _eager(model, img)
        assert_same_detections(actual, expected)
        counts.add(len(expected))
    assert len(counts) == 2


def test_project_backbone_exports():
    """A Mask R-CNN whose backbone is the ConvNeXt project's registered module (named in IMPORTS)."""
    cfg = tiny_cfg(
        "projects/ConvNeXt/configs/mask_rcnn_ConvNeXt_FPN_shapes.yaml",
        ["MODEL.CONVNEXT.DEPTHS", "[1, 1, 1, 1]", "MODEL.CONVNEXT.DIMS", "[8, 16, 24, 32]",
         "MODEL.FPN.OUT_CHANNELS", "32"],
    )
    model = tiny_model(cfg)
    assert type(model.backbone.bottom_up).__module__ == "projects.ConvNeXt.convnext"
    traced, adapter = export_torchscript(model, SAMPLE)
    for img in TEST_IMAGES:
        assert_same_detections(adapter.outputs_schema(traced(img)), _eager(model, img))


def test_dump_torchscript_ir(tmp_path):
    traced, _ = export_torchscript(tiny_model(tiny_cfg(MODELS["faster_C4"])), SAMPLE)
    dump_torchscript_IR(traced, str(tmp_path))
    files = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert sorted(files) == ["model.txt", "model_ts_IR.txt", "model_ts_IR_inlined.txt", "model_ts_code.txt"]
    assert "torchvision::nms" in files["model_ts_IR_inlined.txt"]
    assert "Code for model.roi_heads.box_predictor" in files["model_ts_code.txt"]


def test_verify_export_names_the_difference():
    model = tiny_model(tiny_cfg(MODELS["faster_C4"]))
    traced, adapter = export_torchscript(model, SAMPLE)
    outputs = list(traced(SAMPLE))
    names = output_names(adapter)
    assert verify_export(outputs, adapter) == len(outputs[names.index("scores")]) > 0
    other = TEST_IMAGES[0]
    assert verify_export(traced(other), adapter, other) == len(detector_inference(model, other))
    with pytest.raises(ExportError):  # outputs of the sample are not those of another image
        verify_export(outputs, adapter, other)
    moved = list(outputs)
    moved[names.index("pred_boxes")] = outputs[names.index("pred_boxes")] + torch.tensor([0.0, 0.0, 0.0, 0.05])
    with pytest.raises(ExportError, match=r"differ from the eager model's in boxes \(by more than 0.01 px\)$"):
        verify_export(moved, adapter)
    fewer = [o[1:] if name != "image_size" else o for o, name in zip(outputs, names)]
    with pytest.raises(ExportError, match=r"finds \d+ detections on the image, the eager model \d+"):
        verify_export(fewer, adapter)


def test_scripting_is_refused_with_the_alternatives():
    with pytest.raises(ExportError, match=r"not supported by d2mask; export by tracing .* or torch.export"):
        scripting_with_instances(nn.Identity(), {"pred_boxes": Boxes})


def test_unsupported_model_is_named_in_one_line():
    proposal_network = build_model(tiny_cfg(MODELS["faster_FPN"], ["MODEL.META_ARCHITECTURE", "ProposalNetwork"]))
    with pytest.raises(ExportError, match=r"^Exporting ProposalNetwork is not supported: .*GeneralizedRCNN") as e:
        export_torchscript(proposal_network.eval(), SAMPLE)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name, config_file",
    [("RetinaNet", "retinanet_R_18_FPN_shapes.yaml"), ("PanopticFPN", "panoptic_fpn_R_18_shapes.yaml"),
     ("SemanticSegmentor", "semantic_R_18_FPN_shapes.yaml")],
)
def test_meta_architectures_that_do_not_export_are_refused_in_one_line(name, config_file):
    # PanopticFPN is a GeneralizedRCNN whose inference also returns a semantic segmentation
    model = tiny_model(tiny_cfg(f"configs/Shapes/{config_file}"))
    with pytest.raises(ExportError, match=f"^Exporting {name} is not supported: ") as e:
        export_torchscript(model, SAMPLE)
    assert "\n" not in str(e.value)


def test_training_mode_and_bad_sample_are_refused():
    model = tiny_model(tiny_cfg(MODELS["faster_FPN"]))
    with pytest.raises(ExportError, match=r"Tensor\[C, H, W\], got \(1, 3, 96, 128\)"):
        detector_tracing_adapter(model, SAMPLE[None])
    with pytest.raises(ExportError, match="call model.eval()"):
        detector_tracing_adapter(model.train(), SAMPLE)


def test_non_tensor_detection_field_is_named(monkeypatch):
    model = tiny_model(tiny_cfg(MODELS["faster_FPN"]))
    inference = type(model).inference

    def with_labels(self, *args, **kwargs):
        results = inference(self, *args, **kwargs)
        for r in results:
            r.labels = ["object"] * len(r)
        return results

    monkeypatch.setattr(type(model), "inference", with_labels)
    with pytest.raises(ExportError, match=r"Detection fields \{'labels': 'list'\} cannot be exported"):
        detector_tracing_adapter(model, SAMPLE)
