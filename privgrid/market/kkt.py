"""Proof-of-Solution checks (algorithm.md §4, §8): each party checks its own part of the KKT.

Every function is pure and returns a list of :class:`Check` — one per condition and subject
(agent, trade, pair or line) with the measured violation and its tolerance — never a bare
flag, so a rejected solution always says which condition failed where and by how much.

Condition names (stable, used in reports, votes and tests):

====================  ======================================================================
``A1-total-bounds``    Pmin − tol_P ≤ S_n ≤ Pmax + tol_P
``A1-trade-sign``      every trade within its sign bound ± tol_P
``A2-dual-sign``       at a bound, the bound's dual μ = θ − (aS + b) has the right sign
``A2-complementarity`` strictly inside the bounds, μ = 0 (S = (θ − b)/a)
``A3-stationarity``    net price u = λ − c equals θ on a free trade; u ≤ θ for a seller's
                       zero trade, u ≥ θ for a buyer's
``A4-reciprocity``     |P_nm + P_mn| ≤ tol_P
``A4-price-agreement`` |λ_nm − λ_mn| ≤ tol_λ
``L1-line-limit``      |F_l| ≤ Fmax_l + tol_P with F from the trades
``L2-dual-sign``       η⁺, η⁻ ≥ 0
``L2-complementarity`` η⁺ > 0 ⇒ F ≥ Fmax − tol_P;  η⁻ > 0 ⇒ F ≤ −Fmax + tol_P
``L3-charge``          c_nm = Σ_l g_l,nm (η⁺ − η⁻) and c_mn = −c_nm, within the resolution
====================  ======================================================================

A2 uses the scaled form of algorithm.md §8 (``|S − clip((θ − b)/a)| ≤ tol_P``): the dual is
divided by ``a`` so the tolerance is in kW, and the condition is named after the dual that
misbehaves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from privgrid.market.agent_step import AgentCost
from privgrid.market.fixedpoint import RESOLUTION
from privgrid.market.line_step import LinePrices
from privgrid.market.setup import MarketSetup
from privgrid.scenario import MarketSection


@dataclass(frozen=True)
class Check:
    condition: str
    subject: str
    value: float  # the violation measure: the check passes iff value ≤ tolerance
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.value <= self.tolerance)

    def as_dict(self) -> dict[str, object]:
        return {
            "condition": self.condition,
            "subject": self.subject,
            "value": float(self.value),
            "tolerance": float(self.tolerance),
            "passed": self.passed,
        }


@dataclass(frozen=True)
class KKTReport:
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "checked": len(self.checks),
            "failures": [c.as_dict() for c in self.failures],
        }


@dataclass(frozen=True)
class Tolerances:
    """``tol_P = 10 ε_P`` (kW), ``tol_λ = 10 ε_λ`` ($/kW), charges to a few fixed-point steps."""

    power: float
    price: float
    charge: float = 4 * RESOLUTION

    @classmethod
    def for_market(cls, market: MarketSection) -> Tolerances:
        return cls(10 * market.epsilon_p, 10 * market.epsilon_lambda)


@dataclass(frozen=True)
class AgentView:
    """What agent n checks: its own trades with the counterparty's entries beside them."""

    partners: Sequence[str]
    trades: np.ndarray
    prices: np.ndarray
    charges: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    partner_prices: np.ndarray  # λ_mn for each partner m
    partner_trades: np.ndarray | None = None  # P_mn, when the checker holds them (a block)


def check_agent(
    agent: str, cost: AgentCost, theta: float, view: AgentView, tol: Tolerances
) -> list[Check]:
    """Agent n's part (A1–A4), using its private cost and marginal value θ_n."""
    checks = []
    total = float(np.sum(view.trades))
    checks.append(
        Check(
            "A1-total-bounds",
            f"agent {agent}",
            max(0.0, cost.pmin - total, total - cost.pmax),
            tol.power,
        )
    )
    labels = [f"trade {agent}-{m}" for m in view.partners]
    sign = np.maximum(0.0, np.maximum(view.lo - view.trades, view.trades - view.hi))
    checks += [
        Check("A1-trade-sign", lab, float(v), tol.power)
        for lab, v in zip(labels, sign, strict=True)
    ]

    dual = (theta - (cost.a * total + cost.b)) / cost.a  # μ/a in kW
    at_upper = total >= cost.pmax - tol.power
    at_lower = total <= cost.pmin + tol.power
    if at_upper and at_lower:
        checks.append(Check("A2-dual-sign", f"agent {agent}", 0.0, tol.power))
    elif at_upper:
        checks.append(Check("A2-dual-sign", f"agent {agent}", max(0.0, -dual), tol.power))
    elif at_lower:
        checks.append(Check("A2-dual-sign", f"agent {agent}", max(0.0, dual), tol.power))
    else:
        checks.append(Check("A2-complementarity", f"agent {agent}", abs(dual), tol.power))

    net = view.prices - view.charges
    gap = net - theta
    at_zero_sell = (view.lo == 0) & (np.abs(view.trades) <= tol.power)
    at_zero_buy = (view.hi == 0) & (np.abs(view.trades) <= tol.power)
    stationarity = np.where(
        at_zero_sell,
        np.maximum(0.0, gap),
        np.where(at_zero_buy, np.maximum(0.0, -gap), np.abs(gap)),
    )
    checks += [
        Check("A3-stationarity", lab, float(v), tol.price)
        for lab, v in zip(labels, stationarity, strict=True)
    ]
    checks += _pair_checks(
        agent,
        view.partners,
        view.trades,
        view.partner_trades,
        view.prices,
        view.partner_prices,
        tol,
    )
    return checks


