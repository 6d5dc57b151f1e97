"""`load_numpy_pickle`: reads a pickle of numpy arrays without running code from the file, crashing
the interpreter, or allocating more than a small multiple of the file's size.

Detectron2's model-zoo `.pkl` files (and Caffe2/Detectron1 ones) are pickles of dicts of numeric
numpy arrays. A plain `pickle.load` calls any function the file names. Restricting the globals is
not enough either: numpy's own `dtype` and `ndarray` rebuild themselves from whatever state the file
gives (a crafted dtype makes numpy read file bytes as object pointers; a crafted shape allocates
gigabytes), and the C unpickler sizes its memo by the largest index a file names. So:

- the opcodes are checked first, without building anything: only those plain containers and
  numbers need, memo indices bounded by the opcodes seen, every length within the file;
- the numpy globals resolve to stand-ins that accept one form only, a numeric dtype from a fixed
  list and an array rebuilt from exactly `prod(shape) * itemsize` raw bytes of the file; numpy never
  sees the file's state;
- the loaded object is walked once, replacing each stand-in by its array, so that the result holds
  only plain containers, strings, numbers and numeric arrays.
"""
import _codecs
import collections
import io
import math
import pickle
import pickletools
from typing import Any, Callable, Dict, IO, Optional

import numpy as np

__all__ = ["UnsafePickleError", "load_numpy_pickle"]

# Element types of weights: booleans, integers and floats. No objects, strings, records or subarrays.
_NUMERIC_DTYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}

# Opcodes that build containers, strings and numbers, and the memo. Absent on purpose: INST, OBJ,
# NEWOBJ(_EX) (create instances), EXT1/2/4 (the extension registry), PERSID/BINPERSID and the
# out-of-band buffers, which weights files never use.
_ALLOWED_OPCODES = {
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
    "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES",
    "BINBYTES8", "BYTEARRAY8", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET",
    "GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD",
}
_PUT_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT"}
_MAX_DIMS = 64  # numpy's limit; also keeps computing the size of a crafted shape cheap


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that holds more than numeric numpy arrays and plain containers, or is malformed."""


class _Refused(Exception):
    """What the stand-ins raise: the message completes "it holds ..."; `load_numpy_pickle` adds the file."""


class _DType:
    """Stands in for `numpy.dtype(spec, align, copy)`; `__setstate__` takes the byte order only."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True):
        if not isinstance(spec, str) or spec not in _NUMERIC_DTYPES:
            raise _Refused(f"an array element type '{_short(spec)}', not a number type")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state: Any) -> None:
        # numpy's layouts of the state: (byteorder, subarray, fields, elsize, alignment) in version 0,
        # (version, byteorder, subarray, fields, ...) in 1, (version, byteorder, subarray, names,
        # fields, ...) from 2 on.
        if not isinstance(state, tuple) or len(state) not in (5, 6, 7, 8, 9):
            raise _Refused("a malformed array element type")
        if len(state) == 5:
            byteorder, structure = state[0], state[1:3]
        else:
            byteorder, structure = state[1], state[2:4] if len(state) == 6 else state[2:5]
        if byteorder not in ("<", ">", "=", "|") or any(part is not None for part in structure):
            raise _Refused("an array element type with fields or subarrays, not a number type")
        if byteorder in ("<", ">") and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(byteorder)


class _Array:
    """Stands in for `numpy.core.multiarray._reconstruct(ndarray, shape, typecode)`; allocates
    nothing until `__setstate__` brings the shape, the element type and the raw bytes."""

    def __init__(self, cls: Any, shape: Any, typecode: Any):
        if cls is not _NDARRAY:
            raise _Refused(f"an array of class {_short(cls)}")
        self.array: Optional[np.ndarray] = None

    def __setstate__(self, state: Any) -> None:
        # numpy writes (version, shape, dtype, is_fortran, rawdata); version 0 had no version field.
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("a malformed array")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stands in for `numpy.core.numeric._frombuffer`, with which protocol 5 pickles arrays."""
    if order not in ("C", "F"):
        raise _Refused(f"an array of order {_short(order)}")
    return _array_from_bytes(buffer, dtype, shape, order)


def _scalar(dtype: Any, raw: Any) -> np.generic:
    """Stands in for `numpy.core.multiarray.scalar(dtype, bytes)`."""
    return _array_from_bytes(raw, dtype, (), "C")[()]


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """A writable array of `shape` read from exactly the bytes it needs; never larger than `raw`."""
    if not isinstance(dtype, _DType):
        raise _Refused("an array whose element type is not a number type")
    if not (isinstance(shape, tuple) and len(shape) <= _MAX_DIMS and all(type(d) is int and d >= 0 for d in shape)):
        raise _Refused(f"an array of shape {_short(shape)}")
    if isinstance(raw, str):  # Python 2 pickles hold the bytes as a str (decoded as latin-1)
        raw = raw.encode("latin-1")
    if not isinstance(raw, (bytes, bytearray)):
        raise _Refused(f"array data of type {type(raw).__name__}, not bytes")
    needed = math.prod(shape) * dtype.dtype.itemsize
    if needed != len(raw):
        raise _Refused(f"an array of shape {_short(shape)} and type {dtype.dtype} with {len(raw)} bytes of data, not {needed}")
    return np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order=order).copy(order="K")


def _latin1_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """Stands in for `_codecs.encode`, which protocol <= 2 pickles use for bytes (as latin-1 text)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("a call of _codecs.encode other than latin-1 bytes")
    return _codecs.encode(text, "latin1")


