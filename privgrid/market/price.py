"""Step 2 of a round: the two price shares and their combination (algorithm.md §5.3).

Each party computes both shares from its own values only. ``λ_nm^{k+1} = A_nm + B_mn``: the
owner n contributes ``A_nm``, the peer m contributes ``B_mn``. Shares travel in fixed point
(scale 2^32) in every privacy mode — as a sealed integer in plain mode, as a Paillier plaintext
in secure mode — and the combination is an integer sum, so both modes give the same price.
"""

from __future__ import annotations

import numpy as np

from privgrid.market.fixedpoint import decode, encode


def price_shares(
    prices: np.ndarray, extrapolated: np.ndarray, alpha: float, beta: float, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """``A = (1 − ρβ)λ − ραP̄`` (own new price) and ``B = ρβλ − ραP̄`` (partner's new price).

    Elementwise, so computing all trades at once or one agent at a time gives the same bits.
    """
    innovation = rho * alpha * extrapolated
    own = (1.0 - rho * beta) * prices - innovation
    peer = rho * beta * prices - innovation
    return own, peer


def share_to_fixed(shares: np.ndarray) -> np.ndarray:
    """Shares → int64 fixed point, the form in which they enter the two-party computation."""
    return encode(shares)


def combine_fixed(own: np.ndarray, peer: np.ndarray) -> np.ndarray:
    """``λ^{k+1} = decode(X_A + X_B)``: the sum of the two fixed-point shares."""
    return decode(np.asarray(own, dtype=np.int64) + np.asarray(peer, dtype=np.int64))
