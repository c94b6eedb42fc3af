"""The centralised social-welfare problem of algorithm.md §2, solved by a real QP solver.

This is the yardstick for the negotiation: the same constraints, the same flow model, solved
by cvxpy (Clarabel; OSQP as a fallback). Duals give the prices: ``λ = −ν`` of the reciprocity
equalities, ``μ±`` of the agents' bounds, ``η±`` of the line limits, and the marginal values
``θ_n = a S_n + b + μ⁺ − μ⁻`` (locational marginal prices at the agents' buses).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from privgrid.market.agent_step import AgentCost
from privgrid.market.line_step import LinePrices
from privgrid.market.setup import MarketSetup

if TYPE_CHECKING:  # cvxpy is imported where it is used: it is slow to import
    import cvxpy as cp


@dataclass(frozen=True)
class CentralResult:
    status: str
    trades: np.ndarray  # one optimal split (not unique, algorithm.md §4)
    totals: np.ndarray  # S_n per agent (unique)
    welfare: float
    theta: np.ndarray  # per agent
    prices: np.ndarray  # per trade (λ of its pair; unique for active trades)
    line_prices: LinePrices  # limited lines
    flows: np.ndarray  # all branches
    solve_time: float


class InfeasibleMarketError(ValueError):
    """No point satisfies every agent's bounds, the sign bounds and the line limits."""


def _problem(
    setup: MarketSetup, costs: Mapping[str, AgentCost], *, lines: bool, objective: bool
) -> tuple[cp.Problem, cp.Variable, dict[str, cp.Constraint], tuple[np.ndarray, np.ndarray]]:
    import cvxpy as cp

    g = setup.graph
    P = cp.Variable(g.n_trades)
    select = np.zeros((g.n_agents, g.n_trades))
    for i, s in enumerate(g.slots):
        select[i, s] = 1.0
    S = select @ P
    cost = [costs[a] for a in g.agent_ids]
    a = np.array([c.a for c in cost])
    b = np.array([c.b for c in cost])
    pmin = np.array([c.pmin for c in cost])
    pmax = np.array([c.pmax for c in cost])
    first = np.arange(0, g.n_trades, 2)
    cons = {
        "reciprocity": P[first] + P[first + 1] == 0,
        "upper": S <= pmax,
        "lower": -S <= -pmin,
    }
    sellers = np.flatnonzero(g.lo == 0)
    buyers = np.flatnonzero(g.hi == 0)
    if sellers.size:
        cons["sell_sign"] = -P[sellers] <= 0
    if buyers.size:
        cons["buy_sign"] = P[buyers] <= 0
    if lines and setup.limited.size:
        cons["line_up"] = setup.G @ P <= setup.fmax
        cons["line_down"] = -(setup.G @ P) <= setup.fmax
    goal = cp.sum(0.5 * cp.multiply(a, cp.square(S)) + cp.multiply(b, S)) if objective else 0
    return cp.Problem(cp.Minimize(goal), list(cons.values())), P, cons, (a, b)


def _solve(problem: cp.Problem) -> str:
    import cvxpy as cp

    # Clarabel's default 1e-8 gap can stall one step short on larger cases ("AlmostSolved");
    # 1e-7 is still four orders below every tolerance the results are compared with.
    options = {
        cp.CLARABEL: {"tol_gap_abs": 1e-7, "tol_gap_rel": 1e-7},
        cp.OSQP: {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iter": 200_000, "polishing": True},
    }
    for solver, settings in options.items():
        try:
            problem.solve(solver=solver, **settings)
        except cp.SolverError:
            continue
        if problem.status in (cp.OPTIMAL, cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            break
    return str(problem.status)


def solve_central(setup: MarketSetup, costs: Mapping[str, AgentCost]) -> CentralResult:
    """Minimise total cost subject to reciprocity, bounds and line limits."""
    started = time.perf_counter()
    problem, P, cons, (a, b) = _problem(setup, costs, lines=True, objective=True)
    status = _solve(problem)
    if status != "optimal":
        raise InfeasibleMarketError(f"centralised solve ended with status {status!r}")
    g = setup.graph
    trades = np.asarray(P.value, dtype=float)
    totals = np.array([trades[s].sum() for s in g.slots])
    mu = np.asarray(cons["upper"].dual_value) - np.asarray(cons["lower"].dual_value)
    theta = a * totals + b + mu
    nu = np.asarray(cons["reciprocity"].dual_value)
    prices = np.repeat(-nu, 2)
    if "line_up" in cons:
        eta = LinePrices(
            np.asarray(cons["line_up"].dual_value, dtype=float),
            np.asarray(cons["line_down"].dual_value, dtype=float),
        )
    else:
        eta = LinePrices.zero(len(setup.limited))
    welfare = -float(np.sum(0.5 * a * totals**2 + b * totals))
    return CentralResult(
        status,
        trades,
        totals,
        welfare,
        theta,
        prices,
        eta,
        setup.flows(trades),
        time.perf_counter() - started,
    )
