"""Exporting a trained R-CNN for deployment: TorchScript and ONNX by tracing, and `torch.export`.

Every artefact runs the same computation, `detector_inference`: one image `Tensor[C, H, W]` (float,
channels in INPUT.FORMAT order, already resized as for the eager model) in, the raw detections of that
image out, as the flat tensors of `output_names(adapter)`:

    pred_boxes Tensor[D, 4], pred_classes Tensor[D] int64,
    [pred_keypoint_heatmaps Tensor[D, J, 4S, 4S], pred_keypoints Tensor[D, J, 3],]  (Keypoint R-CNN)
    [pred_masks Tensor[D, 1, M, M],]  (Mask R-CNN)
    scores Tensor[D], image_size Tensor[2] int64 (H, W)

The boxes are in input-image pixels and the masks are probabilities over each box, so rescaling to the
original image and pasting the masks (`d2mask.modeling.detector_postprocess`, or the sample
`tools/deploy/run_exported_model.py` without d2mask) stay outside the artefact.
"""
import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from d2mask.modeling import GeneralizedRCNN
from d2mask.structures import BitMasks, Boxes, Instances

from .flatten import InstancesSchema, TracingAdapter

__all__ = [
    "STABLE_ONNX_OPSET_VERSION",
    "ExportError",
    "detector_inference",
    "detector_tracing_adapter",
    "output_names",
    "export_torchscript",
    "export_onnx",
    "export_torch_export",
    "input_size_range",
    "verify_export",
]

# The ONNX opset the ONNX export uses: 16 is the first with ROIAlign's `aligned` (half-pixel) mode.
STABLE_ONNX_OPSET_VERSION = 17


@torch.library.register_fake("torchvision::nms")
def _nms_fake(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """The shape of NMS's result while torch.export traces: any number of kept boxes from 0 up.

    torchvision's own registration (`create_unbacked_symint()`, whose lower bound is 2) makes
    torch.export assume at least two kept boxes and assert it at run time, so an exported detector
    failed on an image whose RPN keeps fewer than two proposals instead of returning 0 or 1 detections.
    """
    return dets.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.long)


class ExportError(ValueError):
    """A model, or a sample input, that cannot be exported; the message names what is unsupported."""


def detector_inference(model: GeneralizedRCNN, image: Tensor) -> Instances:
    """The computation an exported artefact runs: `model`'s detections for one image, at the image's
    own size (no rescaling, masks as `Tensor[D, 1, M, M]` probabilities)."""
    return model.inference([{"image": image}], do_postprocess=False)[0]


def detector_tracing_adapter(model: nn.Module, image: Tensor) -> TracingAdapter:
    """A `TracingAdapter` of `detector_inference`, after checking that `model` can be exported.

    Runs the model on `image`: once to check its detection fields, once through the adapter to record
    the outputs' schema.

    Raises:
        ExportError: the model is not a GeneralizedRCNN in eval mode whose inference returns Instances
            (PanopticFPN's does not), `image` is not `Tensor[C, H, W]`, or a detection field is neither a
            tensor, Boxes nor BitMasks.
    """
    if not isinstance(model, GeneralizedRCNN):
        raise ExportError(
            f"Exporting {type(model).__name__} is not supported: d2mask.export exports GeneralizedRCNN "
            f"models (Faster/Mask/Keypoint R-CNN, MODEL.META_ARCHITECTURE 'GeneralizedRCNN') and their subclasses"
        )
    if model.training:
        raise ExportError("The model is in training mode; call model.eval() before exporting it")
    if not isinstance(image, Tensor) or image.dim() != 3:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ExportError(f"The sample input must be one image Tensor[C, H, W], got {got}")
    adapter = TracingAdapter(model, image.float(), detector_inference)
    with torch.no_grad():
        instances = detector_inference(model, image.float())
    if not isinstance(instances, Instances):  # e.g. PanopticFPN's (instances, semantic segmentation)
        raise ExportError(
            f"Exporting {type(model).__name__} is not supported: its inference(do_postprocess=False) returns "
            f"{type(instances).__name__}, not the Instances of one image that d2mask.export exports"
        )
    unsupported = {
        name: type(value).__name__
        for name, value in instances.get_fields().items()
        if not isinstance(value, (Tensor, Boxes, BitMasks))
    }
    if unsupported:
        raise ExportError(
            f"Detection fields {unsupported} cannot be exported: every field of the model's output "
            f"Instances must be a Tensor, Boxes or BitMasks"
        )
    adapter(*adapter.flattened_inputs)  # records outputs_schema
    return adapter


def output_names(adapter: TracingAdapter) -> List[str]:
    """The names of the flat outputs of a `detector_tracing_adapter`: the detection fields in sorted
    order, then "image_size"."""
    schema = adapter.outputs_schema
    if not isinstance(schema, InstancesSchema):
        raise ExportError(
            f"output_names needs an adapter of detector_inference, whose outputs are Instances; got {schema}"
        )
    return [*schema.keys, "image_size"]


