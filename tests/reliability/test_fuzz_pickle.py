"""Property tests of the weights unpickler on random edits of real weights pickles and on random
opcode sequences: it returns plain containers of numeric arrays, or raises UnsafePickleError with
one line; it never crashes, and allocates at most a small multiple of the file's size."""
import collections
import io
import pickle
import struct
import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from d2mask.checkpoint import UnsafePickleError, load_numpy_pickle

SETTINGS = settings(max_examples=150, deadline=None)

_WEIGHTS = {
    "model": {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2), "bn.num": np.array([3], dtype=">i8")},
    "scalar": np.float64(2.5), "ordered": collections.OrderedDict(a=[1, 2]), "tags": {"x"}, "__author__": "fuzz",
}
_VALID = [pickle.dumps(_WEIGHTS, protocol=p) for p in range(6)]

# Pieces of pickles: opcodes with plausible arguments, globals allowed and refused, huge counts.
_GLOBALS = [b"numpy\nndarray\n", b"numpy\ndtype\n", b"numpy.core.multiarray\n_reconstruct\n",
            b"numpy._core.multiarray\nscalar\n", b"_codecs\nencode\n", b"collections\nOrderedDict\n",
            b"__builtin__\nset\n", b"builtins\nbytes\n", b"os\nsystem\n", b"builtins\neval\n", b"numpy\nfromfile\n"]
_pieces = st.one_of(
    st.sampled_from([b"N", b"\x88", b"\x89", b"(", b")", b"]", b"}", b"\x8f", b"t", b"\x85", b"\x86", b"\x87",
                     b"l", b"d", b"a", b"e", b"s", b"u", b"\x90", b"\x91", b"0", b"1", b"2", b"R", b"b", b".",
                     b"\x94", b"\x93", b"o", b"\x81", b"\x82\x01", b"Q", b"\x97"]),
    st.sampled_from(_GLOBALS).map(lambda g: b"c" + g),
    st.integers(0, 2**32 - 1).map(lambda i: b"J" + struct.pack("<I", i)),
    st.integers(0, 255).flatmap(lambda i: st.sampled_from([b"h", b"q", b"K"]).map(lambda op: op + bytes([i]))),
    st.integers(0, 2**32 - 1).flatmap(lambda i: st.sampled_from([b"j", b"r"]).map(lambda op: op + struct.pack("<I", i))),
    st.binary(max_size=12).map(lambda b: b"C" + bytes([len(b)]) + b),
    st.binary(max_size=12).map(lambda b: b"B" + struct.pack("<I", len(b)) + b),
    st.integers(0, 2**63).map(lambda n: b"\x8e" + struct.pack("<Q", n) + b"abc"),
    st.integers(0, 2**63).map(lambda n: b"\x95" + struct.pack("<Q", n)),
    st.text(max_size=8).map(lambda t: b"X" + struct.pack("<I", len(t.encode())) + t.encode()),
    st.sampled_from(["f4", "O8", "V4", "U2", "<f8", "b1"]).map(lambda t: b"X" + struct.pack("<I", len(t)) + t.encode()),
)
random_pickles = st.builds(
    lambda proto, pieces: bytes([0x80, proto]) + b"".join(pieces),
    st.integers(0, 5), st.lists(_pieces, max_size=40),
)


@st.composite
def edited_pickles(draw):
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if kind == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(_pieces)
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


def _plain(value, depth=0):
    """Whether `value` holds only plain containers, strings, numbers and numeric arrays."""
    if isinstance(value, (np.ndarray, np.generic)):
        return not value.dtype.hasobject and value.dtype.kind in "biuf"
    if isinstance(value, dict):
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items()) if depth < 50 else True
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_plain(v, depth + 1) for v in value) if depth < 50 else True
    return isinstance(value, (str, bytes, bytearray, int, float, type(None)))


def _check(data: bytes) -> None:
    tracemalloc.start()
    try:
        try:
            loaded = load_numpy_pickle(io.BytesIO(data), "fuzz.pkl")
        except UnsafePickleError as e:
            assert "fuzz.pkl" in str(e) and "\n" not in str(e)
        else:
            assert _plain(loaded)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20 + 64 * len(data)


@SETTINGS
@given(edited_pickles())
def test_edited_weights_pickles_load_or_are_refused_in_bounded_memory(data):
    _check(data)


@SETTINGS
@given(random_pickles)
def test_random_opcode_sequences_load_or_are_refused_in_bounded_memory(data):
    _check(data)
