"""``privgrid solve``: the whole market in one process, checked against the centralised optimum.

Runs every role's pure function in sequence (the negotiation), then the centralised QP and the
Proof-of-Solution checks, and returns the results dict of :mod:`privgrid.results`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privgrid.market.central import solve_central
from privgrid.market.feasibility import check_feasible
from privgrid.market.kkt import check_solution
from privgrid.market.negotiation import NegotiationState, RoundRecord, negotiate
from privgrid.market.setup import MarketSetup, agent_costs, build_setup, played_costs
from privgrid.results import Outcome, build_results
from privgrid.scenario import Scenario, load_scenario


def prepare(path: str | Path) -> tuple[Scenario, MarketSetup]:
    """Load, validate against the network and check feasibility — before anything runs."""
    scenario = load_scenario(path)
    setup = build_setup(scenario)
    check_feasible(setup, agent_costs(scenario))
    return scenario, setup


def solve(
    setup: MarketSetup, on_round: Callable[[RoundRecord], None] | None = None
) -> dict[str, Any]:
    return clear(setup, on_round)[0]


def clear(
    setup: MarketSetup,
    on_round: Callable[[RoundRecord], None] | None = None,
    initial: NegotiationState | None = None,
) -> tuple[dict[str, Any], NegotiationState]:
    """:func:`solve`, also returning the final state; ``initial``: a warm start (each
    party's values from an earlier market, see ``negotiate``)."""
    started = time.perf_counter()
    costs = agent_costs(setup.scenario)  # the truth: welfare and the optimum
    played = played_costs(setup.scenario)  # what agents play (I6 may perturb it)
    result = negotiate(setup, played, on_round=on_round, welfare_costs=costs, initial=initial)
    central = solve_central(setup, costs)
    state = result.state
    t_kkt = time.perf_counter()
    report = check_solution(
        setup, played, state.trades, state.prices, state.charges, state.line_prices, state.theta
    )
    kkt_time = time.perf_counter() - t_kkt
    last = result.trace[-1]
    results = build_results(
        setup,
        Outcome(
            result.converged,
            result.rounds,
            state.trades,
            state.prices,
            state.charges,
            state.line_prices,
            state.theta,
        ),
        welfare=last.welfare,
        optimal_welfare=central.welfare,
        optimal_totals=central.totals,
        kkt=report.as_dict(),
        residuals=last.residuals.as_dict(),
        timings={
            "negotiation_s": result.wall_time,
            "central_s": central.solve_time,
            "kkt_s": kkt_time,
            "total_s": time.perf_counter() - started,
        },
        mode="in-process",
        extra={
            "optimal": {
                "theta": central.theta.tolist(),
                "price_up": central.line_prices.up.tolist(),
                "price_down": central.line_prices.down.tolist(),
            }
        },
    )
    return results, state
