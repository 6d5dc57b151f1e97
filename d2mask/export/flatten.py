"""Flattening rich model inputs and outputs (dicts, lists, `Instances`, `Boxes`) to tuples of tensors,
as tracing and export need, with a schema that rebuilds the original structure afterwards.
"""
import collections.abc
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from d2mask.config.instantiate import locate, target_name
from d2mask.layers import shapes_to_tensor
from d2mask.structures import BitMasks, Boxes, Instances

from .torchscript_patch import patch_builtin_len

__all__ = [
    "Schema",
    "ListSchema",
    "TupleSchema",
    "IdentitySchema",
    "DictSchema",
    "InstancesSchema",
    "TensorWrapSchema",
    "flatten_to_tuple",
    "TracingAdapter",
]


@dataclass
class Schema:
    """How an object was flattened to a tuple, so that `schema(values)` rebuilds it from the flat values.

    `flatten(obj)` returns `(values, schema)`. A schema is a plain dataclass: it can be printed,
    compared and saved beside an exported model.
    """

    @classmethod
    def flatten(cls, obj: Any) -> Tuple[tuple, "Schema"]:
        raise NotImplementedError

    def __call__(self, values: Sequence[Any]) -> Any:
        raise NotImplementedError


@dataclass
class ListSchema(Schema):
    schemas: List[Schema]  # one per element
    sizes: List[int]  # how many flat values each element took

    def __call__(self, values: Sequence[Any]) -> list:
        if len(values) != sum(self.sizes):
            raise ValueError(f"{type(self).__name__} expects {sum(self.sizes)} flat values, got {len(values)}")
        result, start = [], 0
        for schema, size in zip(self.schemas, self.sizes):
            result.append(schema(values[start : start + size]))
            start += size
        return result

    @classmethod
    def flatten(cls, obj: Sequence[Any]) -> Tuple[tuple, "ListSchema"]:
        values, schemas, sizes = (), [], []
        for element in obj:
            flat, schema = flatten_to_tuple(element)
            values += flat
            schemas.append(schema)
            sizes.append(len(flat))
        return values, cls(schemas, sizes)


@dataclass
class TupleSchema(ListSchema):
    def __call__(self, values: Sequence[Any]) -> tuple:
        return tuple(super().__call__(values))


@dataclass
class IdentitySchema(Schema):
    """A leaf: a tensor, a number or a string, kept as it is."""

    def __call__(self, values: Sequence[Any]) -> Any:
        return values[0]

    @classmethod
    def flatten(cls, obj: Any) -> Tuple[tuple, "IdentitySchema"]:
        return (obj,), cls()


@dataclass
class DictSchema(ListSchema):
    keys: List[str]  # sorted, the order of the flat values

    def __call__(self, values: Sequence[Any]) -> dict:
        return dict(zip(self.keys, super().__call__(values)))

    @classmethod
    def flatten(cls, obj: collections.abc.Mapping) -> Tuple[tuple, "DictSchema"]:
        if not all(isinstance(k, str) for k in obj):
            raise KeyError(f"Only dicts with str keys can be flattened, got keys {list(obj)}")
        keys = sorted(obj)
        values, schema = ListSchema.flatten([obj[k] for k in keys])
        return values, cls(schema.schemas, schema.sizes, keys)


@dataclass
class InstancesSchema(DictSchema):
    """An `Instances`: its fields as a dict, then its image size as a `Tensor[2]`."""

    def __call__(self, values: Sequence[Any]) -> Instances:
        fields = super().__call__(values[:-1])
        image_size = values[-1]
        if isinstance(image_size, torch.Tensor):
            image_size = image_size.tolist()
        return Instances(tuple(image_size), **fields)

    @classmethod
    def flatten(cls, obj: Instances) -> Tuple[tuple, "InstancesSchema"]:
        values, schema = super().flatten(obj.get_fields())
        return values + (shapes_to_tensor(list(obj.image_size)),), schema


@dataclass
class TensorWrapSchema(Schema):
    """A structure that is a thin wrapper of one tensor (`Boxes`, `BitMasks`), rebuilt as `cls(tensor)`."""

    class_name: str  # the wrapper's importable "module.qualname"

    def __call__(self, values: Sequence[Any]) -> Any:
        return locate(self.class_name)(values[0])

    @classmethod
    def flatten(cls, obj: Any) -> Tuple[tuple, "TensorWrapSchema"]:
        return (obj.tensor,), cls(target_name(type(obj)))


