"""Deploying trained models: TorchScript and ONNX by tracing, `torch.export`; see docs/deployment.md."""
from .exporters import (
    STABLE_ONNX_OPSET_VERSION,
    ExportError,
    detector_inference,
    detector_tracing_adapter,
    export_onnx,
    export_torch_export,
    export_torchscript,
    input_size_range,
    output_names,
    verify_export,
)
from .flatten import TracingAdapter, flatten_to_tuple
from .torchscript import dump_torchscript_IR, scripting_with_instances
from .torchscript_patch import patch_builtin_len

__all__ = [
    "STABLE_ONNX_OPSET_VERSION",
    "ExportError",
    "TracingAdapter",
    "detector_inference",
    "detector_tracing_adapter",
    "dump_torchscript_IR",
    "export_onnx",
    "export_torch_export",
    "export_torchscript",
    "flatten_to_tuple",
    "input_size_range",
    "output_names",
    "patch_builtin_len",
    "scripting_with_instances",
    "verify_export",
]
