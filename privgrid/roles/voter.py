"""What the agents and the LM share as validators: the Proof-of-Solution vote and its clocks.

After a converged run the MO proposes a block; each validator checks its own part of the KKT
conditions on it (the role says which: :meth:`Voter.block_checks`), signs the verdict and
sends it to the MO, then waits for the MO's ``closed``. The waits are bounded by
``timeouts.finish``: no block within it is a failure, no ``closed`` after the vote is not (the
vote is cast). Silence longer than the role's whole-run timeout ends the process too.
"""

from __future__ import annotations

from abc import abstractmethod

from privgrid.crypto.identity import Identity
from privgrid.ledger import Block, LedgerError
from privgrid.ledger.pos import vote_on
from privgrid.logs import ParticipantLog
from privgrid.market.kkt import Check
from privgrid.runtime import CHECKPOINT, EXIT_FAILURE, EXIT_OK, Action, Node
from privgrid.scenario import MO_ID, Scenario
from privgrid.wire.channel import Outgoing
from privgrid.wire.kinds import BlockVote


class Voter(Node):
    """A participant that votes on the MO's block (the agents and the LM)."""

    def __init__(
        self, me: str, log: ParticipantLog, scenario: Scenario, identity: Identity | None
    ) -> None:
        super().__init__(me, log)
        self.identity = identity  # signs the vote; None: this participant does not vote
        self.awaiting_block = False  # our final report is in; the block comes next
        self.voted = False  # waiting for the MO's ``closed`` after our vote
        self.last_heard = 0.0
        self.last_mo: Outgoing | None = None  # our last message to the MO
        timeouts = scenario.timeouts
        self.finish_timeout = timeouts.finish
        self.wait_missing = timeouts.on_missing == "wait"
        self.timeout = timeouts.round + timeouts.finish  # silence that ends the run for us
        if self.wait_missing:  # the MO (or LM) may be away for up to timeouts.missing
            self.timeout += timeouts.missing

    @abstractmethod
    def block_checks(self, block: Block) -> list[Check]:
        """This role's part of Proof of Solution on ``block`` (``LedgerError``: malformed)."""

    def _expect_block(self, converged: bool) -> None:
        """After our final report: a converged run's block comes next, else we are done."""
        if converged and self.identity is not None:
            self.awaiting_block = True
        else:
            self.finish(EXIT_OK)

    def _vote(self, round_: int, raw: bytes) -> list[Action]:
        """Check our part of the proposed block and send the signed verdict to the MO."""
        if not self.awaiting_block or self.identity is None:
            self.log.warning("ignored a block: not waiting for one")
            return []
        self.awaiting_block = False
        try:
            block = Block.from_bytes(raw)
            checks = self.block_checks(block)
        except LedgerError as exc:
            self.log.error("the proposed block is malformed: %s; not voting", exc)
            self.finish(EXIT_OK)
            return []
        for check in (c for c in checks if not c.passed):
            self.log.warning(
                "block check %s failed at %s: %.3g > %.3g",
                check.condition,
                check.subject,
                check.value,
                check.tolerance,
            )
        self.voted = True  # stay until the MO closes the run: it may need the vote again
        vote = vote_on(self.identity, self.me, block, checks)
        self.log.info(
            "%s block %d (%s…)",
            "accept" if vote.accept else "REJECT",
            block.height,
            block.hash_hex[:16],
        )
        self.last_mo = Outgoing(MO_ID, round_, BlockVote(vote.to_bytes()))
        return [CHECKPOINT, self.last_mo]

    def _closed(self, reason: str) -> list[Action]:
        self.log.info("the MO closed the run: %s", reason)
        self.finish(EXIT_OK)
        return []

    def _check_clocks(self, now: float) -> None:
        """The waits for the block, for ``closed`` after our vote, and for anything at all."""
        quiet = now - self.last_heard
        if self.voted and quiet > self.finish_timeout:
            self.log.warning("the MO did not close the run; leaving with our vote cast")
            self.finish(EXIT_OK)
        if self.awaiting_block and quiet > self.finish_timeout:
            self.log.error("no block to vote on within %g s", self.finish_timeout)
            self.finish(EXIT_FAILURE)
        if quiet > self.timeout:
            self.log.error("nothing heard for %.0f s; giving up", quiet)
            self.finish(EXIT_FAILURE)
