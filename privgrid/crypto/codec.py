"""Fixed-point plaintexts for Paillier (protocol.md §3).

A real ``v`` travels as ``X = round(v · 2^32)`` — the project-wide codec
:func:`privgrid.market.fixedpoint.encode_scalar`, reused here so that a Paillier run and a
plain run round identically. The Paillier plaintext is the residue ``X mod N``; decoding maps
``m ≤ N/2`` to ``m`` and ``m > N/2`` to ``m − N`` (for odd N, "≤ N/2" is ``m ≤ N // 2``).

Why phe's own encoding is not used: ``EncodedNumber.encode`` chooses the exponent from the
value's magnitude and the exponent travels in clear, which leaks the magnitude. Here the scale
is fixed (2^-32, i.e. phe's base 16 with exponent −8) and never travels.

Bounds:
- at input ``|v| < 2^31`` (so ``|X| < 2^63``), enforced by ``encode_scalar``;
- after decryption ``|X| < 2^128`` (:data:`MAX_ABS_PLAINTEXT`). This leaves room for sums and
  scale-2^64 products (§3, §4.5) and is part of the ZKP's soundness argument (§5.4): a
  decryption outside it is rejected even if the proof verifies.
"""

from __future__ import annotations

from privgrid.crypto.errors import PlaintextError
from privgrid.market.fixedpoint import FixedPointRangeError, decode_scalar, encode_scalar

#: Largest accepted magnitude of a decrypted fixed-point integer (exclusive), §3 and §5.4.
MAX_ABS_PLAINTEXT = 1 << 128


def encode_real(value: float) -> int:
    """Real → fixed-point integer X at scale 2^32. Raises on ``|v| ≥ 2^31``, NaN or inf."""
    try:
        return encode_scalar(value)
    except (FixedPointRangeError, OverflowError, TypeError, ValueError) as exc:
        raise PlaintextError(f"cannot encode {value!r}: |v| must be < 2^31 and finite") from exc


def decode_real(fixed: int) -> float:
    """Fixed-point integer X → real (``X · 2^-32``)."""
    return decode_scalar(fixed)


def to_residue(fixed: int, n: int) -> int:
    """Signed integer X → plaintext residue ``X mod N``; requires ``|X| ≤ N // 2``."""
    if abs(fixed) > n // 2:
        raise PlaintextError(f"|X| is too large for modulus N ({fixed.bit_length()} bits)")
    return fixed % n


def from_residue(residue: int, n: int) -> int:
    """Plaintext residue in ``[0, N)`` → signed integer (``m > N/2`` means ``m − N``)."""
    if not 0 <= residue < n:
        raise PlaintextError("plaintext residue must satisfy 0 ≤ m < N")
    return residue if residue <= n // 2 else residue - n


def check_range(fixed: int, max_abs: int = MAX_ABS_PLAINTEXT) -> int:
    """Return X if ``|X| < max_abs`` (default 2^128), else raise :class:`PlaintextError`."""
    if abs(fixed) >= max_abs:
        raise PlaintextError(
            f"decrypted value out of range: |X| has {abs(fixed).bit_length()} bits, "
            f"limit is {max_abs.bit_length() - 1} bits"
        )
    return fixed


def decode_residue(residue: int, n: int, max_abs: int = MAX_ABS_PLAINTEXT) -> int:
    """Decrypted residue → signed X, rejecting ``|X| ≥ max_abs`` (what a receiver must do)."""
    return check_range(from_residue(residue, n), max_abs)
