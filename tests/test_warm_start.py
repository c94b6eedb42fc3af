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
    # The LM keeps its line prices and the flows it tracked; the charges follow from the
    # line prices.
    assert np.array_equal(start.line_prices.up, done.state.line_prices.up)
    assert np.allclose(start.charges, full.G.T @ (start.line_prices.up - start.line_prices.down))
    assert np.array_equal(start.flows, done.state.flows)


def test_the_lm_keeps_its_tracked_flows_when_a_pair_leaves(tmp_path):
    """No new aggregation at the start: the flows of the starting trades would differ from
    what the LM tracked by exactly the departed pair's flows — one trade's, which the masked
    leg never shows the LM (docs/privacy.md). The LM starts from what it holds instead."""
    full = _paper(tmp_path)
    done = negotiate(full, agent_costs(full.scenario))
    without = _paper(tmp_path, shift=0.05, drop=("S1", "B1"))
    start = carry_over(full, done.state, without)
    assert np.array_equal(start.flows, done.state.flows)
    departed = done.state.flows - without.G @ start.trades  # what an aggregation would show
    t = full.graph.trade("S1", "B1")
    assert np.allclose(departed, 2 * full.G[:, t] * done.state.trades[t], atol=1e-6)
    assert np.max(np.abs(departed)) > 0.1  # S1's trade with B1, on the lines it crosses


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


def test_the_steps_begin_at_zero_when_agents_joined_or_left(tmp_path):
    """The exponent carries over only between markets of the same agents
    (privgrid/market/warm.py ``carried_exponent``): a carried exponent stalled a day after
    households joined (docs/feeder.md)."""
    import dataclasses
    import tomllib

    first = _paper(tmp_path)
    done = dataclasses.replace(negotiate(first, agent_costs(first.scenario)).state, exponent=3)
    data = tomllib.loads((CONFIGS / "paper.toml").read_text())
    data["agents"] = [a for a in data["agents"] if a["id"] != "B3"]
    without = build_setup(parse_scenario(data, CONFIGS / "paper.toml"))
    assert carry_over(first, done, without).exponent == 0  # B3 left
    assert carry_over(without, done_without(without), first).exponent == 0  # B3 came back
    assert carry_over(first, done, first).exponent == 3  # the same agents


def done_without(setup):
    import dataclasses

    return dataclasses.replace(negotiate(setup, agent_costs(setup.scenario)).state, exponent=2)


def test_a_pair_that_traded_in_both_earlier_markets_begins_at_its_predicted_trade(tmp_path):
    """privgrid/market/warm.py ``predicted``: last + PREDICT·(last − before) for the trade and
    the derived view of pairs in both earlier markets (prices carried); a pair only in the last
    one is carried as it was."""
    from privgrid.market.warm import PREDICT

    first = _paper(tmp_path, drop=("S1", "B1"))
    second, third = _paper(tmp_path, shift=0.05), _paper(tmp_path, shift=0.1)
    a = negotiate(first, agent_costs(first.scenario)).state
    b = negotiate(second, agent_costs(second.scenario), initial=carry_over(first, a, second))
    start = carry_over(second, b.state, third, (first, a))
    s2b3 = (third.graph.trade("S2", "B3"), second.graph.trade("S2", "B3"))
    was = first.graph.trade("S2", "B3")
    for name in ("trades", "derived"):
        last, before = getattr(b.state, name)[s2b3[1]], getattr(a, name)[was]
        assert last != before  # the market moved, so the prediction is not the last value
        assert getattr(start, name)[s2b3[0]] == last + PREDICT * (last - before)
    assert start.prices[s2b3[0]] == b.state.prices[s2b3[1]]  # prices: carried
    s1b1 = (third.graph.trade("S1", "B1"), second.graph.trade("S1", "B1"))
    assert start.trades[s1b1[0]] == b.state.trades[s1b1[1]]  # new in `second`: carried
    assert start.prices[s1b1[0]] == b.state.prices[s1b1[1]]


def test_an_agent_process_predicts_the_same_bits_as_the_in_process_day(tmp_path):
    """The wire day's agents (roles/agent/node.py ``predicted_held``, from the values each
    held at the end of the last two markets) start where ``carry_over`` starts."""
    from privgrid.roles.agent.node import Held, predicted_held

    first, second, third = (_paper(tmp_path, shift=s) for s in (0.0, 0.05, 0.1))
    a = negotiate(first, agent_costs(first.scenario)).state
    b = negotiate(second, agent_costs(second.scenario), initial=carry_over(first, a, second))
    start = carry_over(second, b.state, third, (first, a))

    def held(setup, state, me):
        g = setup.graph
        return {
            m: Held(
                float(state.trades[t]),
                float(state.prices[t]),
                float(state.prices[g.mirror[t]]),
                float(state.derived[t]),
            )
            for m in g.partners_of(g.index(me))
            for t in [g.trade(me, m)]
        }

    g = third.graph
    for me in g.agent_ids:
        predicted = predicted_held(held(second, b.state, me), held(first, a, me))
        for m, h in predicted.items():
            t = g.trade(me, m)
            assert (h.trade, h.price, h.derived) == (
                start.trades[t],
                start.prices[t],
                start.derived[t],
            )
            assert h.partner_price == start.prices[g.mirror[t]]
            assert Held.from_state(h.to_state()) == h  # as the checkpoint keeps it
