"""Pools and batch verification wired into the product: scenario options, the privacy-mode
factory, the agent's idle hook and the check before the final report (issue #8).

Real 1024-bit keys and the real exchanges; messages are passed by hand (no broker).
"""

from __future__ import annotations

import copy
import logging
import tomllib
from pathlib import Path

import numpy as np
import pytest

from privgrid.attack.lying import LyingDecryptor
from privgrid.logs import ParticipantLog
from privgrid.market.setup import played_cost
from privgrid.privacy import make_mode
from privgrid.privacy.exchange import Violation
from privgrid.privacy.paillier import DeferredViolation, PaillierExchange
from privgrid.privacy.plain import PlainExchange
from privgrid.roles.agent.node import AgentNode
from privgrid.runtime import CHECKPOINT
from privgrid.scenario import MO_ID, ScenarioError, parse_scenario
from privgrid.wire.channel import Message
from privgrid.wire.kinds import Stop, ViolationReport
from tests.conftest import paillier_pair
from tests.test_pair_protocol import run_pair

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PAPER = tomllib.loads((CONFIGS / "paper.toml").read_text())
RUN = "wiring-test"
TEST_KEYS = {"mode": "paillier", "key_bits": 1024, "insecure_test_keys": True}


def scenario(**privacy):
    data = copy.deepcopy(PAPER)
    data["privacy"] = {**data.get("privacy", {}), **privacy}
    return parse_scenario(data, "paper-test.toml")


def log(me: str) -> ParticipantLog:
    return ParticipantLog(logging.getLogger(f"test.{me}"), me)


@pytest.fixture(scope="module")
def keys():
    return paillier_pair(RUN)


# --- scenario options ---------------------------------------------------------------------------
def test_defaults_are_no_pools_and_per_round_verification():
    privacy = scenario().privacy
    assert privacy.pool_rounds == 0 and privacy.verify == "every_round"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("pool_rounds", -1, "greater than or equal to 0"), ("verify", "sometimes", "every_round")],
)
def test_bad_pool_and_verify_options_are_rejected_naming_the_field(field, value, words):
    with pytest.raises(ScenarioError) as info:
        scenario(**{field: value})
    message = str(info.value)
    assert field in message and words in message and "paper-test.toml" in message


# --- the factory --------------------------------------------------------------------------------
def test_the_mode_factory_passes_pools_verification_and_the_round_limit():
    s = scenario(**TEST_KEYS, pool_rounds=2, verify="batch")
    mode = make_mode(s, "S1", RUN, log("S1"))
    exchange = mode.exchange(["B1", "B2", "B3"])
    assert isinstance(exchange, PaillierExchange)
    assert (exchange.pools.rounds, exchange.verify) == (2, "batch")
    assert exchange.pools.max_rounds == s.market.max_rounds
    # Own pool: c_A and the proof commitment, per partner and round, made offline in the
    # constructor and counted in the mode's counters (which go into the final report).
    assert len(exchange.pools.own) == 2 * 3 * 2
    assert exchange.counters is mode.counters and mode.counters.seconds["offline"] > 0
    assert mode.counters.counts == {"proofs_made": 0, "proofs_verified": 0, "proofs_failed": 0}


def test_the_factory_default_is_unpooled_per_round_verification():
    mode = make_mode(scenario(**TEST_KEYS), "S1", RUN, log("S1"))
    exchange = mode.exchange(["B1"])
    pools = exchange.pools
    assert (pools.rounds, exchange.verify, len(pools.own)) == (0, "every_round", 0)


# --- the exchange's deferred work -------------------------------------------------------------
def test_batch_mode_takes_a_lie_optimistically_and_settle_names_the_round(keys):
    s1k, b1k = keys
    liar = LyingDecryptor("S1", ["B1"], s1k, lie=0.02, from_round=2)
    b1 = PaillierExchange("B1", ["S1"], b1k, verify="batch")
    for round_ in (1, 2, 3):
        run_pair(liar, b1, round_=round_, seed=round_)  # no Violation raised on arrival
        assert b1.complete and not b1.failed
    assert b1.work_while_idle(0.0) == []  # 3 proofs absorbed; too few to close a batch
    found = b1.settle()
    assert len(found) == 1
    violation = found[0]
    assert isinstance(violation, DeferredViolation)
    assert violation.offender == "S1" and violation.round == 2  # the first lying round
    assert "round(s) 2, 3" in violation.reason and "batch verification" in violation.reason
    assert len(violation.evidence) == 2  # the signed share_own and price_proof of round 2
    assert b1.counters.counts["proofs_verified"] == 1
    assert b1.counters.counts["proofs_failed"] == 2
    assert b1.settle() == []  # reported once


def test_honest_batch_mode_verifies_every_proof_and_matches_every_round(keys):
    s1k, b1k = keys
    results = {}
    for verify in ("every_round", "batch"):
        s1 = PaillierExchange("S1", ["B1"], s1k, verify=verify)
        b1 = PaillierExchange("B1", ["S1"], b1k, verify=verify)
        prices = []
        for round_ in range(1, 5):
            run_pair(s1, b1, round_=round_, seed=10 + round_)
            prices.append((s1.prices(np.zeros(1)), b1.prices(np.zeros(1))))
        assert s1.settle() == [] and b1.settle() == []
        assert s1.counters.counts["proofs_verified"] == 4 == b1.counters.counts["proofs_made"]
        results[verify] = prices
    assert str(results["batch"]) == str(results["every_round"])