def _pair_checks(
    agent: str,
    partners: Sequence[str],
    trades: np.ndarray,
    partner_trades: np.ndarray | None,
    prices: np.ndarray,
    partner_prices: np.ndarray,
    tol: Tolerances,
) -> list[Check]:
    """A4. Reciprocity needs the partner's trades; without them (an agent during the run
    knows only prices) it is left to the LM's r_P and the MO's check of the block."""
    disagreement = np.abs(prices - partner_prices)
    checks = []
    for i, m in enumerate(partners):
        if partner_trades is not None:
            mismatch = abs(float(trades[i]) + float(partner_trades[i]))
            checks.append(Check("A4-reciprocity", f"pair {agent}-{m}", mismatch, tol.power))
        checks.append(
            Check("A4-price-agreement", f"pair {agent}-{m}", float(disagreement[i]), tol.price)
        )
    return checks


def check_pairs(
    setup: MarketSetup,
    trades: np.ndarray,
    prices: np.ndarray,
    tol: Tolerances,
    removed: Sequence[Sequence[str]] = (),
) -> list[Check]:
    """The MO's part: A4 on every pair still in the market (the block is public to it)."""
    g = setup.graph
    first = np.arange(0, g.n_trades, 2)
    gone = {frozenset(p) for p in removed}
    checks: list[Check] = []
    for t in first:
        n, m = g.agent_ids[g.owner[t]], g.agent_ids[g.partner[t]]
        if frozenset((n, m)) in gone:
            continue
        checks += _pair_checks(
            n, [m], trades[[t]], trades[[t + 1]], prices[[t]], prices[[t + 1]], tol
        )
    return checks


def check_line_flows(
    setup: MarketSetup, flows: np.ndarray, line_prices: LinePrices, tol: Tolerances
) -> list[Check]:
    """L1 and L2 from the limited lines' flows alone (what a masked-aggregation LM holds)."""
    checks = []
    for row, branch in enumerate(setup.limited):
        name = f"line {setup.line_names[branch]}"
        fmax, f = setup.fmax[row], flows[row]
        up, down = line_prices.up[row], line_prices.down[row]
        checks.append(Check("L1-line-limit", name, max(0.0, abs(f) - fmax), tol.power))
        checks.append(Check("L2-dual-sign", name, max(0.0, -up, -down), tol.price))
        slack_up = max(0.0, fmax - f) if up > tol.price else 0.0
        slack_down = max(0.0, fmax + f) if down > tol.price else 0.0
        checks.append(Check("L2-complementarity", name, max(slack_up, slack_down), tol.power))
    return checks


def check_lines(
    setup: MarketSetup,
    trades: np.ndarray,
    charges: np.ndarray,
    line_prices: LinePrices,
    tol: Tolerances,
) -> list[Check]:
    """The LM's part (L1–L3) from the block's trades, charges and line prices."""
    g = setup.graph
    G = setup.G
    checks = check_line_flows(setup, G @ trades, line_prices, tol)
    expected = G.T @ (line_prices.up - line_prices.down) if G.size else np.zeros(g.n_trades)
    error = np.maximum(np.abs(charges - expected), np.abs(charges + charges[g.mirror]))
    for t in range(g.n_trades):
        label = f"trade {g.agent_ids[g.owner[t]]}-{g.agent_ids[g.partner[t]]}"
        checks.append(Check("L3-charge", label, float(error[t]), tol.charge))
    return checks


def agent_view(
    setup: MarketSetup, agent: int, trades: np.ndarray, prices: np.ndarray, charges: np.ndarray
) -> AgentView:
    """Agent ``agent``'s slice of a full solution (what a block would show it)."""
    g = setup.graph
    s = g.slots[agent]
    return AgentView(
        g.partners_of(agent),
        trades[s],
        prices[s],
        charges[s],
        g.lo[s],
        g.hi[s],
        prices[g.mirror[s]],
        trades[g.mirror[s]],
    )


def check_solution(
    setup: MarketSetup,
    costs: Mapping[str, AgentCost],
    trades: np.ndarray,
    prices: np.ndarray,
    charges: np.ndarray,
    line_prices: LinePrices,
    theta: np.ndarray,
    tol: Tolerances | None = None,
) -> KKTReport:
    """Every party's checks on one solution: each agent's, the LM's and the MO's."""
    tol = tol or Tolerances.for_market(setup.scenario.market)
    g = setup.graph
    checks: list[Check] = []
    for i, agent in enumerate(g.agent_ids):
        view = agent_view(setup, i, trades, prices, charges)
        checks += check_agent(agent, costs[agent], float(theta[i]), view, tol)
    checks += check_lines(setup, trades, charges, line_prices, tol)
    checks += check_pairs(setup, trades, prices, tol)
    return KKTReport(tuple(checks))


def excluding_pairs(checks: Sequence[Check], pairs: Sequence[Sequence[str]]) -> list[Check]:
    """Drop the checks about trades or pairs that left the market (``on_violation =
    "drop_pair"``): subjects ``trade n-m`` and ``pair n-m``, in either order."""
    gone = {f"{kind} {a}-{b}" for a, b in pairs for kind in ("trade", "pair")}
    gone |= {f"{kind} {b}-{a}" for a, b in pairs for kind in ("trade", "pair")}
    return [c for c in checks if c.subject not in gone]
