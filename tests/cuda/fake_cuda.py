"""A CUDA device without a GPU: tensors that report `cuda:0`, compute on the CPU, and enforce the
rules a real GPU enforces, counting the host synchronisations a GPU would pay.

    with FakeCuda() as cuda:
        model = build_model(cfg)          # MODEL.DEVICE "cuda": parameters report cuda:0
        losses = model(batch)
    assert cuda.num_syncs <= budget

Inside the context
- a factory or `.to()` / `.cuda()` asked for a CUDA device returns a `FakeCudaTensor` wrapping a CPU
  tensor; every op on such tensors runs on the wrapped CPU tensors and returns wrappers again;
- an op mixing a CUDA tensor with a CPU tensor of one or more dimensions raises `DeviceMismatchError`
  (a CPU 0-d tensor may join, as on a GPU);
- every op that makes the host wait for a GPU is counted in `syncs`, by op and by the first line of
  d2mask or projects code that caused it: reading a value (`.item()`, `bool()`, `.tolist()`, a copy
  to the CPU), an op whose output size depends on the data (`nonzero`, boolean indexing, `unique`,
  `bincount`, `repeat_interleave` without `output_size`, NMS).

Autograd is off inside the context and fake CUDA tensors never require grad (a training forward
still computes its losses): recording a graph on a CUDA tensor asks CUDA for its current stream.
"""
import collections
import os
import traceback
from typing import Any, Dict, Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["DeviceMismatchError", "FakeCuda", "FakeCudaTensor"]

CUDA = torch.device("cuda", 0)
_CPU = torch.device("cpu")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SOURCE_DIRS = tuple(os.path.join(_ROOT, d) + os.sep for d in ("d2mask", "projects"))

aten = torch.ops.aten
_COPIES = {aten._to_copy.default, aten.copy_.default, aten.copy.default}
_BOOL_INDEXED = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default}


class DeviceMismatchError(RuntimeError):
    """An op got tensors of two devices, which a GPU refuses."""


class FakeCudaTensor(torch.Tensor):
    """A tensor reporting device cuda:0, holding its values in the CPU tensor `elem`."""

    elem: torch.Tensor
    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.size(),
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            layout=elem.layout,
            device=CUDA,
        )
        wrapper.elem = elem
        return wrapper

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func}: a fake CUDA tensor was used outside FakeCuda()")

    def requires_grad_(self, requires_grad: bool = True) -> "FakeCudaTensor":
        # Never: even a view of a tensor that requires grad asks CUDA for its current stream.
        return self

    def __repr__(self) -> str:
        return f"FakeCudaTensor({self.elem!r})"


def _is_cuda(device: Any) -> bool:
    return device is not None and not isinstance(device, bool) and torch.device(device).type == "cuda"


