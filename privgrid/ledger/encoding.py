"""Canonical msgpack and SHA-256: the byte form every block and vote is hashed and signed in.

Why canonical: a block's hash is its identity and votes sign that hash, so the same block must
always produce the same bytes — on every participant, in every Python version, after a round
trip through the database. The rules:

- allowed values: ``None``, ``bool``, ``int`` in the int64 range, ``str`` (UTF-8), ``bytes``
  (msgpack bin), lists (tuples encode as lists) and maps with ``str`` keys;
- maps are written with their keys in ascending code-point order (= UTF-8 byte order);
- **no floats**: every real number is an int64 at the fixed-point scale 2^32 of
  :mod:`privgrid.market.fixedpoint` (floats have several encodings and platform-dependent
  formatting; integers have exactly one);
- msgpack's smallest encoding of every int, string, bin, array and map header (what the
  reference packer always writes).

Decoding stored or received bytes is strict: unsorted or duplicate keys, floats, extension
types, trailing bytes and any non-minimal form are rejected. The last check is simply
"re-encoding the decoded value gives the input bytes back", so decode∘encode is the identity
on everything :func:`decode` accepts.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from privgrid.ledger.errors import EncodingError
from privgrid.market.fixedpoint import FixedPointRangeError, decode_scalar, encode_scalar

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
HASH_BYTES = 32


def _canonical(value: Any, path: str) -> Any:
    """A copy of ``value`` with sorted maps, or :class:`EncodingError` naming the bad spot."""
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise EncodingError(f"{path}: integer {value} does not fit in int64")
        return value
    if isinstance(value, float | np.floating):
        raise EncodingError(f"{path}: floats are not allowed; encode reals as fixed point")
    if isinstance(value, list | tuple):
        return [_canonical(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise EncodingError(f"{path}: map key {key!r} is not a string")
        return {k: _canonical(value[k], f"{path}.{k}") for k in sorted(value)}
    raise EncodingError(f"{path}: type {type(value).__name__} cannot be encoded")


def encode(value: Any) -> bytes:
    """Canonical msgpack bytes of ``value`` (see the module docstring for the rules)."""
    return msgpack.packb(_canonical(value, "$"), use_bin_type=True)


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    for key in keys:
        if not isinstance(key, str):
            raise EncodingError(f"map key {key!r} is not a string")
    for before, after in itertools.pairwise(keys):
        if before == after:
            raise EncodingError(f"duplicate map key {after!r}")
        if before > after:
            raise EncodingError(f"map keys not sorted: {before!r} before {after!r}")
    return dict(pairs)


def _no_ext(code: int, data: bytes) -> Any:
    raise EncodingError(f"msgpack extension type {code} is not allowed")


def _no_floats(value: Any, path: str = "$") -> None:
    if isinstance(value, float):
        raise EncodingError(f"{path}: float {value!r} in stored data (reals must be fixed point)")
    if isinstance(value, list):
        for i, v in enumerate(value):
            _no_floats(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_floats(v, f"{path}.{k}")


def decode(data: bytes, *, max_bytes: int = 1 << 26) -> Any:
    """Strictly decode canonical msgpack; anything non-canonical is an :class:`EncodingError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncodingError(f"expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > max_bytes:
        raise EncodingError(f"{len(raw)} bytes exceed the limit of {max_bytes}")
    try:
        value = msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=_pairs_hook,
            ext_hook=_no_ext,
        )
    except EncodingError:
        raise
    except (ValueError, OverflowError, msgpack.UnpackException) as exc:
        raise EncodingError(f"not valid msgpack: {exc}") from exc
    _no_floats(value)
    if encode(value) != raw:
        raise EncodingError("not the canonical encoding (a value or header is not minimal)")
    return value


def sha256(data: bytes) -> bytes:
    """The 32-byte SHA-256 digest (block hashes, ledger id)."""
    return hashlib.sha256(bytes(data)).digest()


def to_fixed(value: float, what: str = "value") -> int:
    """A real number as an int64 at scale 2^32 (exact rounding; |value| < 2^31)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise EncodingError(f"{what}: expected a real number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise EncodingError(f"{what}: {number} is not finite")
    try:
        return encode_scalar(number)
    except FixedPointRangeError as exc:
        raise EncodingError(
            f"{what}: {number} is outside the fixed-point range |v| < 2^31"
        ) from exc


def from_fixed(fixed: int) -> float:
    """The real number an int64 at scale 2^32 stands for."""
    return decode_scalar(fixed)
