"""The block of a cleared market (privgrid/ledger/cleared.py), shared by the MO's proposal and
the in-process day: every party accepts the honest block; an edited one is rejected."""

from __future__ import annotations

import functools
from pathlib import Path

from privgrid.ledger.block import ZERO_HASH
from privgrid.ledger.cleared import cleared_block
from privgrid.ledger.pos import agent_checks, lm_checks, mo_checks
from privgrid.market.negotiation import negotiate
from privgrid.market.setup import agent_costs, build_setup
from privgrid.results import Outcome
from privgrid.roles.market_operator.proposal import tamper
from privgrid.scenario import load_scenario

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _cleared():
    setup = build_setup(load_scenario(CONFIGS / "paper.toml"))
    costs = agent_costs(setup.scenario)
    result = negotiate(setup, costs)
    s = result.state
    outcome = Outcome(True, result.rounds, s.trades, s.prices, s.charges, s.line_prices)
    return setup, costs, s, outcome


def _failed(setup, costs, state, block) -> dict[str, list[str]]:
    g = setup.graph
    failed: dict[str, list[str]] = {}
    for i, agent in enumerate(g.agent_ids):
        s = g.slots[i]
        held = (state.trades[s], state.prices[s], state.charges[s])
        checks = agent_checks(block, setup, agent, costs[agent], float(state.theta[i]), held)
        failed[agent] = [c.condition for c in checks if not c.passed]
    failed["LM"] = [c.condition for c in lm_checks(block, setup) if not c.passed]
    failed["MO"] = [c.condition for c in mo_checks(block, setup) if not c.passed]
    return {k: v for k, v in failed.items() if v}


def test_every_party_accepts_the_honest_block():
    setup, costs, state, outcome = _cleared()
    block = cleared_block(setup, outcome, height=1, prev_hash=ZERO_HASH, run="r", timestamp=0)
    assert block.body["rounds"] == outcome.rounds
    assert _failed(setup, costs, state, block) == {}


def test_a_tampered_trade_is_rejected_by_the_parties_it_touches():
    setup, costs, state, outcome = _cleared()
    edit = functools.partial(tamper, behaviour="tamper-trade", setup=setup)
    block = cleared_block(
        setup, outcome, height=1, prev_hash=ZERO_HASH, run="r", edit=edit, timestamp=0
    )
    first = block.body["trades"][0]
    failed = _failed(setup, costs, state, block)
    assert "A0-own-record" in failed[first["seller"]]
    assert "A0-own-record" in failed[first["buyer"]]
