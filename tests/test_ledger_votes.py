"""Votes (sign, verify, tamper), the commit rule, and Proof of Solution on the paper case."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from privgrid.crypto.identity import Identity
from privgrid.ledger import (
    BlockError,
    Failure,
    Vote,
    VoteError,
    commit_decision,
    market_block,
    roster_of,
    sign_vote,
    verify_vote,
)
from privgrid.ledger.encoding import decode, encode, from_fixed
from privgrid.ledger.genesis import required_voters
from privgrid.ledger.pos import agent_checks, block_solution, lm_checks, mo_checks, vote_on
from privgrid.ledger.votes import VOTE_DOMAIN
from privgrid.market.kkt import Check
from privgrid.market.setup import agent_costs
from tests.test_ledger_support import SMALL_LINES, make_parties, paper, small_trades

BLOCK = bytes(range(32))
FAILED = Check("A3-stationarity", "trade S1-B1", 0.25, 1e-3)


def _vote(accept: bool = True) -> tuple[Identity, Vote]:
    key = Identity.generate()
    return key, sign_vote(key, "S1", BLOCK, accept, [] if accept else [FAILED])


def test_sign_and_verify_with_key_and_roster():
    parties = make_parties()
    vote = sign_vote(parties.identities["B1"], "B1", BLOCK, True)
    verify_vote(roster_of(parties.genesis), vote, block_hash=BLOCK)
    verify_vote(parties.identities["B1"].public_key, vote)
    verify_vote(parties.identities["B1"].public_b64, vote)


def test_vote_bytes_round_trip_and_are_canonical():
    key, vote = _vote(accept=False)
    data = vote.to_bytes()
    again = Vote.from_bytes(data)
    assert again == vote and again.to_bytes() == data
    assert encode(decode(data)) == data
    assert again.failures == (Failure("A3-stationarity", "trade S1-B1", "0.25", "0.001"),)
    verify_vote(key.public_key, again)


def test_failures_from_check_and_from_its_dict_agree():
    assert Failure.of(FAILED) == Failure.of(FAILED.as_dict())
    assert (
        Failure.of({"condition": "c", "subject": "s", "value": float("inf"), "tolerance": 1}).value
        == "inf"
    )


def test_failures_need_a_condition_and_a_number():
    with pytest.raises(VoteError, match="condition and a subject"):
        Failure.of({"value": 1.0, "tolerance": 0.1})
    with pytest.raises(VoteError, match="not a number"):
        Failure.of({"condition": "A1", "subject": "x", "value": "n/a", "tolerance": None})
    listed = Vote("S1", BLOCK, False, [Failure("A1", "x", "1.0", "0.1")])  # type: ignore[arg-type]
    assert listed.failures == (Failure("A1", "x", "1.0", "0.1"),)


def test_signed_bytes_carry_the_domain():
    _, vote = _vote()
    assert decode(vote.signed_bytes())[0] == VOTE_DOMAIN


@pytest.mark.parametrize(
    "change",
    [
        dict(voter="B1"),
        dict(block_hash=bytes(32)),
        dict(accept=False, failures=(Failure("A1", "x", "1.0", "0.1"),)),
        dict(signature=bytes(64)),
    ],
)
def test_tampered_votes_do_not_verify(change):
    key, vote = _vote()
    with pytest.raises(VoteError):
        verify_vote(key.public_key, dataclasses.replace(vote, **change))


def test_tampered_failures_do_not_verify():
    key, vote = _vote(accept=False)
    lighter = dataclasses.replace(
        vote, failures=(Failure("A3-stationarity", "trade S1-B1", "0.0001", "0.001"),)
    )
    with pytest.raises(VoteError, match="does not verify"):
        verify_vote(key.public_key, lighter)


def test_every_flipped_byte_of_a_vote_is_caught():
    key, vote = _vote(accept=False)
    data = vote.to_bytes()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(VoteError):
            verify_vote(key.public_key, Vote.from_bytes(bytes(bad)))


def test_vote_for_another_block_or_by_another_key():
    parties = make_parties()
    roster = roster_of(parties.genesis)
    vote = sign_vote(parties.identities["S1"], "S1", BLOCK, True)
    with pytest.raises(VoteError, match="is for block"):
        verify_vote(roster, vote, block_hash=bytes(32))
    forged = sign_vote(parties.identities["B1"], "S1", BLOCK, True)  # B1 signs as S1
    with pytest.raises(VoteError, match="does not verify"):
        verify_vote(roster, forged)
    stranger = sign_vote(Identity.generate(), "X9", BLOCK, True)
    with pytest.raises(VoteError, match="not in the roster"):
        verify_vote(roster, stranger)


def test_vote_shape_rules():
    key = Identity.generate()
    with pytest.raises(VoteError, match="must list what failed"):
        sign_vote(key, "S1", BLOCK, False, [])
    with pytest.raises(VoteError, match="accept vote lists"):
        sign_vote(key, "S1", BLOCK, True, [FAILED])
    with pytest.raises(VoteError, match="32 bytes"):
        sign_vote(key, "S1", b"short", True)
    with pytest.raises(VoteError, match="canonical"):
        Vote.from_bytes(b"\x81\xa1b\x01\xa1a\x01")


# -- the commit rule
@pytest.fixture(scope="module")
def parties():
    return make_parties()


def _decide(parties, votes, quorum="all"):
    return commit_decision(
        votes,
        required_voters(parties.genesis),
        quorum,
        block_hash=BLOCK,
        roster=roster_of(parties.genesis),
    )


def _all_accept(parties):
    return [sign_vote(k, p, BLOCK, True) for p, k in parties.identities.items()]


def test_all_accept_commits(parties):
    decision = _decide(parties, _all_accept(parties))
    assert decision.commit
    assert decision.accepted_voters == required_voters(parties.genesis)
    assert not decision.missing and not decision.rejected and not decision.invalid


def test_one_reject_blocks_with_its_reasons(parties):
    votes = _all_accept(parties)
    votes[1] = sign_vote(parties.identities["S2"], "S2", BLOCK, False, [FAILED])
    decision = _decide(parties, votes)
    assert not decision.commit
    assert decision.rejected == {"S2": (Failure.of(FAILED),)}
    assert "rejected by S2: A3-stationarity on trade S1-B1: 0.25 > 0.001" in decision.summary()


def test_missing_voter_blocks(parties):
    votes = [v for v in _all_accept(parties) if v.voter != "LM"]
    decision = _decide(parties, votes)
    assert not decision.commit and decision.missing == ("LM",)
    assert "no valid vote from LM" in decision.summary()


def test_invalid_votes_are_ignored_and_reported(parties):
    votes = _all_accept(parties)
    votes[0] = dataclasses.replace(votes[0], signature=bytes(64))  # S1's vote is broken
    votes.append(sign_vote(Identity.generate(), "X9", BLOCK, True))  # not registered
    decision = _decide(parties, votes)
    assert not decision.commit and decision.missing == ("S1",)
    assert set(decision.invalid) == {"S1", "X9"}
    # the same garbage cannot block a commit that has every genuine vote
    decision = _decide(parties, [*_all_accept(parties), votes[0], votes[-1]])
    assert decision.commit and set(decision.invalid) == {"S1", "X9"}


def test_vote_for_another_block_does_not_count(parties):
    votes = _all_accept(parties)
    votes[2] = sign_vote(parties.identities["B1"], "B1", bytes(32), True)
    decision = _decide(parties, votes)
    assert not decision.commit and "B1" in decision.invalid


def test_equivocation_counts_as_reject(parties):
    votes = [
        *_all_accept(parties),
        sign_vote(parties.identities["B2"], "B2", BLOCK, False, [FAILED]),
    ]
    decision = _decide(parties, votes)
    assert not decision.commit and "B2" in decision.rejected
    assert "B2" not in decision.accepted_voters


def test_numeric_quorum(parties):
    votes = [v for v in _all_accept(parties) if v.voter not in ("S1", "LM")]
    assert _decide(parties, votes, quorum=4).commit
    assert not _decide(parties, votes[:3], quorum=4).commit
    rejecting = [*votes, sign_vote(parties.identities["S1"], "S1", BLOCK, False, [FAILED])]
    assert not _decide(parties, rejecting, quorum=4).commit  # any reject still blocks
    with pytest.raises(VoteError, match="quorum"):
        _decide(parties, votes, quorum=0)


# -- Proof of Solution on the paper case
def _all_votes(case, block):
    costs = agent_costs(case.setup.scenario)
    votes, failures = [], {}
    for agent in case.setup.graph.agent_ids:
        checks = agent_checks(
            block, case.setup, agent, costs[agent], case.theta(agent), case.held(agent)
        )
        votes.append(vote_on(case.identities[agent], agent, block, checks))
    votes.append(vote_on(case.identities["LM"], "LM", block, lm_checks(block, case.setup)))
    votes.append(vote_on(case.identities["MO"], "MO", block, mo_checks(block, case.setup)))
    for v in votes:
        failures[v.voter] = {f.condition for f in v.failures}
    decision = commit_decision(
        votes, required_voters(case.genesis), block_hash=block.hash, roster=roster_of(case.genesis)
    )
    return decision, failures


def test_honest_paper_block_is_accepted_by_everyone():
    case = paper()
    block = case.block()
    sol = block_solution(block, case.setup)
    assert sol.trades.shape == (24,)
    decision, failures = _all_votes(case, block)
    assert all(not f for f in failures.values()), failures
    assert decision.commit


def _tampered(block, change):
    """The block rebuilt (with a consistent settlement) after ``change`` to its stored body."""
    body = copy.deepcopy(block.body)
    change(body)

    def reals(entry):
        return {k: from_fixed(v) if isinstance(v, int) else v for k, v in entry.items()}

    return market_block(
        block.height,
        block.prev_hash,
        block.run,
        body["rounds"],
        [reals(t) for t in body["trades"]],
        [reals(ln) for ln in body["lines"]],
        block.timestamp,
    )


def test_a_raised_price_is_rejected_by_both_parties_with_named_conditions():
    case = paper()

    def raise_price(body):
        body["trades"][0]["price"] += 1 << 26  # +0.0156 $/kW on S1-B1, seller side only
        body["trades"][0]["buyer_price"] += 1 << 26

    decision, failures = _all_votes(case, _tampered(case.block(), raise_price))
    assert not decision.commit
    assert {"A0-own-record", "A3-stationarity"} <= failures["S1"]
    assert {"A0-own-record", "A3-stationarity"} <= failures["B1"]
    assert not failures["S2"] and not failures["LM"] and not failures["MO"]
    assert set(decision.rejected) == {"S1", "B1"}


def test_a_one_sided_change_is_caught_by_the_mo_and_the_lm():
    case = paper()

    def shift(body):
        body["trades"][0]["buyer_power"] += 1 << 28  # buyer side now off by 0.06 kW

    decision, failures = _all_votes(case, _tampered(case.block(), shift))
    assert "A4-reciprocity" in failures["MO"]
    assert "A4-reciprocity" in failures["B1"] and "A4-reciprocity" in failures["S1"]
    assert not decision.commit


def test_a_wrong_line_price_or_flow_is_caught_by_the_lm():
    case = paper()

    def line_price(body):
        line = next(ln for ln in body["lines"] if ln["id"] == "2-3")
        line["price_up"] += 1 << 30  # +0.25 $/kW
        line["flow"] += 1 << 30

    decision, failures = _all_votes(case, _tampered(case.block(), line_price))
    assert {"L3-charge", "L0-line-record"} <= failures["LM"]
    assert not decision.commit


def test_a_block_missing_a_pair_cannot_be_checked():
    case = paper()
    block = case.block()
    body = copy.deepcopy(block.body)
    del body["trades"][0]
    body["settlement"]["trades"].pop(0)
    broken = dataclasses.replace(block, body=body)
    with pytest.raises(BlockError, match="no trade for pairs"):
        block_solution(broken, case.setup)
    other_market = market_block(1, block.prev_hash, "r", 1, small_trades(), SMALL_LINES)
    with pytest.raises(BlockError, match="no trade for pairs"):
        block_solution(other_market, case.setup)  # has 4 of the paper's 12 pairs
