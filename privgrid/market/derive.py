"""What an agent can work out about its partner from what it legitimately holds (protocol.md §7.1).

After a round, agent n holds, per partner m: its own new price ``λ_nm(k+1) = A_nm + B_mn`` (it
decrypted or added it) and its own share ``A_nm``, so it knows m's share
``B_mn = λ_nm(k+1) − A_nm`` exactly (an integer difference in fixed point). Since
``B_mn = ρβ λ_mn(k) − ρα P̄_mn(k)`` and n verified ``λ_mn(k)`` the round before, it gets m's
extrapolated trade ``P̄_mn(k)``, and by the public recursion m's trade itself:

    P_mn(k+1) = P_mn(k) + (ρ/2)(P̄_mn(k) − P_mn(k)),   P̂_mn = (P̄_mn + P_mn(k)) / 2

(``P̂``, the point before over-relaxation, is the one that respects m's bounds exactly).

This is Theorem 1 — the two-party computation hides nothing from the counterparty — and it
is also what the pair checks (I4) and the masked LM leg's reciprocity residual are built on.
The same functions run in the agents and in the in-process negotiation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privgrid.market.fixedpoint import RESOLUTION, decode


@dataclass(frozen=True)
class PartnerView:
    """Per partner, what n derived about m's side of the pair this round."""

    extrapolated: np.ndarray  # P̄_mn(k)
    target: np.ndarray  # P̂_mn(k+1): the partner's unrelaxed new trade
    trades: np.ndarray  # P_mn(k+1)


def partner_shares(own_price_fixed: np.ndarray, own_share_fixed: np.ndarray) -> np.ndarray:
    """``B_mn = λ_nm(k+1) − A_nm`` (fixed point, exact) → as reals."""
    return decode(np.asarray(own_price_fixed, dtype=np.int64) - own_share_fixed)


def derive_partner(
    partner_shares_: np.ndarray,
    partner_prices_old: np.ndarray,
    partner_trades_old: np.ndarray,
    alpha: float,
    beta: float,
    rho: float,
) -> PartnerView:
    """m's P̄, P̂ and new P from its share ``B_mn`` and its price of the round before."""
    bar = (rho * beta * partner_prices_old - partner_shares_) / (rho * alpha)
    target = 0.5 * (bar + partner_trades_old)
    trades = partner_trades_old + 0.5 * rho * (bar - partner_trades_old)
    return PartnerView(bar, target, trades)


def invariant_tolerance(beta: float, rho: float) -> float:
    """Largest honest gap |λ_nm − λ_mn| (with a factor 2 to spare).

    The gap contracts by ``|1 − 2ρβ|`` a round and gains at most 2^-31 of fixed-point rounding
    (each price is a sum of two shares rounded to 2^-33), so it stays below
    ``2^-31 / (1 − |1 − 2ρβ|)``: 2^-30 at the default β = ¼ (protocol.md §4.4's figure), but
    2.3e-9 at β = 0.1 — which is why the tolerance is computed from β and ρ (and set at twice
    the bound) rather than fixed at 2^-30, which would flag honest runs at small β.
    """
    contraction = abs(1.0 - 2.0 * rho * beta)
    return 2.0 * (2 * RESOLUTION) / (1.0 - contraction)


@dataclass(frozen=True)
class PairCheckFailure:
    partner_index: int
    reason: str


def pair_checks(
    own_prices: np.ndarray,
    partner_prices: np.ndarray,
    partner_targets: np.ndarray,
    partner_lo: np.ndarray,
    partner_hi: np.ndarray,
    beta: float,
    rho: float,
    active: np.ndarray,
    range_tolerance: float = 1e-6,
) -> list[PairCheckFailure]:
    """I4 (protocol.md §4.4) for every active partner, after both directions are verified.

    1. invariant: the pair's two proven prices are equal, within :func:`invariant_tolerance`;
    2. the partner's derived trade lies in its registered trade range (± ``range_tolerance``).
    If 1 holds, the partner's two shares are the honest shares of *some* single trade, and 2
    bounds that trade: together they stop price injection (choosing shares freely).
    """
    failures = []
    tolerance = invariant_tolerance(beta, rho)
    for i in np.flatnonzero(active):
        gap = abs(float(own_prices[i] - partner_prices[i]))
        if gap > tolerance:
            failures.append(
                PairCheckFailure(
                    int(i),
                    f"pair price invariant broken: |λ_nm − λ_mn| = {gap:.3g} > {tolerance:.3g}",
                )
            )
            continue
        q = float(partner_targets[i])
        lo, hi = float(partner_lo[i]), float(partner_hi[i])
        if not lo - range_tolerance <= q <= hi + range_tolerance:
            failures.append(
                PairCheckFailure(
                    int(i),
                    f"derived trade {q:.6g} kW outside the registered range [{lo:g}, {hi:g}]",
                )
            )
    return failures
