"""Canonical msgpack: one encoding per value, strict decoding, no floats."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privgrid.ledger.encoding import INT64_MAX, INT64_MIN, decode, encode, from_fixed, to_fixed
from privgrid.ledger.errors import EncodingError
from privgrid.market.fixedpoint import quantise_scalar

scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
@settings(max_examples=150, deadline=None)
def test_round_trip_is_identity(value):
    data = encode(value)
    decoded = decode(data)
    assert decoded == value
    assert encode(decoded) == data


@given(st.dictionaries(st.text(max_size=6), st.integers(-5, 5), min_size=2, max_size=8))
def test_key_order_does_not_matter(mapping):
    reversed_mapping = dict(reversed(list(mapping.items())))
    assert encode(mapping) == encode(reversed_mapping)


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_random_bytes_decode_or_raise_encoding_error(data):
    try:
        value = decode(data)
    except EncodingError:
        return
    assert encode(value) == data


@pytest.mark.parametrize("value", [1.5, {"a": [0.0]}, np.float64(2.0), {"x": {"y": math.nan}}])
def test_floats_are_refused(value):
    with pytest.raises(EncodingError, match="float"):
        encode(value)


@pytest.mark.parametrize("value", [1 << 63, -(1 << 63) - 1, {1: 2}, {b"k": 1}, object(), {1.0}])
def test_unencodable_values(value):
    with pytest.raises(EncodingError):
        encode(value)


def test_tuples_and_numpy_ints_encode_as_lists_and_ints():
    assert encode((1, np.int64(2))) == encode([1, 2])


def _map(*pairs: tuple[bytes, bytes]) -> bytes:
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


P = msgpack.packb
BAD = {
    "unsorted keys": _map((P("b"), P(1)), (P("a"), P(2))),
    "duplicate keys": _map((P("a"), P(1)), (P("a"), P(2))),
    "float64": P(1.5),
    "float32": b"\xca" + b"\x3f\xc0\x00\x00",
    "nested float": P({"a": [1, 2.0]}),
    "int16 for a fixint": b"\xd1\x00\x01",
    "uint8 for a fixint": b"\xcc\x05",
    "str8 for a fixstr": b"\xd9\x01a",
    "array16 for a fixarray": b"\xdc\x00\x01\x01",
    "trailing bytes": P(1) + P(2),
    "truncated": P("hello")[:-1],
    "extension type": b"\xd4\x01\x00",
    "invalid utf-8": b"\xa2\xff\xfe",
    "int key": b"\x81\x01\x01",
    "bytes key": b"\x81\xc4\x01k\x01",
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_non_canonical_bytes_are_refused(name):
    with pytest.raises(EncodingError):
        decode(BAD[name])


def test_decode_refuses_oversized_input():
    with pytest.raises(EncodingError, match="exceed"):
        decode(encode("x" * 100), max_bytes=50)


@given(st.floats(-1e6, 1e6))
def test_fixed_point_is_exact_on_the_grid(x):
    q = quantise_scalar(x)
    assert from_fixed(to_fixed(q)) == q


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2.0**31, True, "1.0", None])
def test_fixed_point_refuses_bad_reals(bad):
    with pytest.raises(EncodingError):
        to_fixed(bad, "x")