def test_a_batch_never_idle_is_closed_at_its_limit_and_still_catches_a_lie(keys):
    """An agent that never gets a tick of idle time still checks its batches at their size
    limit — memory stays bounded — and a lie found there is reported with its round."""
    s1k, b1k = keys
    liar = LyingDecryptor("S1", ["B1"], s1k, lie=0.02, from_round=9)
    b1 = PaillierExchange("B1", ["S1"], b1k, verify="batch")
    b1.batches.limit = 4
    for round_ in range(1, 13):
        run_pair(liar, b1, round_=round_, seed=round_)
        assert b1.batches.pending("S1") < 4  # never more pending than the limit
    assert b1.counters.counts["proofs_verified"] == 8  # rounds 1–8: two full batches
    found = b1.drain_violations()  # what the agent's next tick reports
    assert [(v.offender, v.round) for v in found] == [("S1", 9)]
    assert "round(s) 9, 10, 11, 12" in found[0].reason


def test_idle_work_tops_pools_up_and_closes_full_batches(keys):
    s1k, b1k = keys
    s1 = PaillierExchange("S1", ["B1"], s1k, pool_rounds=3, max_rounds=10)
    b1 = PaillierExchange("B1", ["S1"], b1k, pool_rounds=3, max_rounds=10, verify="batch")
    assert len(s1.pools.own) == 6  # offline
    run_pair(s1, b1, round_=1, seed=1)  # round 1 also filled B1's pool of S1's key
    assert len(s1.pools.own) == 4 and s1.stats()["pool_misses"] == 0
    s1.work_while_idle(0.0, budget_s=10.0)
    assert len(s1.pools.own) == 6  # topped up in idle time, no deeper than asked
    assert s1.idle(0.0) is False
    for round_ in range(2, 40):
        run_pair(s1, b1, round_=round_, seed=round_)
    assert b1.work_while_idle(0.0, budget_s=60.0) == []
    assert b1.counters.counts["proofs_verified"] >= 32  # a full batch closed in idle time
    assert b1.settle() == [] and b1.counters.counts["proofs_verified"] == 39


def test_plain_exchange_has_no_deferred_work():
    plain = PlainExchange("S1", ["B1"])
    assert plain.idle(0.0) is False and plain.settle() == [] and plain.work_while_idle(0.0) == []


# --- the agent's hooks --------------------------------------------------------------------------
class Deferred(PlainExchange):
    """A plain exchange that hands out prepared deferred violations (tests the agent's side)."""

    def __init__(self, me, partners, found):
        super().__init__(me, partners)
        self.found = list(found)
        self.idle_calls = 0
        self.settled = False

    def idle(self, now):
        self.idle_calls += 1
        return False

    def drain_violations(self):
        found, self.found = self.found, []
        return found

    def settle(self):
        self.settled = True
        return self.drain_violations()


def agent(found):
    s = scenario(mode="plain")
    node = AgentNode("B1", s, played_cost(s, "B1"), make_mode(s, "B1", RUN, log("B1")), log("B1"))
    node.exchange = Deferred("B1", node.partners, found)
    node.completed = 7
    return node


def test_the_agent_reports_what_idle_work_found_with_its_round():
    lie = DeferredViolation("S1", "decryption proof refused: batch", [b"e1", b"e2"], 3)
    node = agent([lie])
    out = node.tick(node.last_heard + 0.2)
    assert node.exchange.idle_calls == 1
    assert [(o.kind, o.recipient, o.round) for o in out] == [("violation", MO_ID, 3)]
    assert out[0].body == ViolationReport("S1", lie.reason, (b"e1", b"e2"))
    assert node.tick(node.last_heard + 0.4) == []


def test_the_agent_settles_before_its_final_report_and_reports_first():
    node = agent([Violation("S2", "decryption proof refused: batch", [b"e"])])
    stop = Message(7, MO_ID, "B1", Stop(converged=True, reason="converged"), raw=b"")
    out = node.handle(stop, 1.0)
    assert node.exchange.settled
    sent = [(o.kind, o.round) for o in out if o is not CHECKPOINT]  # markers, not messages
    assert sent == [("violation", 7), ("final", 7)]
    assert out[0].body.offender == "S2"


def test_the_pool_fill_at_round_one_is_bounded_and_the_rest_is_made_on_demand(keys, monkeypatch):
    """The fill when round 1 begins holds the event loop, so it stops at its budget."""
    import privgrid.privacy.paillier.pools as pools

    monkeypatch.setattr(pools, "START_FILL_BUDGET_S", 0.0)
    s1k, b1k = keys
    s1 = PaillierExchange("S1", ["B1"], s1k, pool_rounds=3, max_rounds=10)
    b1 = PaillierExchange("B1", ["S1"], b1k, pool_rounds=3, max_rounds=10)
    run_pair(s1, b1, round_=1, seed=5)
    assert len(b1.pools.partners["S1"]) == 0  # nothing filled at round 1 …
    assert b1.stats()["pool_misses"] == 1  # … so c_B's obfuscator was made on the spot
    assert s1.complete and b1.complete
    plain = (PlainExchange("S1", ["B1"]), PlainExchange("B1", ["S1"]))
    run_pair(*plain, round_=1, seed=5)
    assert str(s1.prices(np.zeros(1))) == str(plain[0].prices(np.zeros(1)))
