"""The restricted unpickler of weights `.pkl` files: every pickle numpy writes loads exactly; crafted
pickles are refused with one line, without crashing the interpreter or allocating memory."""
import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from d2mask.checkpoint import UnsafePickleError, load_numpy_pickle
from tests.common import REPO

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct


def _load(data: bytes):
    return load_numpy_pickle(io.BytesIO(data), "weights.pkl")


def _refused(data: bytes) -> str:
    """The one-line message with which `data` is refused. The load must allocate less than 4 MB and
    64 bytes per byte of the file (a container costs ~50 bytes, made by one opcode byte)."""
    tracemalloc.start()
    try:
        with pytest.raises(UnsafePickleError) as info:
            _load(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20 + 64 * len(data), f"{peak} bytes allocated to refuse a {len(data)}-byte file"
    message = str(info.value)
    assert "weights.pkl" in message and "\n" not in message and "weights_only" not in message
    return message


class _Reduce:
    """Pickles as `function(*args)` followed by BUILD(state) when a state is given."""

    def __init__(self, function, args, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args) if self.state is None else (self.function, self.args, self.state)


def _dtype(spec, byteorder="<", flags=0):
    return _Reduce(np.dtype, (spec, False, True), (3, byteorder, None, None, None, -1, -1, flags))


def _array(shape, dtype, raw):
    return _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, raw))


@pytest.mark.parametrize("protocol", range(6))
def test_every_protocol_loads_arrays_scalars_and_containers_exactly(protocol):
    arrays = {
        "f4": np.arange(6, dtype=np.float32).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "big_endian": np.arange(3, dtype=">i4"),
        "bool": np.array([True, False]),
        "half": np.array([0.5, -2], dtype=np.float16),
        "empty": np.zeros((0, 4), dtype=np.int64),
        "u8": np.array([2**64 - 1], dtype=np.uint64),
    }
    data = {"model": arrays, "scalar": np.float64(1.5), "ordered": collections.OrderedDict(x=1),
            "set": {1, 2}, "nested": [1, (2, "three")], "__author__": "test"}
    loaded = _load(pickle.dumps(data, protocol=protocol))
    for name, array in arrays.items():
        got = loaded["model"][name]
        assert got.dtype == array.dtype and got.shape == array.shape and np.array_equal(got, array), name
        assert got.flags.writeable  # torch.as_tensor warns on read-only arrays
    assert loaded["model"]["fortran"].flags.f_contiguous
    assert type(loaded["scalar"]) is np.float64 and loaded["scalar"] == 1.5
    assert loaded["ordered"] == collections.OrderedDict(x=1) and loaded["set"] == {1, 2}
    assert loaded["nested"] == [1, (2, "three")] and loaded["__author__"] == "test"


def test_shared_and_cyclic_references_are_kept():
    array = np.ones(2, dtype=np.float32)
    cyclic = [array, array]
    cyclic.append(cyclic)
    loaded = _load(pickle.dumps({"a": cyclic}, protocol=2))["a"]
    assert loaded[0] is loaded[1] and loaded[2] is loaded and np.array_equal(loaded[0], array)


def test_a_crafted_dtype_cannot_crash_the_interpreter(tmp_path):
    # An object dtype whose state clears numpy's "pickled as a list" flag makes numpy take the raw
    # bytes as object pointers: 'AAAAAAAA' is dereferenced when the array is used (a segfault).
    path = tmp_path / "crash.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": _array((1,), _dtype("O8", "|"), b"A" * 8)}}, protocol=2))
    assert len(path.read_bytes()) < 300
    code = (
        "import sys\n"
        "from d2mask.checkpoint import UnsafePickleError, load_numpy_pickle\n"
        "try:\n"
        f"    data = load_numpy_pickle(open({str(path)!r}, 'rb'), 'crash.pkl')\n"
        "except UnsafePickleError as e:\n"
        "    print('refused:', e)\n"
        "    sys.exit(0)\n"
        "print(repr(data))\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: Refusing to load crash.pkl: it holds an array element type 'O8'" in result.stdout


@pytest.mark.parametrize("array", [
    np.array([1, "x"], dtype=object),
    np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),
    np.array(["text"]),
    np.array([1 + 2j]),
], ids=["object", "structured", "unicode", "complex"])
def test_arrays_of_anything_but_numbers_are_refused(array):
    message = _refused(pickle.dumps({"model": {"w": array}}, protocol=2))
    assert "element type" in message and "not a number type" in message


