"""Making `len()` traceable inside d2mask's inference code while a model is traced or exported."""
import contextlib
from typing import Iterator, Sequence
from unittest import mock

__all__ = ["patch_builtin_len"]

# The modules whose inference code sizes tensors by the number of regions or detections with len().
_LEN_MODULES = (
    "d2mask.layers.nms",
    "d2mask.modeling.poolers",
    "d2mask.modeling.roi_heads.fast_rcnn",
    "d2mask.modeling.roi_heads.keypoint_head",
    "d2mask.modeling.roi_heads.mask_head",
    "d2mask.structures.instances",
)


def _traceable_len(obj) -> object:
    # `__len__` itself, unlike the builtin, does not turn its result into a Python int, so under
    # tracing a tensor's length stays a traced value instead of a constant of the sample input.
    return obj.__len__()


@contextlib.contextmanager
def patch_builtin_len(modules: Sequence[str] = ()) -> Iterator[None]:
    """Within the context, `len` in d2mask's inference modules (and in `modules`, names of further
    modules, e.g. a project's head) calls `obj.__len__()` instead of the builtin.

    Tracing records `x.shape[0]` as an operation but the builtin `len(x)` as a constant; with this
    patch, a traced model sizes its per-region tensors from its input instead of from the sample.
    """
    with contextlib.ExitStack() as stack:
        for name in (*_LEN_MODULES, *modules):
            stack.enter_context(mock.patch(f"{name}.len", _traceable_len, create=True))
        yield
