"""Fixed-point resolution of every value that crosses a process (algorithm.md §7, protocol.md §3).

One scale for everything: ``2^32`` (32 fractional bits, q = 2^-32 ≈ 2.3e-10). The protocol
needs this scale for the Paillier plaintexts; using it for trades, charges and residuals too
means one codec serves every mode, so a plain run and a Paillier run compute bit-identical
prices, and the in-process negotiation computes exactly what the processes compute.
(algorithm.md suggests q = 1e-6 with q ≤ ε/100; 2^-32 satisfies that for any ε ≥ 2.3e-8.)

Scaling by a power of two is exact in float64, so ``encode`` is exact rounding
(half to even, as Python's ``round``); ``decode`` is exact for |x| < 2^21.
"""

from __future__ import annotations

import numpy as np

SCALE_BITS = 32
SCALE = 1 << SCALE_BITS
RESOLUTION = 1.0 / SCALE
#: Inputs must satisfy |v| < 2^31 (protocol.md §3), so encoded values fit in int64.
LIMIT = float(1 << 31)


class FixedPointRangeError(ValueError):
    """A value is too large (or not finite) to encode."""


def encode(values: np.ndarray) -> np.ndarray:
    """Real values → int64 at scale 2^32. Raises on |v| ≥ 2^31 or NaN."""
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.abs(arr) < LIMIT):  # also catches NaN
        raise FixedPointRangeError(f"value out of fixed-point range (|v| < 2^31): {arr}")
    return np.rint(arr * SCALE).astype(np.int64)


def fixed_tuple(values: np.ndarray) -> tuple[int, ...]:
    """Real values → Python ints at scale 2^32 (a message body's fixed-point vector)."""
    return tuple(int(x) for x in encode(values))


def decode(fixed: np.ndarray) -> np.ndarray:
    """int64 at scale 2^32 → float64."""
    return np.asarray(fixed, dtype=np.int64).astype(np.float64) * RESOLUTION


def quantise(values: np.ndarray) -> np.ndarray:
    """Round to the 2^-32 grid: what a value becomes after it has crossed a process."""
    return decode(encode(values))


def encode_scalar(value: float) -> int:
    """One real value → Python int at scale 2^32 (for big-integer arithmetic)."""
    return int(encode(np.array([value]))[0])


def decode_scalar(fixed: int) -> float:
    return float(fixed) * RESOLUTION


def quantise_scalar(value: float) -> float:
    return decode_scalar(encode_scalar(value))