@pytest.mark.parametrize("state", [
    (3, "<", None, ("a",), {"a": (np.dtype("f4"), 0)}, 4, 1, 0),  # fields smuggled into a float dtype
    (3, "<", (np.dtype("f4"), (1000, 1000)), None, None, -1, -1, 0),  # a subarray
    (3, "x", None, None, None, -1, -1, 0),
    "junk",
])
def test_a_dtype_state_with_more_than_a_byte_order_is_refused(state):
    crafted = _array((1,), _Reduce(np.dtype, ("f4", False, True), state), b"\0" * 4)
    _refused(pickle.dumps({"w": crafted}, protocol=2))


def test_an_array_needs_exactly_the_bytes_of_its_shape():
    assert "with 8 bytes of data, not 8796093022208" in _refused(pickle.dumps({"w": _array((2**40,), _dtype("f8"), b"\0" * 8)}, protocol=2))
    _refused(pickle.dumps({"w": _array((-1,), _dtype("f8"), b"\0" * 8)}, protocol=2))
    _refused(pickle.dumps({"w": _array((1,), _dtype("f8"), [1.0])}, protocol=2))


@pytest.mark.parametrize("data", [
    # an array of 2**25 bytes announced by _reconstruct, never given its data
    pickle.dumps({"w": _Reduce(_reconstruct, (np.ndarray, (2**25,), b"b"))}, protocol=2),
    # a memo index of 2**24: the C unpickler would size its memo to 2**25 entries (256 MB)
    b"\x80\x02}r" + struct.pack("<I", 2**24) + b".",
    # a byte string announced as 2**40 bytes long in a 20-byte file
    b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc.",
], ids=["array shape", "memo index", "bytes length"])
def test_a_few_bytes_cannot_allocate_much(data):
    _refused(data)


def test_functions_and_instances_are_refused_by_name(tmp_path):
    marker = tmp_path / "executed"
    message = _refused(pickle.dumps({"w": _Reduce(os.system, (f"touch {marker}",))}, protocol=2))
    assert "system" in message
    assert "numpy.ndarray" not in _refused(pickle.dumps(_Reduce(np.ndarray, ((2**20,),)), protocol=2))
    _refused(pickle.dumps(_Reduce(bytes, (2**30,)), protocol=2))  # only bytes() stands for b""
    _refused(pickle.dumps(_Reduce(__import__("_codecs").encode, (b"x" * 10, "zlib")), protocol=2))
    assert not marker.exists()


def test_a_build_aimed_at_an_allowed_global_changes_nothing_beyond_the_file():
    # BUILD on what `_reconstruct` resolves to, with a slot state, sets its attribute __setstate__
    # to None; were that a shared class, every later load of an array would fail.
    crafted = b"\x80\x02cnumpy._core.multiarray\n_reconstruct\n(N}X\x0c\x00\x00\x00__setstate__Nstb0}."
    assert _load(crafted) == {}
    array = np.arange(3, dtype=np.float32)
    assert np.array_equal(_load(pickle.dumps({"w": array}, protocol=2))["w"], array)


def test_truncated_and_malformed_files_are_one_line_errors():
    good = pickle.dumps({"model": {"w": np.zeros(100)}}, protocol=2)
    for data in (good[: len(good) // 2], b"", b"not a pickle at all", good[:-1] + b"\xff"):
        assert _refused(data).startswith(("Cannot read checkpoint weights.pkl: ", "Refusing to load weights.pkl: "))
    nested = b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."  # 100,000 nested lists
    assert "nested too deeply" in _refused(nested)