def verify_export(
    outputs: Sequence[Tensor],
    adapter: TracingAdapter,
    image: Optional[Tensor] = None,
    box_atol: float = 1e-2,
    score_atol: float = 1e-4,
) -> int:
    """Checks an artefact's flat outputs on `image` against the eager model's detections there: the
    same classes, boxes within `box_atol` pixels and scores within `score_atol`.

    Args:
        outputs: what the artefact returned for `image`.
        adapter: the adapter the artefact was exported with (see `detector_tracing_adapter`).
        image: `Tensor[C, H, W]`; default the sample the model was exported with. An image of another
            size also shows sizes or counts that the export recorded as constants of the sample.

    Returns:
        The number of detections.

    Raises:
        ExportError: naming the first difference.
    """
    with torch.no_grad():
        expected = detector_inference(adapter.model, adapter.flattened_inputs[0] if image is None else image)
    actual = adapter.outputs_schema([torch.as_tensor(o) for o in outputs])
    if len(actual) != len(expected):
        raise ExportError(
            f"The exported model finds {len(actual)} detections on the image, the eager model {len(expected)}"
        )
    differences = {
        "classes": (actual.pred_classes != expected.pred_classes).any().item(),
        f"boxes (by more than {box_atol} px)": not torch.allclose(
            actual.pred_boxes.tensor, expected.pred_boxes.tensor, atol=box_atol, rtol=0
        ),
        f"scores (by more than {score_atol})": not torch.allclose(
            actual.scores, expected.scores, atol=score_atol, rtol=0
        ),
    }
    differing = [name for name, differs in differences.items() if differs]
    if differing:
        raise ExportError(
            f"The exported model's detections on the image differ from the eager model's in {', '.join(differing)}"
        )
    return len(expected)


def export_torchscript(model: nn.Module, image: Tensor) -> Tuple[torch.jit.ScriptModule, TracingAdapter]:
    """Traces `detector_inference` with `torch.jit.trace`.

    The traced module takes any image size: sizes are traced from the input, not recorded from `image`.
    It needs torchvision's operators at load time (`import torchvision` before `torch.jit.load`).

    Returns:
        The traced module (save it with `torch.jit.save`) and the adapter, whose `outputs_schema`
        rebuilds the Instances from its outputs.
    """
    adapter = detector_tracing_adapter(model, image)
    with torch.no_grad():
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    return traced, adapter


def export_onnx(
    model: nn.Module, image: Tensor, f: Any, opset_version: int = STABLE_ONNX_OPSET_VERSION
) -> TracingAdapter:
    """Exports `detector_inference` to ONNX through tracing (PyTorch's TorchScript-based exporter,
    `dynamo=False`), with dynamic image height and width and a dynamic number of detections.

    Args:
        model, image: see `detector_tracing_adapter`.
        f: a file name or a writable binary file.
        opset_version: the ONNX opset; at least 16.

    Returns:
        The adapter; `output_names(adapter)` are the ONNX graph's output names.
    """
    adapter = detector_tracing_adapter(model, image)
    names = output_names(adapter)
    dynamic_axes = {"image": {1: "height", 2: "width"}}
    dynamic_axes.update({name: {0: "detections"} for name in names if name != "image_size"})
    with torch.no_grad():
        torch.onnx.export(
            adapter,
            adapter.flattened_inputs,
            f,
            dynamo=False,
            opset_version=opset_version,
            input_names=["image"],
            output_names=names,
            dynamic_axes=dynamic_axes,
        )
    return adapter


def export_torch_export(model: nn.Module, image: Tensor) -> Tuple[torch.export.ExportedProgram, TracingAdapter]:
    """Exports `detector_inference` with `torch.export`, image height and width dynamic.

    torch.export infers the range of sizes the program accepts (`input_size_range`): an FPN with a P6
    level needs both sides > 64 pixels, since a 1-pixel P6 map would be a different program. Calling
    the program with a size outside the range fails with a message naming the bound.

    Returns:
        The `ExportedProgram` (save it with `torch.export.save`, run `program.module()(image)`) and the
        adapter, whose `outputs_schema` rebuilds the Instances from its outputs.

    Raises:
        ExportError: torch.export cannot capture the model (names the first failure; tracing may work).
    """
    adapter = detector_tracing_adapter(model, image)
    dims = {1: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO}
    try:
        with torch.no_grad():
            program = torch.export.export(adapter, adapter.flattened_inputs, dynamic_shapes=((dims,),), strict=False)
    except Exception as e:  # torch.export raises many types; each is reported as one line
        first_line = str(e).strip().split("\n")[0]
        raise ExportError(
            f"torch.export cannot export {type(model).__name__}: {type(e).__name__}: {first_line} "
            f"(the tracing export method may work)"
        ) from e
    return program, adapter


def input_size_range(program: torch.export.ExportedProgram) -> List[Tuple[int, float]]:
    """[(min, max)] of the image height and width an exported detector accepts; max may be `math.inf`."""
    user_inputs = program.graph_signature.user_inputs
    image = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs)
    ranges = []
    for size in image.meta["val"].shape[1:]:
        if isinstance(size, int):  # torch.export specialised this side to the sample's
            ranges.append((size, size))
            continue
        bounds = program.range_constraints[size.node.expr]
        upper = float(bounds.upper)  # inf when unbounded
        ranges.append((int(bounds.lower), upper if math.isinf(upper) else int(upper)))
    return ranges
