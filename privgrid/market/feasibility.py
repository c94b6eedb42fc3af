"""Is there any clearing point at all? An LP check with an explanation, before anything runs.

Why here and not in the negotiation: an infeasible market never converges — the residuals
stall and the run ends at ``max_rounds`` hours later with no hint of the cause. The constraints
are those of algorithm.md §1–§2: every agent's net injection ``S_n`` within ``[pmin, pmax]``,
reciprocal trades (``P_nm = −P_mn``), trade signs fixed by the roles (a seller only sells, a
buyer only buys), and ``|F_l| ≤ fmax_l`` on the limited lines.

The check solves small linear programs with HiGHS (:func:`scipy.optimize.linprog`), one trade
variable per pair, and says *who* is to blame:

1. lines hard, agents' bounds softened by slacks: zero total slack means feasible; otherwise
   the agents with slack are the ones whose minimum cannot be met;
2. if that fails, the same without line limits: feasible means the limits are the cause, and
3. lines softened instead: the limited lines that would have to carry more than their limit.

Errors are :class:`InfeasibleScenarioError`, a :class:`~privgrid.scenario.ScenarioError`
(file, field, reason: ``agents[2] (S3).pmin: ...``, ``network.line_limits.'7-8': ...``) that
is also an :class:`~privgrid.market.central.InfeasibleMarketError`, the error of the central
solve: a caller that catches either one sees it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from privgrid.market.agent_step import AgentCost
from privgrid.market.central import InfeasibleMarketError
from privgrid.market.pairs import Role
from privgrid.market.setup import MarketSetup, agent_costs, build_setup
from privgrid.scenario import FieldError, Scenario, ScenarioError

#: kW of slack below which a constraint counts as met (HiGHS works to ~1e-7 here).
TOLERANCE = 1e-6


class InfeasibleScenarioError(ScenarioError, InfeasibleMarketError):
    """No point meets every agent's bounds, the trade signs and the line limits."""


@dataclass(frozen=True)
class _Lp:
    """The market as an LP in x (one trade per pair, the first agent's side): ``S = A x``,
    ``F_L = H x``, with the sign bounds of both sides folded into x's bounds."""

    A: np.ndarray  # agents × pairs
    H: np.ndarray  # limited lines × pairs
    bounds: list[tuple[float | None, float | None]]
    pmin: np.ndarray
    pmax: np.ndarray
    fmax: np.ndarray


def _lp(setup: MarketSetup, costs: Mapping[str, AgentCost]) -> _Lp:
    g = setup.graph
    n_pairs = len(g.pairs)
    A = np.zeros((g.n_agents, n_pairs))
    for p, (n, m) in enumerate(g.pairs):
        A[n, p], A[m, p] = 1.0, -1.0
    first, second = np.arange(0, g.n_trades, 2), np.arange(1, g.n_trades, 2)
    H = setup.G[:, first] - setup.G[:, second] if setup.limited.size else np.zeros((0, n_pairs))
    # P_first = x in [lo_first, hi_first]; P_second = -x in [lo_second, hi_second].
    lo = np.maximum(g.lo[first], -g.hi[second])
    hi = np.minimum(g.hi[first], -g.lo[second])
    bounds = [
        (None if not np.isfinite(a) else float(a), None if not np.isfinite(b) else float(b))
        for a, b in zip(lo, hi, strict=True)
    ]
    pmin = np.array([costs[a].pmin for a in g.agent_ids])
    pmax = np.array([costs[a].pmax for a in g.agent_ids])
    return _Lp(A, H, bounds, pmin, pmax, np.asarray(setup.fmax, dtype=float))


