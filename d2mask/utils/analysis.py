"""Counting a detection model's operations and activations with fvcore, whose tracer takes tensors
only: the model is traced through `TracingAdapter`, which flattens its dict inputs and `Instances`
outputs into tensors."""
from collections import Counter
from typing import Any, Dict, List

import fvcore.nn
from fvcore.nn import parameter_count_table
from torch import nn

from ..export.flatten import TracingAdapter

__all__ = ["FlopCountAnalysis", "activation_count_operators", "parameter_count_table"]

# Operations that cost nothing worth counting (shape and indexing bookkeeping), silenced as in Detectron2.
_IGNORED_OPS = (
    "aten::add", "aten::add_", "aten::argmax", "aten::argsort", "aten::batch_norm", "aten::constant_pad_nd",
    "aten::div", "aten::div_", "aten::exp", "aten::log2", "aten::max_pool2d", "aten::meshgrid",
    "aten::mul", "aten::mul_", "aten::neg", "aten::nonzero_numpy", "aten::reciprocal", "aten::repeat_interleave",
    "aten::rsub", "aten::sigmoid", "aten::sigmoid_", "aten::softmax", "aten::sort", "aten::sqrt", "aten::sub",
    "torchvision::nms",
)


class FlopCountAnalysis(fvcore.nn.FlopCountAnalysis):
    """fvcore's `FlopCountAnalysis` of a model on its own inputs (e.g. a batch of a test loader):
    `.total()`, `.by_operator()`, `.by_module()`, and `fvcore.nn.flop_count_table(analysis)`."""

    def __init__(self, model: nn.Module, inputs: List[Dict[str, Any]]):
        adapter = TracingAdapter(model, inputs, allow_non_tensor=True)
        super().__init__(adapter, adapter.flattened_inputs)
        self.set_op_handle(**{op: None for op in _IGNORED_OPS})


def activation_count_operators(model: nn.Module, inputs: List[Dict[str, Any]]) -> Counter:
    """Millions of activations (output elements) of the model on `inputs`, per operator type."""
    adapter = TracingAdapter(model, inputs, allow_non_tensor=True)
    analysis = fvcore.nn.ActivationCountAnalysis(adapter, adapter.flattened_inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return Counter({op: count / 1e6 for op, count in analysis.by_operator().items()})
