"""Step 3 of a round: the Line Manager's projected dual ascent on line limits (algorithm.md §5.3).

Inputs are what the LM may hold: every trade (or, with masked aggregation, only the flows),
the public flow matrix ``G`` (``g_l,nm = ½ φ_l,nm``) of the limited lines, the limits and its
private step σ. Line prices and charges are quantised: they cross to the agents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privgrid.market.agent_step import extrapolate
from privgrid.market.fixedpoint import quantise, quantise_scalar


@dataclass(frozen=True)
class LinePrices:
    """``η⁺`` (for ``F ≤ Fmax``) and ``η⁻`` (for ``−F ≤ Fmax``), one entry per limited line."""

    up: np.ndarray
    down: np.ndarray

    @classmethod
    def zero(cls, lines: int) -> LinePrices:
        return cls(np.zeros(lines), np.zeros(lines))


@dataclass(frozen=True)
class LineStep:
    prices: LinePrices  # η^{k+1}
    flows: np.ndarray  # F(P̄) on the limited lines, the flows the prices respond to
    line_residual: float  # r_L (kW)


#: The adaptive steps' line budget ``τσ‖G_L‖₂²`` (docs/market.md "Step sizes"): 0.9 of the
#: bound ½, the same margin as the published formula.
LINE_BUDGET = 0.45


def lm_step_size(G: np.ndarray, tau: float, alpha: float, steps: str = "fixed") -> float:
    """The LM step σ for the base steps ``τ, α`` (docs/market.md "Step sizes").

    ``"fixed"``: ``σ = 0.9 (1/τ − 2α) / (2 ‖G_L‖₂²)``, algorithm.md §5.1 — inside the sum bound
    ``τ(2α + 2σ‖G_L‖²) < 1`` with margin (the published parameters, reproduced bit for bit).
    ``"adaptive"``: ``σ = LINE_BUDGET / (τ ‖G_L‖₂²)``, inside the exact condition
    ``τ·max(2α, 2σ‖G_L‖²) < 1``: the price rows and the line rows of the constraint matrix act
    on orthogonal parts of the trade vector, so the two budgets do not add up.
    """
    norm = float(np.linalg.norm(G, 2)) if G.size else 0.0
    if norm == 0.0:
        return 0.0
    if steps == "adaptive":
        return LINE_BUDGET / (tau * norm * norm)
    return 0.9 * (1.0 / tau - 2.0 * alpha) / (2.0 * norm * norm)


def charges_for(G_columns: np.ndarray, prices: LinePrices) -> np.ndarray:
    """Congestion charges ``c_nm = Σ_l g_l,nm (η⁺_l − η⁻_l)`` for the given trade columns.

    Summed line by line (axis 0), so the bits of a trade's charge do not depend on which other
    trades are computed with it: the LM computing all charges and an agent computing only its
    own get the same numbers.
    """
    if G_columns.shape[0] == 0:
        return np.zeros(G_columns.shape[1])
    return quantise((G_columns * (prices.up - prices.down)[:, None]).sum(axis=0))


def line_update(
    flows_bar: np.ndarray,
    fmax: np.ndarray,
    sigma: float,
    rho: float,
    prices: LinePrices,
    flows_new: np.ndarray,
) -> LineStep:
    """Projected dual ascent from the extrapolated flows ``F̄``, then over-relaxation.

    ``flows_new`` = F(P^{k+1}) (for the overload residual). Works from flows alone, so the LM
    can run it on a masked aggregate of flows without ever seeing a trade.
    """
    up_hat = np.maximum(0.0, prices.up + sigma * (flows_bar - fmax))
    down_hat = np.maximum(0.0, prices.down + sigma * (-flows_bar - fmax))
    new = LinePrices(
        quantise(prices.up + rho * (up_hat - prices.up)),
        quantise(prices.down + rho * (down_hat - prices.down)),
    )
    if fmax.size == 0:
        return LineStep(new, flows_bar, 0.0)
    overload = float(np.max(np.maximum(np.abs(flows_new) - fmax, 0.0)))
    movement = max(
        float(np.max(np.abs(up_hat - prices.up))), float(np.max(np.abs(down_hat - prices.down)))
    )
    residual = max(overload, movement / sigma if sigma > 0 else 0.0)
    return LineStep(new, flows_bar, quantise_scalar(residual))


def lm_step(
    G: np.ndarray,
    fmax: np.ndarray,
    sigma: float,
    rho: float,
    prices: LinePrices,
    old_trades: np.ndarray,
    new_trades: np.ndarray,
) -> LineStep:
    """The LM step when it holds every trade (published design, protocol.md §6.2)."""
    bar = extrapolate(old_trades, new_trades, rho)
    return line_update(G @ bar, fmax, sigma, rho, prices, G @ new_trades)


def reciprocity_residual(trades: np.ndarray, mirror: np.ndarray) -> float:
    """``r_P = max |P_nm + P_mn|`` over all pairs (kW)."""
    if trades.size == 0:
        return 0.0
    return float(np.max(np.abs(trades + trades[mirror])))


# --- I5, masked aggregation (protocol.md §6.2): the LM learns line flows, never a trade --------
MASK_MODULUS = 1 << 64


def flow_contribution(G_columns: np.ndarray, extrapolated: np.ndarray) -> np.ndarray:
    """One agent's share of the extrapolated flows, ``f_n = G[:, slots of n] · P̄_n``, in fixed
    point (int64, scale 2^32). The agent adds its pairwise masks before sending it."""
    if G_columns.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    from privgrid.market.fixedpoint import encode

    return encode((G_columns * extrapolated[None, :]).sum(axis=1))


def aggregate_flows(contributions: Sequence[np.ndarray | Sequence[int]]) -> np.ndarray:
    """``F̄ = Σ_n y_n mod 2^64``, decoded as signed fixed point. The pairwise masks in the
    ``y_n`` cancel in the sum, so masked and unmasked contributions give the same bits."""
    from privgrid.market.fixedpoint import decode

    if not contributions:
        return np.zeros(0)
    lines = len(contributions[0])
    totals = []
    for line in range(lines):
        total = sum(int(c[line]) for c in contributions) % MASK_MODULUS
        totals.append(total - MASK_MODULUS if total >= MASK_MODULUS // 2 else total)
    return decode(np.array(totals, dtype=np.int64))


def relaxed_flows(old: np.ndarray, extrapolated: np.ndarray, rho: float) -> np.ndarray:
    """``F(P^{k+1}) = F(P^k) + (ρ/2)(F̄ − F(P^k))``: the flows of the new trades, which the LM
    tracks itself (it is linear in the trades) instead of receiving a second masked vector."""
    flows: np.ndarray = old + 0.5 * rho * (extrapolated - old)
    return flows
