"""The adversaries wrap or subclass the honest code from outside it (privgrid/attack/), and the
agents and the LM vote through one validator base (privgrid/roles/voter.py).

In process, no broker: the honest modules know nothing of the attacks; each adversary deviates
where its experiment says and nowhere else; a validator votes once, on a block it awaits, and
its clocks end a run that went quiet. The attacks' effects on whole runs are the grid tests'
(tests/test_collusion.py, tests/test_grid_secure.py, tests/test_grid_ledger.py).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import replace

import numpy as np
import pytest

from privgrid.attack.lying import LyingDecryptor
from privgrid.attack.tampering import TamperingProposal, tamper
from privgrid.crypto.codec import decode_residue
from privgrid.crypto.identity import Identity
from privgrid.ledger import Block, LedgerError, Vote, market_block
from privgrid.ledger.block import ZERO_HASH
from privgrid.ledger.cleared import Cleared
from privgrid.logs import ParticipantLog
from privgrid.market.fixedpoint import encode_scalar
from privgrid.market.kkt import Check
from privgrid.market.setup import build_setup
from privgrid.privacy.paillier import PaillierExchange
from privgrid.roles.voter import Voter
from privgrid.runtime import CHECKPOINT, EXIT_FAILURE, EXIT_OK, Action
from privgrid.scenario import MO_ID
from privgrid.wire.channel import Message
from privgrid.wire.kinds import BlockVote, PriceProof
from tests.test_pair_protocol import deliver, keys, shares  # noqa: F401  (keys is a fixture)
from tests.test_perf_wiring import scenario

HONEST = (
    "privgrid.roles.agent.node",
    "privgrid.roles.line_manager.node",
    "privgrid.roles.market_operator.node",
    "privgrid.roles.market_operator.proposal",
    "privgrid.privacy",
    "privgrid.privacy.paillier.exchange",
    "privgrid.ledger.cleared",
)


@pytest.mark.parametrize("name", HONEST)
def test_the_honest_code_reads_as_if_attacks_did_not_exist(name):
    source = inspect.getsource(importlib.import_module(name))
    assert "privgrid.attack" not in source
    for word in ("colluder", "lying", "lie_from_round", "tamper", "behaviour"):
        assert word not in source.lower(), f"{name} mentions {word!r}"


def log(me: str) -> ParticipantLog:
    return ParticipantLog(logging.getLogger(f"test.adversaries.{me}"), me)


# --- the lying decryptor: its claims deviate, its proofs and its own price do not -------------
def test_the_lying_decryptor_changes_only_the_claimed_price_from_its_round(keys):  # noqa: F811
    s1k, b1k = keys
    own, peer = shares(3)
    claims = {}
    for liar in (False, True):
        cls = LyingDecryptor if liar else PaillierExchange
        options = {"lie": 0.01, "from_round": 2} if liar else {}
        for round_ in (1, 2):
            s1, b1 = cls("S1", ["B1"], s1k, **options), PaillierExchange("B1", ["S1"], b1k)
            (share_own,) = s1.begin(round_, own[:1], peer[:1])
            b1.begin(round_, own[1:], peer[1:])
            (share_peer,) = b1.handle(deliver(share_own, "S1"))
            (proof,) = s1.handle(deliver(share_peer, "B1"))
            assert isinstance(proof.body, PriceProof)
            claims[liar, round_] = (proof.body, s1._own[0])
    n = s1k.keypair.n
    claimed = {k: decode_residue(int.from_bytes(b.x, "big"), n) for k, (b, _) in claims.items()}
    assert claimed[True, 1] == claimed[False, 1] == claims[False, 1][1]  # honest before round 2
    assert claimed[True, 2] == claims[False, 2][1] + encode_scalar(0.01)  # then off by the lie
    assert claims[True, 2][1] == claims[False, 2][1]  # it keeps the true price itself


# --- the tampering MO: the honest block of an altered market -------------------------------
def cleared_market():
    from privgrid.market.negotiation import negotiate
    from privgrid.market.setup import agent_costs

    setup = build_setup(scenario(mode="plain"))
    result = negotiate(setup, agent_costs(setup.scenario))
    s = result.state
    return setup, Cleared.from_reals(result.rounds, s.trades, s.prices, s.charges, s.line_prices)


@pytest.mark.parametrize("behaviour", ["tamper-trade", "tamper-price", "suboptimal"])
def test_each_tampering_alters_the_cleared_market_as_documented(behaviour):
    setup, honest = cleared_market()
    altered = tamper(honest, behaviour, setup)
    moved = {
        name: np.flatnonzero(getattr(altered, name) != getattr(honest, name))
        for name in ("trades", "prices", "charges", "eta_up", "eta_down")
    }
    if behaviour == "tamper-trade":
        assert list(moved["trades"]) == [0, 1] and not moved["prices"].size
        assert altered.trades.sum() == honest.trades.sum()  # moved on both sides
    elif behaviour == "tamper-price":
        assert list(moved["prices"]) == [0, 1] and not moved["trades"].size
    else:
        assert moved["trades"].size and not moved["prices"].size
        assert np.all(np.abs(altered.trades) <= np.abs(honest.trades))
    assert not (moved["charges"].size or moved["eta_up"].size or moved["eta_down"].size)


def test_the_tampering_proposal_refuses_an_unknown_behaviour():
    setup, _ = cleared_market()
    with pytest.raises(ValueError, match="unknown MO behaviour 'honest'"):
        TamperingProposal(setup, Identity.generate(), BLOCK, BLOCK, "r", log("MO"), "honest")


# --- one voting base for the agents and the LM ----------------------------------------------
class Validator(Voter):
    """The smallest role that votes: its block checks are given."""

    def __init__(self, checks: list[Check], identity: Identity | None = None) -> None:
        super().__init__("S1", log("S1"), scenario(mode="plain"), identity or Identity.generate())
        self.checks = checks

    def peers(self) -> set[str]:
        return {MO_ID}

    def start(self, now: float) -> list[Action]:
        return []

    def handle(self, message: Message, now: float) -> list[Action]:
        return []

    def block_checks(self, block: Block) -> list[Check]:
        if block.height > 5:
            raise LedgerError("a block beyond this market")
        return self.checks


BLOCK = market_block(1, ZERO_HASH, "r", 1, [], [], timestamp=0)


def test_a_validator_votes_once_on_the_block_it_awaits_and_signs_its_verdict():
    failing = Check("A1-bounds", "agent S1", 1.0, 0.0)
    for checks, accept in (([], True), ([failing], False)):
        node = Validator(checks)
        assert node._vote(9, BLOCK.to_bytes()) == []  # not awaiting one: ignored
        node._expect_block(converged=True)
        out = node._vote(9, BLOCK.to_bytes())
        assert out[0] is CHECKPOINT and out[1].recipient == MO_ID and out[1].round == 9
        body = out[1].body
        assert isinstance(body, BlockVote)
        vote = Vote.from_bytes(body.vote)
        assert (vote.voter, vote.accept, vote.block_hash) == ("S1", accept, BLOCK.hash)
        assert node.voted and node.exit_code is None
        assert node._vote(9, BLOCK.to_bytes()) == []  # once


def test_a_validator_does_not_vote_on_a_malformed_block_and_ends_well():
    node = Validator([])
    node._expect_block(converged=True)
    assert node._vote(9, b"not a block") == []
    assert node.exit_code == EXIT_OK and not node.voted
    node = Validator([])
    node._expect_block(converged=True)
    assert node._vote(9, replace(BLOCK, height=6).to_bytes()) == []  # its checks refuse it
    assert node.exit_code == EXIT_OK


def test_a_run_that_did_not_converge_brings_no_block_to_wait_for():
    node = Validator([])
    node._expect_block(converged=False)
    assert node.exit_code == EXIT_OK and not node.awaiting_block


@pytest.mark.parametrize(
    ("state", "code"), [("awaiting_block", EXIT_FAILURE), ("voted", EXIT_OK)]
)
def test_a_validators_clocks_end_its_wait_for_the_block_or_for_closed(state, code):
    node = Validator([])
    setattr(node, state, True)
    finish = node.finish_timeout
    node._check_clocks(finish)  # just within
    assert node.exit_code is None
    node._check_clocks(finish + 0.1)
    assert node.exit_code == code


def test_a_validator_gives_up_after_its_whole_run_timeout_of_silence():
    node = Validator([])
    node._check_clocks(node.timeout)
    assert node.exit_code is None
    node._check_clocks(node.timeout + 0.1)
    assert node.exit_code == EXIT_FAILURE
