"""Paillier pools of a day: filled between intervals for the next interval's pairs, shared by
every interval's exchange (issue #17, docs/feeder.md).

The pure part (which pools, how full) is tested directly; the pools with real 1024-bit keys
and the real exchanges, messages passed by hand (no broker); the scheduling with every
participant of a short secure day wired by hand (tests/day_bus.py: the product's day layers,
real channels and keys, no broker — a secure day over Mosquitto takes several seconds per
round on the shared development machine, too slow for a test).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from privgrid.feeder.day import Interval, PreparedDay, run_day
from privgrid.feeder.wire import interval_results
from privgrid.privacy.paillier import PaillierExchange, PaillierKeys
from privgrid.privacy.paillier.pools import KeyPools, next_interval_targets, pool_targets
from privgrid.wire.channel import Message
from privgrid.wire.kinds import IntervalStart
from tests.conftest import load_strict_json, paillier_pair
from tests.day_bus import DayBus, night_run_folder
from tests.test_pair_protocol import run_pair

ROOT = Path(__file__).resolve().parent.parent
RUN = "day-pools-test"


@pytest.fixture(scope="module")
def keys():
    return paillier_pair(RUN)


# --- which pools, how full (pure) -------------------------------------------------------------
def test_the_next_interval_needs_two_own_entries_and_one_per_partner_for_each_round():
    pairs = [("S1", "B1"), ("S1", "B2"), ("S2", "B1")]
    assert next_interval_targets("S1", pairs, pool_rounds=3, max_rounds=50) == {
        "S1": 2 * 2 * 3,  # c_A and the proof commitment, per partner and round
        "B1": 3,  # c_B under each partner's key, per round
        "B2": 3,
    }
    assert next_interval_targets("B1", pairs, 3, 50) == {"B1": 12, "S1": 3, "S2": 3}


def test_the_next_interval_needs_no_more_rounds_than_it_can_run():
    assert next_interval_targets("S1", [("S1", "B1")], pool_rounds=40, max_rounds=5) == {
        "S1": 10,
        "B1": 5,
    }


def test_nothing_is_filled_for_an_interval_sat_out_or_without_pools():
    assert next_interval_targets("S3", [("S1", "B1")], 3, 50) == {}  # S3 sits it out
    assert next_interval_targets("S1", [("S1", "B1")], 0, 50) == {}  # pool_rounds = 0
    assert pool_targets("S1", [], 4) == {"S1": 0}


# --- the day's pools ----------------------------------------------------------------------------
def test_pools_filled_ahead_serve_the_next_interval_with_nothing_made_on_the_spot(keys):
    """What the idle time between intervals fills, the next interval's exchange draws on:
    neither its start (the offline fill, the fill at round 1) nor its rounds make an entry."""
    s1k, b1k = keys
    s1_pools, b1_pools = KeyPools(s1k), KeyPools(b1k)
    pairs = [("S1", "B1")]
    for pools, me in ((s1_pools, "S1"), (b1_pools, "B1")):
        made, seconds = pools.fill_toward(next_interval_targets(me, pairs, 2, 50), 60.0)
        assert made == 2 * 2 + 2 and seconds > 0
        assert pools.fill_toward(next_interval_targets(me, pairs, 2, 50), 60.0) == (0, 0.0)
    options = {"pool_rounds": 2, "max_rounds": 50}
    s1 = PaillierExchange("S1", ["B1"], s1k, store=s1_pools, **options)
    b1 = PaillierExchange("B1", ["S1"], b1k, store=b1_pools, **options)
    opening = 120  # a later interval of the day: rounds continue from the last one's
    for round_ in (opening + 1, opening + 2):
        run_pair(s1, b1, round_=round_, seed=round_)
    for exchange in (s1, b1):
        stats = exchange.stats()
        assert (stats["pool_made"], stats["pool_misses"]) == (0, 0), exchange.me
        assert stats["pool_left"] == 0  # two rounds' worth, all used
        # … every entry it drew was one the idle time made (the counter results.json shows)
        assert stats["pool_hits"] == stats["pool_ahead_hits"] == 2 * 2 + 2, exchange.me


def test_only_entries_filled_ahead_of_an_interval_count_as_ahead_hits(keys):
    """The day's store counts the draws of entries its :meth:`KeyPools.fill_toward` made —
    not those of the exchange's own fills — and keeps them when a pool is replaced."""
    s1k, _ = keys
    pools = KeyPools(s1k)
    pools.own.fill(3)  # an exchange's own fill (offline, at its start, a top-up)
    pools.fill_toward({"S1": 5, "B1": 1}, 60.0)  # 2 more own entries, 1 of B1
    assert pools.drawn() == (0, 0)
    for _ in range(4):
        pools.own.take()
    pools.partner("B1").take()
    assert pools.drawn() == (5, 2)  # own: 3 old ones, then 1 made ahead; B1's made ahead
    pools.rekey()  # the own pool is replaced: what it counted still counts
    assert pools.drawn() == (5, 2) and len(pools.own) == 0


