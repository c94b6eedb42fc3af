"""Property: random small feasible markets on IEEE 14 negotiate to the centralised optimum.

The markets are those of tests/random_markets.py: sellers, buyers and prosumers on random
buses with 0–2 line limits, bounds strictly away from 0 (unique marginal values).

The markets run at ε = 1e-6: the property is "the same optimum", and at the default 1e-4 an
ill-conditioned draw (a line whose flow barely responds to its price) can stop with η 1.04e-3
from the QP's although every residual and KKT check is met. The shipped configs are tested at
the default ε (test_configs.py).

Markets whose optimal line prices exceed 10 $/kW (energy prices here are 1–4 $/kW) are left
out: their limits nearly make the market infeasible, and the method, whose line prices move by
σ·overload per round, creeps to them linearly over tens of thousands of rounds (one drawn case
needed η = 60 $/kW and was still 0.009 kW over its limit after 20 000 rounds). That is the slow
regime algorithm.md §9 reports ("slow linear convergence, not failure"); docs/market.md.
"""

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from privgrid.market.central import InfeasibleMarketError, solve_central
from privgrid.market.feasibility import check_feasible
from privgrid.market.setup import agent_costs, build_setup
from privgrid.scenario import ScenarioError, parse_scenario
from tests.market_checks import assert_matches_central
from tests.random_markets import MAX_LINE_PRICE, hypothesis_draws, market


@st.composite
def markets(draw):
    keys = {"max_rounds": 50000, "epsilon_p": 1e-6, "epsilon_lambda": 1e-6}
    return market(hypothesis_draws(draw), keys)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_random_feasible_markets_reach_the_central_optimum(data):
    try:
        scenario = parse_scenario(data)
        setup = build_setup(scenario)
        check_feasible(setup, agent_costs(scenario))
    except (ScenarioError, InfeasibleMarketError):
        assume(False)
    eta = solve_central(setup, agent_costs(scenario)).line_prices
    assume(max([0.0, *eta.up, *eta.down]) <= MAX_LINE_PRICE)
    assert_matches_central(setup, agent_costs(scenario))
