"""Warm start (privgrid/market/warm.py): the next market starts from each party's own
previous values and reaches the same optimum, in fewer rounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privgrid.market.central import solve_central
from privgrid.market.negotiation import NegotiationState, negotiate
from privgrid.market.setup import agent_costs, build_setup
from privgrid.market.warm import carry_over
from privgrid.scenario import load_scenario, parse_scenario

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _paper(tmp_path: Path, shift: float = 0.0, drop: tuple[str, str] | None = None):
    import tomllib

    data = tomllib.loads((CONFIGS / "paper.toml").read_text())
    for agent in data["agents"]:
        agent["b"] += shift  # the next interval: everyone's cost moved a little
    if drop is not None:
        scenario = load_scenario(CONFIGS / "paper.toml")
        data.setdefault("market", {})["pairs"] = [
            list(p) for p in scenario.pairs if set(p) != set(drop)
        ]
    return build_setup(parse_scenario(data, CONFIGS / "paper.toml"))


@pytest.mark.parametrize("drop", [None, ("S1", "B1")])
def test_a_warm_start_reaches_the_cold_optimum(tmp_path, drop):
    """Also when the largest trade's pair leaves: the start is then far from the new optimum
    (with adaptive steps that can take a few more rounds than a cold start: 85 vs 80 here;
    the day's measured warm/cold ratio is in docs/performance.md)."""
    first = _paper(tmp_path)
    done = negotiate(first, agent_costs(first.scenario))
    assert done.converged
    nxt = _paper(tmp_path, shift=0.05, drop=drop)
    costs = agent_costs(nxt.scenario)
    cold = negotiate(nxt, costs)
    warm = negotiate(nxt, costs, initial=carry_over(first, done.state, nxt))
    assert cold.converged and warm.converged
    if drop is None:  # the same pairs, costs moved a little: 44 rounds instead of 73
        assert warm.rounds <= 0.75 * cold.rounds
    central = solve_central(nxt, costs)
    g = nxt.graph
    for result in (cold, warm):
        totals = np.array([result.state.trades[s].sum() for s in g.slots])
        assert np.max(np.abs(totals - central.totals)) < 1e-3


def test_carry_over_keeps_each_partys_values_and_starts_new_pairs_at_round_zero(tmp_path):
    without = _paper(tmp_path, drop=("S1", "B1"))
    done = negotiate(without, agent_costs(without.scenario))
    full = _paper(tmp_path)
    start = carry_over(without, done.state, full)
    g, old = full.graph, without.graph
    new_slot = g.trade("S1", "B1")
    assert start.trades[new_slot] == 0.0
    assert start.prices[new_slot] == full.scenario.market.lambda0
    kept = g.trade("S2", "B3")
    assert start.trades[kept] == done.state.trades[old.trade("S2", "B3")]
    assert start.prices[kept] == done.state.prices[old.trade("S2", "B3")]
    # The LM keeps its line prices; charges and tracked flows follow from them and the trades.
    assert np.array_equal(start.line_prices.up, done.state.line_prices.up)
    assert np.allclose(start.charges, full.G.T @ (start.line_prices.up - start.line_prices.down))
    assert np.allclose(start.flows, full.G @ start.trades)


def test_an_initial_state_of_another_market_is_refused(tmp_path):
    setup = _paper(tmp_path)
    other = _paper(tmp_path, drop=("S1", "B1"))
    with pytest.raises(ValueError, match="does not fit"):
        negotiate(setup, agent_costs(setup.scenario), initial=NegotiationState.initial(other))


def test_a_warm_start_begins_at_the_last_announced_step_exponent(tmp_path):
    """The exponent is public (every round message carries it) and the next market starts
    there, with every change still allowed."""
    import dataclasses

    first = _paper(tmp_path)
    done = negotiate(first, agent_costs(first.scenario))
    moved = dataclasses.replace(done.state, exponent=3)
    start = carry_over(first, moved, first)
    assert start.exponent == 3
    again = negotiate(first, agent_costs(first.scenario), initial=start, max_rounds=1)
    assert again.trace[0].exponent == 3
