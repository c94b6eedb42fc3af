"""The MO's block proposal: the cleared market as a ledger block, its own vote, the decision.

After a converged run the MO turns the final reports into a market block (cleared trades with
both sides' prices and charges, line flows and prices, settlement), broadcasts it, votes on it
(its part of Proof of Solution: reciprocity and price agreement on every pair) and applies the
commit rule to everyone's signed votes. The append itself (I/O) happens in the process.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from privgrid.crypto.identity import Identity
from privgrid.ledger import Block, Decision, LedgerError, Vote, commit_decision
from privgrid.ledger.cleared import Cleared, cleared_block
from privgrid.ledger.genesis import quorum_of, required_voters, roster_of
from privgrid.ledger.pos import mo_checks, vote_on
from privgrid.logs import ParticipantLog
from privgrid.market.kkt import excluding_pairs
from privgrid.market.setup import MarketSetup
from privgrid.roles.market_operator.node import RunOutcome
from privgrid.scenario import MO_ID


def cleared_of(setup: MarketSetup, outcome: RunOutcome) -> Cleared:
    """The cleared market as the final reports state it: every agent's fixed-point trades,
    prices and charges in its slots, the LM's line prices.

    Raises:
        LedgerError: a report is missing or does not fit the market.
    """
    g = setup.graph
    vectors = {name: np.zeros(g.n_trades, dtype=np.int64) for name in ("P", "lam", "c")}
    for i, agent in enumerate(g.agent_ids):
        final = outcome.finals.get(agent)
        if final is None:
            raise LedgerError(f"no final report from {agent}")
        for name, vector in vectors.items():
            values = getattr(final, name)
            if len(values) != len(g.slots[i]):
                raise LedgerError(
                    f"{agent}'s final report has {len(values)} {name} values for "
                    f"{len(g.slots[i])} trades"
                )
            vector[g.slots[i]] = values
    lm = outcome.lm_final
    if lm is None:
        raise LedgerError("no final report from the LM")
    return Cleared(
        outcome.rounds,
        vectors["P"],
        vectors["lam"],
        vectors["c"],
        np.array(lm.eta_up, dtype=np.int64),
        np.array(lm.eta_down, dtype=np.int64),
    )


class Proposal:
    """Everything the MO needs to propose one block on top of ``head`` and decide on it."""

    def __init__(
        self,
        setup: MarketSetup,
        identity: Identity,
        genesis: Block,
        head: Block,
        run: str,
        log: ParticipantLog,
    ) -> None:
        self.setup = setup
        self.identity = identity
        self.genesis = genesis
        self.head = head
        self.run = run
        self.log = log

    @property
    def voters(self) -> Sequence[str]:
        return required_voters(self.genesis)

    def cleared(self, outcome: RunOutcome) -> Cleared:
        """The cleared market the block records: the final reports' (:func:`cleared_of`)."""
        return cleared_of(self.setup, outcome)

    def build(self, outcome: RunOutcome) -> Block:
        """The block of the final reports on top of ``head`` (:class:`LedgerError` if the
        reports do not make a market of this scenario)."""
        return cleared_block(
            self.setup,
            self.cleared(outcome),
            height=self.head.height + 1,
            prev_hash=self.head.hash,
            run=self.run,
        )

    def own_vote(self, block: Block, dropped: Sequence[Sequence[str]] = ()) -> Vote:
        checks = excluding_pairs(mo_checks(block, self.setup), dropped)
        return vote_on(self.identity, MO_ID, block, checks)

    def decide(self, block: Block, votes: Sequence[Vote]) -> Decision:
        return commit_decision(
            votes,
            self.voters,
            quorum_of(self.genesis),
            block_hash=block.hash,
            roster=roster_of(self.genesis),
        )