def _solve(lp: _Lp, *, soft_agents: bool, lines: str) -> tuple[float, np.ndarray] | None:
    """Minimise the total slack. ``lines``: "hard", "soft" or "off". Returns (slack, values of
    the slack variables) or None if even that LP has no solution (hard everything)."""
    from scipy.optimize import linprog

    n_agents, n_pairs = lp.A.shape
    n_lines = lp.H.shape[0] if lines != "off" else 0
    n_agent_slack = 2 * n_agents if soft_agents else 0
    n_line_slack = n_lines if lines == "soft" else 0
    width = n_pairs + n_agent_slack + n_line_slack
    rows, rhs = [], []

    def block(x_part: np.ndarray, slack_col: int | None, count: int) -> np.ndarray:
        row = np.zeros((x_part.shape[0], width))
        row[:, :n_pairs] = x_part
        if slack_col is not None:
            row[:, slack_col : slack_col + count] = -np.eye(count)
        return row

    agent_slack = n_pairs if soft_agents else None
    rows.append(block(lp.A, agent_slack, n_agents))  # S - u <= pmax
    rhs.append(lp.pmax)
    rows.append(block(-lp.A, None if agent_slack is None else agent_slack + n_agents, n_agents))
    rhs.append(-lp.pmin)  # -S - v <= -pmin
    if n_lines:
        line_slack = n_pairs + n_agent_slack if lines == "soft" else None
        rows.append(block(lp.H, line_slack, n_lines))
        rows.append(block(-lp.H, line_slack, n_lines))
        rhs += [lp.fmax, lp.fmax]
    cost = np.r_[np.zeros(n_pairs), np.ones(n_agent_slack + n_line_slack)]
    bounds = lp.bounds + [(0.0, None)] * (n_agent_slack + n_line_slack)
    result = linprog(cost, A_ub=np.vstack(rows), b_ub=np.concatenate(rhs), bounds=bounds)
    fun, x = result.fun, result.x  # both set when status is 0
    if result.status != 0 or fun is None or x is None:
        return None
    return float(fun), np.asarray(x[n_pairs:])


def _limits_text(setup: MarketSetup) -> str:
    return ", ".join(
        f"{setup.line_names[i]} ≤ {f:g} kW" for i, f in zip(setup.limited, setup.fmax, strict=True)
    )


def _line_field(setup: MarketSetup, branch: int) -> str:
    """The line's key as the scenario file spells it (either orientation is allowed)."""
    network = setup.network
    for key in setup.scenario.network.line_limits:
        resolved = network.resolve_branch(key)  # never None: the scenario check resolved it
        if resolved is not None and network.branch_index(resolved) == branch:
            return f"network.line_limits.{key!r}"
    return f"network.line_limits.{setup.line_names[branch]!r}"


def _agent_errors(
    setup: MarketSetup, lp: _Lp, slack: np.ndarray, cause: str, file: str
) -> list[FieldError]:
    """One error per agent whose bound needed slack: what it must do, what it can."""
    g = setup.graph
    n = g.n_agents
    over, under = slack[:n], slack[n : 2 * n]  # S above pmax by u, below pmin by v
    errors = []
    for i, agent in enumerate(g.agent_ids):
        partners = g.partners_of(i)
        where = f"agents[{i}] ({agent})"
        low, high = lp.pmin[i], lp.pmax[i]
        if under[i] > TOLERANCE:  # S had to go below pmin
            if low > 0:
                reason = (
                    f"must sell at least {low:g} kW, but at most {low - under[i]:.6g} kW can "
                    f"reach its partners {partners} {cause}"
                )
            else:
                reason = (
                    f"can buy at most {-low:g} kW, but its partners {partners} must sell it "
                    f"at least {-low + under[i]:.6g} kW {cause}"
                )
            errors.append(FieldError(file, f"{where}.pmin", reason))
        if over[i] > TOLERANCE:  # S had to go above pmax
            if high < 0:
                reason = (
                    f"must buy at least {-high:g} kW, but at most {-high - over[i]:.6g} kW can "
                    f"come from its partners {partners} {cause}"
                )
            else:
                reason = (
                    f"can sell at most {high:g} kW, but its partners {partners} must buy at "
                    f"least {high + over[i]:.6g} kW from it {cause}"
                )
            errors.append(FieldError(file, f"{where}.pmax", reason))
    return errors


