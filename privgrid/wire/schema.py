"""A tiny, strict schema checker for message bodies.

Bodies are small msgpack maps of ints, floats, strings, bytes and lists of them. A schema is a
dict ``field → Spec``; :func:`check` verifies the exact key set and each value, and raises
:class:`~privgrid.wire.envelope.Rejected` naming the field. No coercion: a float where an int is
expected is an error, and so is a bool (msgpack distinguishes them; Python's bool is an int).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from privgrid.wire.envelope import Rejected

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_LIST = 100_000


@dataclass(frozen=True)
class Spec:
    """How to check one value. ``check`` returns an error text or ``None``."""

    check: Callable[[Any], str | None]
    optional: bool = False


def _int64(value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return "must be an integer"
    if not INT64_MIN <= value <= INT64_MAX:
        return "integer out of 64-bit range"
    return None


def _uint64(value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return "must be an integer"
    return None if 0 <= value < (1 << 64) else "not an unsigned 64-bit integer"


def _non_negative_int64(value: Any) -> str | None:
    error = _int64(value)
    if error is None and value < 0:
        return "must not be negative"
    return error


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be a boolean"


def _float(value: Any) -> str | None:
    ok = isinstance(value, float | int) and not isinstance(value, bool)
    return None if ok else "must be a number"


#: The longest free text a message may carry (a reason, a violation's description).
TEXT_LIMIT = 1000


def fit_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to what a TEXT field accepts, ending in "…" when cut: a sender's long
    reason (every participant's rejection of a block, say) must still be a valid message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(max_len: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        return None if len(value) <= max_len else f"longer than {max_len} characters"

    return check


def _bytes(exact: int | None = None, max_len: int = 1 << 20) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, bytes):
            return "must be bytes"
        if exact is not None and len(value) != exact:
            return f"must be {exact} bytes (got {len(value)})"
        return None if len(value) <= max_len else f"longer than {max_len} bytes"

    return check


def _list(
    item: Callable[[Any], str | None], max_len: int = MAX_LIST
) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return "must be a list"
        if len(value) > max_len:
            return f"list longer than {max_len}"
        for i, element in enumerate(value):
            error = item(element)
            if error:
                return f"[{i}] {error}"
        return None

    return check


def pair_list(value: Any) -> str | None:
    """A list of [id, id] pairs (e.g. pairs removed from the market)."""
    if not isinstance(value, list) or len(value) > MAX_LIST:
        return "must be a list of pairs"
    for item in value:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
        ):
            return "must be a list of [id, id] pairs"
    return None


#: A throwaway key to probe announced X25519 keys with (see :func:`_x25519_public`).
_PROBE = X25519PrivateKey.generate()


def _x25519_public(value: Any) -> str | None:
    """32 bytes that are a usable X25519 public key.

    A low-order point gives the all-zero shared secret with *every* private key (clamped
    scalars are multiples of the cofactor), so one probe exchange decides it. Refused here, at
    the announcement, because once accepted every later seal to that peer would fail.
    """
    error = _bytes(32)(value)
    if error is not None:
        return error
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(value))
    except ValueError:
        return "is a low-order X25519 point (no shared secret with anyone)"
    return None


def _map(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a map"


def _number_map(value: Any) -> str | None:
    if not isinstance(value, dict) or len(value) > 100:
        return "must be a map of at most 100 entries"
    for key, item in value.items():
        if not isinstance(key, str) or _float(item) is not None:
            return f"entry {key!r} must map a name to a number"
    return None


INT64 = Spec(_int64)
NON_NEGATIVE = Spec(_non_negative_int64)
BOOL = Spec(_bool)
NUMBER = Spec(_float)
TEXT = Spec(_text(TEXT_LIMIT))
ID = Spec(_text(32))
MAP_LIST = Spec(_list(_map, 10_000))
NUMBER_MAP = Spec(_number_map)
INT64_LIST = Spec(_list(_int64))
UINT64_LIST = Spec(_list(_uint64))
X25519_PUBLIC = Spec(_x25519_public)


def text_list(exact: int | None = None, max_len: int = MAX_LIST) -> Spec:
    inner = _list(_text(200), max_len if exact is None else exact)

    def check(value: Any) -> str | None:
        error = inner(value)
        if error is None and exact is not None and len(value) != exact:
            return f"must have exactly {exact} items"
        return error

    return Spec(check)


def int_range(low: int, high: int) -> Spec:
    """An integer in ``[low, high]``."""

    def check(value: Any) -> str | None:
        error = _int64(value)
        if error is None and not low <= value <= high:
            return f"must be in [{low}, {high}] (got {value})"
        return error

    return Spec(check)


def blob(exact: int | None = None, max_len: int = 1 << 20) -> Spec:
    return Spec(_bytes(exact, max_len))


def blob_list(max_len: int = 1024, item_max: int = 1 << 16) -> Spec:
    return Spec(_list(_bytes(None, item_max), max_len))


def optional(spec: Spec) -> Spec:
    return Spec(spec.check, optional=True)


def check(
    body: Any, schema: Mapping[str, Spec], *, kind: str, sender: str | None
) -> dict[str, Any]:
    """Return ``body`` if it matches ``schema`` exactly, else raise :class:`Rejected`."""
    if not isinstance(body, dict):
        raise Rejected(f"{kind} body is not a map", sender)
    required = {name for name, spec in schema.items() if not spec.optional}
    missing = required - set(body)
    unknown = set(body) - set(schema)
    if missing or unknown:
        raise Rejected(
            f"{kind} body fields: missing {sorted(missing)}, unknown {sorted(map(str, unknown))}",
            sender,
        )
    for name, value in body.items():
        error = schema[name].check(value)
        if error:
            raise Rejected(f"{kind}.{name} {error}", sender)
    return body
