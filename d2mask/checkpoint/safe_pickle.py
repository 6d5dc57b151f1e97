"""`load_numpy_pickle`: reads a pickle of numpy arrays without ever running code from the file.

Detectron2's model-zoo `.pkl` files (and Caffe2/Detectron1 ones) are pickles of dicts of numpy arrays.
A plain `pickle.load` would call any function the file names, so a tampered download could execute
code; this unpickler resolves only the handful of globals numpy arrays and plain containers need.
"""
import _codecs
import collections
import pickle
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the array internals to numpy._core; older files still name numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray

__all__ = ["UnsafePickleError", "load_numpy_pickle"]

# Every global a pickle of numpy arrays, numpy scalars and builtin containers may reference,
# under the module names written by Python 2 and 3 and by numpy 1 and 2.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    # Byte buffers of arrays pickled with protocol <= 2 are encoded as latin-1 text.
    ("_codecs", "encode"): _codecs.encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that references something other than numpy arrays and plain containers."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, filename: str):
        # latin-1 decodes Python 2 str objects (Caffe2-era files) losslessly.
        super().__init__(file, encoding="latin1")
        self._filename = filename

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"Refusing to load {self._filename}: it references '{module}.{name}', but a weights "
                f".pkl may contain only numpy arrays and plain containers. The file was not executed. "
                f"If you trust it, convert it to a state dict of tensors saved with torch.save."
            )
        return allowed


def load_numpy_pickle(file, filename: str) -> Any:
    """Unpickles `file` (a binary file object), allowing only numpy arrays, numpy scalars and plain
    containers (dict, list, tuple, set, str, numbers).

    Args:
        file: the open file.
        filename: its name, for error messages.

    Raises:
        UnsafePickleError: the pickle references any other global (a function, a class) - nothing
            from it is called.
    """
    return _NumpyOnlyUnpickler(file, filename).load()
