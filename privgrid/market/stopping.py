"""Step 4 of a round: the Market Operator's stopping test (algorithm.md §5.3).

All four residuals are needed: the agents keep their own bounds exactly, so a small ``r_d``
alone proves nothing about reciprocity, and a small ``r_P`` alone says nothing about prices.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Residuals:
    """The residuals of one round."""

    reciprocity: float  # r_P = max |P_nm + P_mn|, kW (from the LM)
    line: float  # r_L: line overload and line-price movement, kW (from the LM)
    dual: float  # max_n r_d,n: how far prices are from supporting the trades, $/kW (agents)
    consensus: float  # r_C = max |λ_nm − λ_mn|, $/kW (agents, from their pairs)

    def as_dict(self) -> dict[str, float]:
        return {
            "r_P": self.reciprocity,
            "r_L": self.line,
            "r_d": self.dual,
            "r_C": self.consensus,
        }


@dataclass(frozen=True)
class AgentReport:
    """What one agent reports after a round, all of it from its own pairs: its dual residual
    ``r_d,n``, the price gap ``max |λ_nm − λ_mn|`` and — only with the masked LM leg, where
    the LM never sees a trade — the trade mismatch ``max |P_nm + P_mn|`` (else None)."""

    dual: float
    consensus: float
    reciprocity: float | None = None


def round_residuals(
    agents: Collection[AgentReport], line: float, reciprocity: float | None
) -> Residuals:
    """The round's residuals from every agent's report and the LM's ``r_L`` and ``r_P``.

    The one aggregation of the MO and of the in-process negotiation, so that both stop on the
    same numbers. ``reciprocity`` None (masked LM leg): ``r_P`` is the largest the agents
    report, and infinite if any agent reported none — the run must not stop without it.
    """
    if reciprocity is None:
        reported = [a.reciprocity for a in agents]
        reciprocity = (
            math.inf
            if not reported or any(r is None for r in reported)
            else max(r for r in reported if r is not None)
        )
    return Residuals(
        reciprocity=reciprocity,
        line=line,
        dual=max(a.dual for a in agents),
        consensus=max(a.consensus for a in agents),
    )


def converged(res: Residuals, epsilon_p: float, epsilon_lambda: float) -> bool:
    """Stop when ``r_P, r_L ≤ ε_P`` and ``r_d, r_C ≤ ε_λ``."""
    return (
        res.reciprocity <= epsilon_p
        and res.line <= epsilon_p
        and res.dual <= epsilon_lambda
        and res.consensus <= epsilon_lambda
    )


def agent_pair_residuals(
    own_prices: np.ndarray,
    partner_prices: np.ndarray,
    trades: np.ndarray,
    partner_trades: np.ndarray,
    active: np.ndarray,
) -> tuple[float, float]:
    """What one agent reports of its own pairs: ``r_C`` = max |λ_nm − λ_mn| and ``r_P`` =
    max |P_nm + P_mn| over its active pairs (0 with none). The MO takes the maximum over
    agents, so each agent's part needs only its own and its partners' values."""
    gap = float(np.max(np.abs(own_prices - partner_prices)[active], initial=0.0))
    mismatch = float(np.max(np.abs(trades + partner_trades)[active], initial=0.0))
    return gap, mismatch
