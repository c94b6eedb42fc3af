"""Unambiguous byte encodings shared by every hash, KDF input and associated data.

protocol.md §1 fixes the conventions: ``lp(b)`` is a 4-byte big-endian length followed by
``b``; integers are minimal big-endian bytes; ciphertexts on the wire are fixed-length. Every
transcript hashed or authenticated in this package is a concatenation of ``lp`` fields, so no
two different field lists give the same bytes (no ``"ab" ‖ "c"`` = ``"a" ‖ "bc"`` collisions).

Choices where the spec is silent:
- the minimal encoding of 0 is the empty string (``(x.bit_length() + 7) // 8`` bytes, as
  Python's ``int.to_bytes`` computes it); inside ``lp`` this is unambiguous;
- text (run ids, participant ids, kinds) is UTF-8; a round number k is ``str(k)`` in ASCII
  decimal, as the ZKP context of §5.3 writes it.
"""

from __future__ import annotations

from collections.abc import Iterable

_MAX_FIELD = (1 << 32) - 1


def lp(data: bytes | str) -> bytes:
    """Length-prefix one field: 4-byte big-endian length, then the bytes (str → UTF-8)."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > _MAX_FIELD:
        raise ValueError(f"field too long for a 4-byte length prefix: {len(raw)} bytes")
    return len(raw).to_bytes(4, "big") + raw


def lp_all(fields: Iterable[bytes | str]) -> bytes:
    """``lp(f1) ‖ lp(f2) ‖ …``: the canonical encoding of an ordered list of fields."""
    return b"".join(lp(f) for f in fields)


def int_to_bytes(value: int) -> bytes:
    """Minimal big-endian bytes of a non-negative integer (0 → b"")."""
    if value < 0:
        raise ValueError(f"cannot encode a negative integer as unsigned bytes: {value}")
    return int(value).to_bytes((int(value).bit_length() + 7) // 8, "big")


def int_to_fixed(value: int, length: int) -> bytes:
    """Big-endian bytes of exactly ``length`` bytes (for wire values whose size is public)."""
    if value < 0 or int(value).bit_length() > 8 * length:
        raise ValueError(f"integer does not fit in {length} unsigned bytes")
    return int(value).to_bytes(length, "big")


def int_from_bytes(data: bytes) -> int:
    """Big-endian unsigned bytes → int."""
    return int.from_bytes(data, "big")