# The first entry whose type matches decides; anything else is a leaf.
_SCHEMAS = (
    ((str, bytes), IdentitySchema),
    (list, ListSchema),
    (tuple, TupleSchema),
    (collections.abc.Mapping, DictSchema),
    (Instances, InstancesSchema),
    ((Boxes, BitMasks), TensorWrapSchema),
)


def flatten_to_tuple(obj: Any) -> Tuple[tuple, Schema]:
    """Flattens `obj` (nested lists, tuples, str-keyed dicts, `Instances`, `Boxes`, `BitMasks`, leaves).

    Returns:
        The flat tuple of leaves, and a schema with `schema(values) == obj`.
    """
    for types, schema in _SCHEMAS:
        if isinstance(obj, types):
            return schema.flatten(obj)
    return IdentitySchema.flatten(obj)


class TracingAdapter(nn.Module):
    """Makes a model with rich inputs and outputs traceable: its forward takes and returns flat tuples
    of tensors, and it records the schemas that convert them back.

        adapter = TracingAdapter(model, inputs)
        traced = torch.jit.trace(adapter, adapter.flattened_inputs)
        outputs = adapter.outputs_schema(traced(*adapter.flattened_inputs))  # same as model(inputs)
    """

    flattened_inputs: Tuple[torch.Tensor, ...] = None
    """The inputs given to the constructor, flattened."""
    inputs_schema: Optional[Schema] = None
    """Rebuilds the model's inputs from flat tensors."""
    outputs_schema: Optional[Schema] = None
    """Rebuilds the model's outputs from flat tensors; set by the first forward."""

    def __init__(
        self,
        model: nn.Module,
        inputs: Any,
        inference_func: Optional[Callable] = None,
        allow_non_tensor: bool = False,
    ):
        """
        Args:
            model: the model; a (Distributed)DataParallel wrapper is unwrapped.
            inputs: one argument of the model, or a tuple of them; flattened, tensors only (unless
                `allow_non_tensor`).
            inference_func: `(model, *inputs) -> outputs`; default `model(*inputs)`.
            allow_non_tensor: drop non-tensor inputs and outputs instead of raising. The schemas are
                then unusable (None), and the adapter only runs on `flattened_inputs` themselves:
                useful for one trace (e.g. counting operations), not for export.
        """
        super().__init__()
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        self.model = model
        # The adapter takes the model's mode, so that exporters which set a mode and then restore the
        # adapter's do not leave the model in training mode.
        self.train(model.training)
        self.inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        self.inference_func = inference_func or (lambda model, *inputs: model(*inputs))
        self.allow_non_tensor = allow_non_tensor

        self.flattened_inputs, self.inputs_schema = flatten_to_tuple(self.inputs)
        non_tensors = [type(x).__name__ for x in self.flattened_inputs if not isinstance(x, torch.Tensor)]
        if non_tensors and not allow_non_tensor:
            raise ValueError(f"Inputs for tracing must be tensors only; they include {non_tensors}")
        if non_tensors:
            self.flattened_inputs = tuple(x for x in self.flattened_inputs if isinstance(x, torch.Tensor))
            self.inputs_schema = None

    def forward(self, *args: torch.Tensor) -> tuple:
        with torch.no_grad(), patch_builtin_len():
            if self.inputs_schema is not None:
                inputs = self.inputs_schema(args)
            elif len(args) == len(self.flattened_inputs) and all(a is b for a, b in zip(args, self.flattened_inputs)):
                inputs = self.inputs
            else:
                raise ValueError(
                    "This TracingAdapter dropped non-tensor inputs (allow_non_tensor=True), so it has no "
                    "inputs schema and runs only on its own `flattened_inputs`"
                )
            outputs, schema = flatten_to_tuple(self.inference_func(self.model, *inputs))
            non_tensors = sorted({type(x).__name__ for x in outputs if not isinstance(x, torch.Tensor)})
            if non_tensors and not self.allow_non_tensor:
                raise ValueError(f"The model's outputs cannot be traced: they include {non_tensors}, not only tensors")
            if non_tensors:
                self.outputs_schema = None
                return tuple(x for x in outputs if isinstance(x, torch.Tensor))
            if self.outputs_schema is None:
                self.outputs_schema = schema
            elif self.outputs_schema != schema:
                raise ValueError(
                    f"The model's outputs changed structure between calls ({self.outputs_schema} then "
                    f"{schema}); a traced model must always return the same structure"
                )
            return outputs

    def _create_wrapper(self, traced_model: Callable) -> Callable:
        """A function with the original model's interface that runs `traced_model` underneath."""

        def forward(*args):
            flattened, _ = flatten_to_tuple(args)
            return self.outputs_schema(traced_model(*flattened))

        return forward
