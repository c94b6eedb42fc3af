"""The block of a cleared market (privgrid/ledger/cleared.py), shared by the MO's proposal and
the in-process day: every party accepts the honest block; an edited one is rejected."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from privgrid.attack.tampering import tamper
from privgrid.ledger import LedgerError
from privgrid.ledger.block import ZERO_HASH
from privgrid.ledger.cleared import Cleared, cleared_block, seller_side
from privgrid.ledger.pos import agent_checks, lm_checks, mo_checks
from privgrid.market.fixedpoint import decode, encode, fixed_tuple
from privgrid.market.negotiation import negotiate
from privgrid.market.setup import agent_costs, build_setup
from privgrid.roles.market_operator.node import RunOutcome
from privgrid.roles.market_operator.proposal import cleared_of
from privgrid.scenario import load_scenario
from privgrid.wire.kinds import AgentFinal, LmFinal

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _cleared():
    setup = build_setup(load_scenario(CONFIGS / "paper.toml"))
    costs = agent_costs(setup.scenario)
    result = negotiate(setup, costs)
    s = result.state
    outcome = Cleared.from_reals(result.rounds, s.trades, s.prices, s.charges, s.line_prices)
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
    tampered = tamper(outcome, "tamper-trade", setup)
    block = cleared_block(setup, tampered, height=1, prev_hash=ZERO_HASH, run="r", timestamp=0)
    first = block.body["trades"][0]
    failed = _failed(setup, costs, state, block)
    assert "A0-own-record" in failed[first["seller"]]
    assert "A0-own-record" in failed[first["buyer"]]


def test_the_block_stores_the_reported_fixed_point_values_themselves():
    """The block is built from the integers the parties reported, not from floats made of
    them: a value whose fixed-point form has more than 53 significant bits (a price of
    2^22 + 2^-32 $/kW) would lose its last bit on a float round trip."""
    setup, _, _, outcome = _cleared()
    prices = outcome.prices.copy()
    side = seller_side(outcome.trades, 0)
    prices[side] = (1 << 54) + 1
    block = cleared_block(
        setup, replace(outcome, prices=prices), height=1, prev_hash=ZERO_HASH, run="r"
    )
    first = block.body["trades"][0]
    assert first["price"] == (1 << 54) + 1
    assert int(encode(decode(prices))[side]) != first["price"]  # what a float detour gives
    g = setup.graph
    for pair, record in enumerate(block.body["trades"]):
        s = seller_side(outcome.trades, pair)
        assert (record["power"], record["buyer_power"]) == (
            outcome.trades[s],
            outcome.trades[s ^ 1],
        )
        assert record["seller_charge"] == outcome.charges[s] == -record["buyer_charge"]
        assert (record["seller"], record["buyer"]) == (
            g.agent_ids[g.owner[s]],
            g.agent_ids[g.partner[s]],
        )


def test_the_mo_builds_from_the_final_reports_the_block_the_day_builds_from_its_state():
    """The MO assembles the agents' and the LM's final reports (fixed point per partner);
    the in-process day encodes its negotiation state: the same block, byte for byte."""
    setup, _, state, outcome = _cleared()
    g = setup.graph
    finals = {
        agent: AgentFinal(
            P=fixed_tuple(state.trades[g.slots[i]]),
            lam=fixed_tuple(state.prices[g.slots[i]]),
            lam_peer=fixed_tuple(state.prices[g.mirror[g.slots[i]]]),
            c=fixed_tuple(state.charges[g.slots[i]]),
            kkt=(),
            stats={},
        )
        for i, agent in enumerate(g.agent_ids)
    }
    lm = LmFinal(
        eta_up=fixed_tuple(state.line_prices.up),
        eta_down=fixed_tuple(state.line_prices.down),
        kkt=(),
        stats={},
    )
    reported = cleared_of(setup, RunOutcome(rounds=outcome.rounds, finals=finals, lm_final=lm))
    at = {"height": 1, "prev_hash": ZERO_HASH, "run": "r", "timestamp": 0}
    assert (
        cleared_block(setup, reported, **at).to_bytes()
        == cleared_block(setup, outcome, **at).to_bytes()
    )


def test_a_final_report_that_does_not_fit_the_market_builds_no_block():
    setup = _cleared()[0]
    g = setup.graph
    short = AgentFinal(P=(0,), lam=(0,), lam_peer=(0,), c=(0,), kkt=(), stats={})
    finals = dict.fromkeys(g.agent_ids, short)
    lm = LmFinal(eta_up=(), eta_down=(), kkt=(), stats={})
    with pytest.raises(LedgerError, match="final report has 1 P values"):
        cleared_of(setup, RunOutcome(rounds=1, finals=finals, lm_final=lm))
