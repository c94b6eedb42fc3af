"""Paillier pools of a day: filled between intervals for the next interval's pairs, shared by
every interval's exchange (issue #17, docs/feeder.md).

The pure part (which pools, how full) is tested directly; the pools with real 1024-bit keys
and the real exchanges, messages passed by hand (no broker).
"""

from __future__ import annotations

import pytest

from privgrid.privacy.paillier import PaillierExchange, PaillierKeys
from privgrid.privacy.paillier.pools import KeyPools, next_interval_targets, pool_targets
from privgrid.wire.kinds import KeyAnnouncement
from tests.test_pair_protocol import run_pair

RUN = "day-pools-test"


@pytest.fixture(scope="module")
def keys():
    s1, b1 = PaillierKeys("S1", RUN, 1024, 1024), PaillierKeys("B1", RUN, 1024, 1024)
    base = KeyAnnouncement(x25519=bytes(32), created=0.0)  # the channel's part: not tested here
    s1.accept("B1", b1.announcement(base))
    b1.accept("S1", s1.announcement(base))
    return s1, b1


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