def test_an_interval_late_in_the_day_still_keeps_its_pools_topped_up(keys):
    """Regression: the depth counted the day's round number against the interval's
    ``max_rounds``, so past round ``max_rounds`` of the day the pools held nothing."""
    s1k, b1k = keys
    options = {"pool_rounds": 3, "max_rounds": 10}
    s1 = PaillierExchange("S1", ["B1"], s1k, store=KeyPools(s1k), **options)
    b1 = PaillierExchange("B1", ["S1"], b1k, store=KeyPools(b1k), **options)
    run_pair(s1, b1, round_=501, seed=1)  # the interval opening after round 500
    s1.work_while_idle(0.0, budget_s=10.0)
    assert len(s1.pools.own) == 2 * 3  # three rounds' worth again


def test_a_pool_under_a_replaced_key_is_never_drawn_from(keys):
    """A partner that restarted with a new key between intervals: entries made under its
    old key would give ciphertexts it cannot decrypt, so its pool starts afresh."""
    s1k, _ = keys
    pools = KeyPools(s1k)
    pools.fill_toward({"B1": 3}, 60.0)
    old = pools.partner("B1")
    assert len(old) == 3
    renewed = PaillierKeys("B1", RUN, 1024, 1024)
    s1k.peers["B1"], before = renewed.keypair.public_key, s1k.peers["B1"]
    try:
        fresh = pools.partner("B1")
        assert fresh is not old and len(fresh) == 0
        assert fresh.public_key.n == renewed.keypair.public_key.n
        assert pools.totals() == (3, 0)  # what the replaced pool made still counts
    finally:
        s1k.peers["B1"] = before


# --- a secure day's participants, between two intervals ------------------------------------------
def _secure_night(tmp_path: Path) -> tuple[PreparedDay, list[Interval], Path]:
    """Two night intervals of day-rural1 in Paillier mode (1024-bit test keys), each held to
    ``ROUNDS`` rounds (not converged: the rounds, not convergence, are what is tested) with
    pools as deep as that, so an interval can run on its pools alone."""
    secure = {"mode": "paillier", "key_bits": 1024, "insecure_test_keys": True}
    prepared, folder, intervals = night_run_folder(
        tmp_path, 2, {**secure, "pool_rounds": ROUNDS}, max_rounds=ROUNDS
    )
    return prepared, intervals, folder


ROUNDS = 3


def test_between_intervals_agents_fill_the_next_intervals_pools_and_it_draws_only_on_them(
    tmp_path, caplog
):
    """The day's participants wired by hand (tests/day_bus.py): interval 1 runs; the MO's
    ``interval`` broadcast of interval 2 is held back from the agents while they get idle
    ticks, as a process gets while it waits for the next interval. Those ticks fill the pools
    of every agent's interval-2 pairs; interval 2 then makes no pool entry at all — neither
    at its start nor on the spot — and the day clears what the in-process day clears."""
    prepared, intervals, folder = _secure_night(tmp_path)
    bus = DayBus(folder)
    held: list[tuple[str, Message]] = []

    def hold_interval_2(message: Message) -> bool:
        body = message.body
        if isinstance(body, IntervalStart) and body.index == 2 and bus.recipient in bus.agents:
            held.append((bus.recipient, message))
            return True
        return False

    bus.run(intercept=hold_interval_2)
    assert len(held) == len(bus.agents)  # interval 1 is over at everyone; 2 is announced
    second = bus.plan.load(2)
    trading = [a for a in bus.agents.values() if a.me in second.agent_ids]
    assert trading
    for agent in trading:
        targets = next_interval_targets(agent.me, second.pairs, ROUNDS, ROUNDS)
        inner = agent.inner
        assert inner is not None and (inner.exit_code is not None or not agent.in_interval())
        while True:  # idle ticks until there is nothing left to do ahead
            before = agent.ahead
            assert agent.tick(1.0) == [] and agent.exit_code is None
            if agent.ahead == before:
                break
        pools = agent.mode.pools
        assert agent.ahead > 0
        assert {o: len(pools.pool(o)) >= n for o, n in targets.items()} == dict.fromkeys(
            targets, True
        ), agent.me
    with caplog.at_level(logging.INFO):
        for recipient, message in held:
            bus.post(recipient, bus.nodes[recipient].handle(message, 1.0))
        bus.run()
    assert bus.mo.exit_code is not None and bus.mo.error is None
    assert "pool entries made ahead" in caplog.text
    for agent in trading:
        stats = agent.inner.counters()  # interval 2's exchange: its start and its rounds
        assert (stats["pool_made"], stats["pool_misses"]) == (0, 0), agent.me
        assert stats["pool_ahead_hits"] > 0, agent.me  # it drew what the idle ticks made

    solve = tmp_path / "solve"
    run_day(prepared, solve, plots=False)
    for interval in intervals:
        index = interval.inputs.index
        ours = interval_results(interval, cold=index == 1)
        theirs = load_strict_json(solve / "intervals" / f"{index:04d}" / "results.json")
        assert ours is not None and ours["rounds"] == theirs["rounds"] == ROUNDS
        assert len(ours["trades"]) == len(theirs["trades"]) > 0
        for a, b in zip(ours["trades"], theirs["trades"], strict=True):
            assert (a["seller"], a["buyer"]) == (b["seller"], b["buyer"])
            for key in ("power", "price"):
                assert a[key] == pytest.approx(b[key], abs=1e-9), (index, key, a, b)