def _empty_bytes() -> bytes:
    """Stands in for `bytes()`, with which protocol <= 2 pickles empty bytes (no `bytes(n)`)."""
    return b""


_NDARRAY = object()  # what `numpy.ndarray` resolves to: an argument of `_reconstruct`, nothing callable

# Every global a pickle of numpy arrays, numpy scalars and containers may name, under the module
# names written by Python 2 and 3 and by numpy 1 and 2.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "_reconstruct"): _Array,
    ("numpy._core.multiarray", "_reconstruct"): _Array,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}


def _short(value: Any) -> str:
    """`value` (its repr, or its type for other objects) cut to 60 characters: a message never
    prints a huge value from the file."""
    text = value if isinstance(value, str) else repr(value) if isinstance(value, (bytes, int, float, tuple)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _fresh(target: Callable) -> Callable:
    """A new function calling `target`: a BUILD opcode aimed at what a global resolves to then sets
    attributes of this throwaway function, never of d2mask's classes or of builtins."""
    return lambda *args: target(*args)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], filename: str):
        # latin-1 decodes Python 2 str objects (Caffe2-era files) losslessly.
        super().__init__(file, encoding="latin1")
        self._filename = filename

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"Refusing to load {self._filename}: it references '{_short(module)}.{_short(name)}', "
                f"but a weights .pkl may contain only numeric numpy arrays and plain containers. The file was "
                f"not executed. If you trust it, convert it to a state dict of tensors saved with torch.save."
            )
        return allowed if allowed is _NDARRAY else _fresh(allowed)


def _check_opcodes(data: bytes) -> None:
    """Refuses opcodes that create anything but containers and numbers, and memo indices beyond the
    opcodes read so far (the C unpickler sizes its memo by the largest index it is given)."""
    for count, (op, arg, _) in enumerate(pickletools.genops(io.BytesIO(data))):
        if op.name not in _ALLOWED_OPCODES:
            raise _Refused(f"the pickle opcode {op.name}, which weights files do not use")
        if op.name in _PUT_OPCODES and arg > count:
            raise _Refused(f"memo index {arg} at opcode {count}")


def _replace_stand_ins(obj: Any) -> Any:
    """`obj` with each `_Array` replaced by its array; shared and cyclic references are kept."""
    done: Dict[int, Any] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, (np.ndarray, np.generic)) and value.dtype.hasobject:
            raise _Refused("an array of Python objects")  # the stand-ins never build one
        if isinstance(value, (str, bytes, bytearray, int, float, complex, type(None), np.ndarray, np.generic)):
            return value
        if id(value) in done:
            return done[id(value)]
        if isinstance(value, _Array):
            if value.array is None:
                raise _Refused("an array without its data")
            done[id(value)] = value.array
        elif isinstance(value, dict):  # dict and OrderedDict, filled after registering (cycles)
            done[id(value)] = value
            items = [(walk(k), walk(v)) for k, v in value.items()]
            value.clear()
            value.update(items)
        elif isinstance(value, list):
            done[id(value)] = value
            value[:] = [walk(v) for v in value]
        elif isinstance(value, tuple):
            done[id(value)] = tuple(walk(v) for v in value)
        elif isinstance(value, (set, frozenset)):
            if any(isinstance(v, _Array) for v in value):
                raise _Refused("an array inside a set")
            done[id(value)] = value
        else:
            raise _Refused(f"an object of type {type(value).__name__}")
        return done[id(value)]

    return walk(obj)


def load_numpy_pickle(file: IO[bytes], filename: str) -> Any:
    """Unpickles `file`, allowing only numeric numpy arrays and scalars (bool, int, uint, float of
    every size) and plain containers (dict, OrderedDict, list, tuple, set, str, bytes, numbers).

    The whole file is read first; loading needs at most about three times its size in all.

    Args:
        file: the open binary file.
        filename: its name, for error messages.

    Raises:
        UnsafePickleError: one line naming `filename`: the pickle names another global (a function, a
            class; nothing from it is called), holds an array of objects or of a crafted element type,
            an opcode weights files never use, or is malformed (truncated, lengths beyond the file).
    """
    data = file.read()
    try:
        _check_opcodes(data)
        return _replace_stand_ins(_NumpyOnlyUnpickler(io.BytesIO(data), filename).load())
    except UnsafePickleError:
        raise
    except _Refused as e:
        raise UnsafePickleError(f"Refusing to load {filename}: it holds {e}; a weights .pkl may contain only "
                                f"numeric numpy arrays and plain containers. Nothing from it was run.") from None
    except RecursionError:
        raise UnsafePickleError(f"Cannot read checkpoint {filename}: its containers are nested too deeply to be weights") from None
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, EOFError, AttributeError,
            MemoryError, OverflowError, UnicodeDecodeError) as e:
        raise UnsafePickleError(
            f"Cannot read checkpoint {filename}: the file is corrupt or truncated, or not a pickle of weights "
            f"({type(e).__name__}: {_short(str(e))})"
        ) from None