def _wrap(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and not isinstance(x, FakeCudaTensor):
        return FakeCudaTensor(x)
    return x


def _unwrap(x: Any) -> Any:
    return x.elem if isinstance(x, FakeCudaTensor) else x


_HOST_READS = {
    torch.Tensor.tolist,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
    torch.Tensor.__format__,
}
# Python bindings that set the tensor's CUDA device before dispatching (and so would need a GPU).
_DEVICE_GUARDED = _HOST_READS | {
    torch.Tensor.__getitem__,
    torch.Tensor.__setitem__,
    torch.Tensor.nonzero,
    torch.nonzero,
    torch.Tensor.new_tensor,
    torch.Tensor.copy_,
}


class _Factories(TorchFunctionMode):
    """Python-level entry points naming a CUDA device: they would initialise CUDA before dispatch."""

    def __init__(self, owner: "FakeCuda"):
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DEVICE_GUARDED:
            if any(isinstance(t, FakeCudaTensor) for t in pytree.arg_tree_leaves(*args, **kwargs)):
                return self._run_on_host(func, args, kwargs)
        if func is torch.Tensor.to:
            device, dtype, _, memory_format = torch._C._nn._parse_to(*args[1:], **kwargs)
            if _is_cuda(device):
                return self._to_cuda(args[0], dtype, memory_format)
        elif func is torch.Tensor.cuda:
            return self._to_cuda(args[0], None, None)
        elif _is_cuda(kwargs.get("device")):
            return pytree.tree_map(_wrap, func(*args, **{**kwargs, "device": _CPU}))
        return func(*args, **kwargs)

    def _run_on_host(self, func, args, kwargs):
        """Runs `func` on the CPU tensors: its Python binding would set the CUDA device first."""
        Tensor = torch.Tensor
        if func in (Tensor.__getitem__, Tensor.__setitem__):
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            tensors = [t for t in pytree.tree_leaves(index) + list(args[2:]) if isinstance(t, Tensor)]
            if not isinstance(args[0], FakeCudaTensor):
                _check_devices(func, [args[0]])
            if any(t.dtype in (torch.bool, torch.uint8) for t in tensors[: len(pytree.tree_leaves(index))]):
                self.owner._record_sync(func)  # a boolean mask becomes indices on the host
        elif func in _HOST_READS or func in (Tensor.nonzero, torch.nonzero):
            self.owner._record_sync(func)
        cpu_args, cpu_kwargs = pytree.tree_map(_unwrap, (args, kwargs))
        out = func(*cpu_args, **cpu_kwargs)
        if func in _HOST_READS or func is Tensor.__setitem__:
            return out
        if func is Tensor.copy_:
            return args[0]
        return pytree.tree_map(_wrap, out)

    def _to_cuda(self, x: torch.Tensor, dtype: Optional[torch.dtype], memory_format) -> torch.Tensor:
        kwargs = {"dtype": dtype} if dtype is not None else {}
        if memory_format is not None:
            kwargs["memory_format"] = memory_format
        if isinstance(x, FakeCudaTensor):
            return x.to(**kwargs) if kwargs else x
        self.owner.host_to_device_copies += 1
        return FakeCudaTensor(x.to(copy=True, **kwargs))


class _Dispatch(TorchDispatchMode):
    def __init__(self, owner: "FakeCuda"):
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = pytree.arg_tree_leaves(*args, **kwargs)
        on_cuda = any(isinstance(t, FakeCudaTensor) for t in leaves)
        cuda_factory = _is_cuda(kwargs.get("device"))
        if not on_cuda and not cuda_factory:
            return func(*args, **kwargs)
        if func not in _COPIES:
            _check_devices(func, leaves)
        to_host = _copies_to_host(func, args, kwargs)
        if to_host or _syncs(func, args, kwargs):
            self.owner._record_sync(func)
        cpu_args, cpu_kwargs = pytree.tree_map(_unwrap, (args, kwargs))
        if cuda_factory:
            cpu_kwargs["device"] = _CPU
        out = func(*cpu_args, **cpu_kwargs)
        mutated = _mutated_arguments(func, args, kwargs)
        if mutated is not None:
            return mutated
        return out if to_host else pytree.tree_map(_wrap, out)


def _check_devices(func, leaves) -> None:
    for t in leaves:
        if isinstance(t, torch.Tensor) and not isinstance(t, FakeCudaTensor) and t.dim() > 0:
            raise DeviceMismatchError(
                f"{func} got a cuda:0 tensor and a {t.device} tensor of shape {tuple(t.shape)}"
            )


def _copies_to_host(func, args, kwargs) -> bool:
    if func is aten._to_copy.default:
        device = kwargs.get("device")
        return device is not None and torch.device(device).type == "cpu"
    if func is aten.copy_.default:
        return not isinstance(args[0], FakeCudaTensor) and isinstance(args[1], FakeCudaTensor)
    return False


def _syncs(func, args, kwargs) -> bool:
    """Whether a GPU would make the host wait for this op (given it has CUDA inputs)."""
    if func in _BOOL_INDEXED:
        indices = args[1] if len(args) > 1 else kwargs["indices"]
        return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)
    if func is aten.repeat_interleave.Tensor:
        return kwargs.get("output_size") is None
    if func.namespace == "torchvision" and func._schema.name.endswith("nms"):
        return True  # the kept mask is read on the host
    return torch.Tag.dynamic_output_shape in func.tags or torch.Tag.data_dependent_output in func.tags


def _mutated_arguments(func, args, kwargs):
    """For an in-place or `out=` op, the arguments it wrote to (what it returns), else None."""
    schema = func._schema
    if not schema.is_mutable or not schema.returns:
        return None
    outs = []
    for ret in schema.returns:
        if ret.alias_info is None or not ret.alias_info.is_write:
            return None
        for i, arg in enumerate(schema.arguments):
            if arg.alias_info is not None and arg.alias_info.before_set == ret.alias_info.before_set:
                outs.append(args[i] if i < len(args) else kwargs[arg.name])
                break
    return outs[0] if len(outs) == 1 else tuple(outs)


class FakeCuda:
    """The context in which CUDA devices are faked (see the module docstring).

    Attributes:
        syncs: {(op, "file:line" of the d2mask/projects code that caused it): count}.
        host_to_device_copies: tensors moved from the CPU to the fake GPU.
    """

    def __init__(self):
        self.syncs: Dict[tuple, int] = collections.Counter()
        self.host_to_device_copies = 0
        self._modes = [_Factories(self), _Dispatch(self)]

    @property
    def num_syncs(self) -> int:
        return sum(self.syncs.values())

    def reset(self) -> None:
        self.syncs.clear()
        self.host_to_device_copies = 0

    def _record_sync(self, func) -> None:
        where = "?"
        for frame in reversed(traceback.extract_stack()):
            if frame.filename.startswith(_SOURCE_DIRS):
                where = f"{os.path.relpath(frame.filename, _ROOT)}:{frame.lineno}"
                break
        self.syncs[(str(func), where)] += 1

    def __enter__(self) -> "FakeCuda":
        # `Module.to` would otherwise set a CPU parameter's `.data` to the wrapper, leaving a plain
        # tensor whose ops go to CUDA's kernels.
        self._overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
        torch.__future__.set_overwrite_module_params_on_conversion(True)
        self._grad = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        torch.set_grad_enabled(self._grad)
        torch.__future__.set_overwrite_module_params_on_conversion(self._overwrite)