def _bounds_cause(setup: MarketSetup, lp: _Lp) -> str:
    """Why the bounds alone clash: the totals of must-sell and must-buy against capacity."""
    roles = setup.graph.roles
    must_sell = sum(p for p, r in zip(lp.pmin, roles, strict=True) if r == Role.SELLER)
    can_take = sum(-p for p, r in zip(lp.pmin, roles, strict=True) if r != Role.SELLER)
    must_buy = sum(-p for p, r in zip(lp.pmax, roles, strict=True) if r == Role.BUYER)
    can_give = sum(p for p, r in zip(lp.pmax, roles, strict=True) if r != Role.BUYER)
    if must_sell > can_take + TOLERANCE:
        return (
            f"(the sellers must sell {must_sell:g} kW in total, the buyers and prosumers can "
            f"take at most {can_take:g} kW)"
        )
    if must_buy > can_give + TOLERANCE:
        return (
            f"(the buyers must buy {must_buy:g} kW in total, the sellers and prosumers can "
            f"supply at most {can_give:g} kW)"
        )
    return "together with the other agents' minimums over the trading pairs"


def check_feasible(setup: MarketSetup, costs: Mapping[str, AgentCost] | None = None) -> None:
    """Raise :class:`InfeasibleScenarioError` naming agents and lines if nothing clears.

    ``costs``: the bounds to check (default: the scenario's true ones, :func:`agent_costs`).
    """
    lp = _lp(setup, costs if costs is not None else agent_costs(setup.scenario))
    file = str(setup.scenario.source)
    solved = _solve(lp, soft_agents=True, lines="hard")
    if solved is None:  # cannot happen (x = 0 meets the lines): report it rather than pass
        raise InfeasibleScenarioError.single(file, "<market>", "the feasibility LP failed")
    total, slack = solved
    if total <= TOLERANCE:
        return
    relaxed = _solve(lp, soft_agents=True, lines="off")
    assert relaxed is not None
    if relaxed[0] > TOLERANCE:
        cause = _bounds_cause(setup, lp)
        errors = _agent_errors(setup, lp, relaxed[1], cause, file)
        raise InfeasibleScenarioError(
            errors or [FieldError(file, "agents", f"the agents' bounds cannot all be met {cause}")]
        )
    limits = _limits_text(setup)
    lines = _solve(lp, soft_agents=False, lines="soft")
    errors = []
    if lines is not None:
        for j, extra in enumerate(lines[1]):
            if extra > TOLERANCE:
                branch = int(setup.limited[j])
                errors.append(
                    FieldError(
                        file,
                        _line_field(setup, branch),
                        f"the agents' bounds can be met, but not within the line limits "
                        f"({limits}): line {setup.line_names[branch]} would have to carry "
                        f"{lp.fmax[j] + extra:.6g} kW (limit {lp.fmax[j]:g} kW)",
                    )
                )
    cause = f"within the line limits ({limits})"
    errors += _agent_errors(setup, lp, slack, cause, file)
    raise InfeasibleScenarioError(errors)


#: Scenario file digests this process has found feasible (several agents share a process).
_FEASIBLE: set[str] = set()


def _digest(scenario: Scenario) -> str | None:
    source = scenario.source
    return hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None


def known_feasible(scenario: Scenario) -> bool:
    """This process has already found this file content feasible."""
    return _digest(scenario) in _FEASIBLE


def remember_feasible(scenario: Scenario) -> None:
    """Record a check done elsewhere (in a child process, see privgrid.process)."""
    key = _digest(scenario)
    if key is not None:
        _FEASIBLE.add(key)


def ensure_feasible(scenario: Scenario) -> None:
    """The pre-run check every entry point calls (the launcher and ``privgrid solve`` through
    :func:`privgrid.solve.prepare`, each role process through
    :func:`privgrid.process.load_context`, there in a child process): the network checks of
    :func:`build_setup`, then :func:`check_feasible`. Once per file content and process."""
    if known_feasible(scenario):
        return
    check_feasible(build_setup(scenario))
    remember_feasible(scenario)
