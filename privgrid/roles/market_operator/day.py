"""The Market Operator for a whole day (docs/feeder.md): it runs the day's sequence.

For each interval of the plan the MO announces the interval (``interval``, at its opening
round: the round after the previous interval's stop), then runs it exactly as a single market —
round clock, stop, final reports, block, votes (:class:`~.node.OperatorNode`) — and, when the
interval is over, hands it to the process layer (``on_done``: commit the block, write the
interval's record) before it announces the next one. A warm-started interval's steps begin at
the previous interval's last exponent if it has the same agents, else at 0
(:func:`~privgrid.market.warm.carried_exponent`). ``closed`` follows the day's last interval, or a
failure: a participant that left (``on_missing = "abort"``), a round timeout, a protocol
violation, a ledger that refused the append. An interval that does not converge (round limit),
or whose block a participant's Proof-of-Solution checks refuse, is recorded without a block and
the day goes on, as the in-process day does (each party starts the next interval from what it
holds); the MO's status is then 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privgrid.logs import ParticipantLog
from privgrid.market.warm import carried_exponent
from privgrid.privacy import PrivacyMode
from privgrid.roles.daylayer import DayLayer
from privgrid.roles.dayplan import DayPlan
from privgrid.roles.market_operator.node import OperatorNode, TraceRow
from privgrid.runtime import (
    CHECKPOINT,
    EXIT_FAILURE,
    EXIT_NOT_CONVERGED,
    EXIT_OK,
    Action,
    Checkpoint,
    Node,
)
from privgrid.scenario import LM_ID, MO_ID, Scenario, ScenarioError
from privgrid.wire import topics
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.kinds import Closed, IntervalStart, Stop, ViolationReport

if TYPE_CHECKING:
    from privgrid.roles.market_operator.proposal import Proposal


@dataclass(frozen=True)
class IntervalDone:
    """An interval the MO finished, for the process layer (``on_done``)."""

    index: int
    scenario: Scenario
    node: OperatorNode  # its outcome, stats and rounds


class DayOperator(DayLayer):
    """The MO of a day: the runtime's node for its whole session."""

    def __init__(
        self,
        plan: DayPlan,
        first: Scenario,
        mode: PrivacyMode,
        log: ParticipantLog,
        *,
        proposal_for: Callable[[int, Scenario], Proposal | None],
        on_done: Callable[[IntervalDone], None],
        progress_for: Callable[[int], Callable[[TraceRow], None] | None] = lambda _: None,
    ) -> None:
        """``proposal_for(index, scenario)``: an interval's block proposal (on the ledger's head
        when the interval begins; None: no ledger). ``on_done``: the process layer's work at
        the end of each interval (it may set the outcome's ``error``: the day then fails).
        ``progress_for(index)``: the interval's per-round callback."""
        super().__init__(MO_ID, log, plan, mode, first.timeouts)
        self.proposal_for = proposal_for
        self.on_done = on_done
        self.progress_for = progress_for
        self.interval_message: Outgoing | None = None  # the current interval's, sent again
        #: The day's ``closed`` broadcast, once made: a restart after it sends it again and
        #: exits (the participants that heard it have left: nobody to wait for).
        self.closed_message: Outgoing | None = None
        self.not_cleared = 0  # intervals without a block (round limit, or votes refused it)
        self.error: str | None = None  # why the day failed
        #: The next interval (index, opening round, exponent) and when it opens, during a
        #: ``pause_s``; a restart in the pause ends the interval again and pauses afresh.
        self.pending: tuple[int, int, int, float] | None = None

    @property
    def node(self) -> OperatorNode | None:
        """The interval's MO node (None before the first interval)."""
        return self.inner if isinstance(self.inner, OperatorNode) else None

    def peers(self) -> set[str]:
        return {*self.plan.agent_ids, LM_ID}

    def start(self, now: float) -> list[Action]:
        self.last_heard = now
        if self.restored and self.inner is not None:
            return self._resume(now)
        self.log.info("every participant announced itself; the day begins")
        return self._begin(1, 1, 0, now)

    # -- the sequence ------------------------------------------------------------------------
    def _begin(self, index: int, opening: int, exponent: int, now: float) -> list[Action]:
        try:
            scenario = self.plan.load(index)
        except ScenarioError as exc:
            return self._fail(f"interval {index}: {exc}")
        warm = self.plan.warm_start and index > 1
        if warm and self.node is not None:  # the previous interval's last exponent, maybe
            exponent = carried_exponent(self.node.agents, scenario.agent_ids, exponent)
        inner = OperatorNode(
            scenario,
            self.mode,
            self.log,
            self.progress_for(index),
            self.proposal_for(index, scenario),
            opening=opening,
            exponent=exponent if warm else 0,
            last=False,
        )
        self.switch(index, opening, inner)
        body = IntervalStart(index, self.plan.digest(index), warm)
        self.interval_message = Outgoing(topics.BROADCAST, opening, body)
        self.log.info(
            "interval %d of %d (%s) begins after round %d%s",
            index,
            len(self.plan.intervals),
            self.plan.interval(index).start,
            opening,
            f", warm, steps exponent {inner.steps.exponent}" if warm else "",
        )
        started = [a for a in inner.start(now) if not isinstance(a, Checkpoint)]
        return [CHECKPOINT, self.interval_message, *started]

    def begin_interval(self, opening: int, body: IntervalStart, now: float) -> list[Action]:
        return []  # our own broadcast, echoed (the runtime drops those anyway)

    def interval_ended(self, code: int, now: float) -> list[Action]:
        inner = self.node
        assert inner is not None
        outcome = inner.outcome
        self.on_done(IntervalDone(self.index, inner.scenario, inner))
        refused = outcome.decision is not None and not outcome.decision.commit
        if refused:
            self.log.warning("interval %d has no block: %s", self.index, outcome.error)
        elif outcome.error is not None or code not in (EXIT_OK, EXIT_NOT_CONVERGED):
            error = outcome.error or f"the MO's node ended with status {code}"
            return self._fail(f"interval {self.index}: {error}")
        if refused or not outcome.converged:
            self.not_cleared += 1
        if self.index == len(self.plan.intervals):
            return self._close(now)
        following = (self.index + 1, inner.round + 1, inner.steps.exponent)
        if self.plan.pause_s > 0:  # opened by a tick once the pause is over
            self.pending = (*following, now + self.plan.pause_s)
            self.log.info("a pause of %g s before interval %d", self.plan.pause_s, following[0])
            return []
        return self._begin(*following, now)

    def between_intervals(self, now: float) -> list[Action]:
        """The next interval opens when ``[day] pause_s`` has passed since the last one ended
        (the participants fill their pools meanwhile; a real deployment would wait for the
        next quarter hour)."""
        if self.pending is None or now < self.pending[3]:
            return []
        index, opening, exponent, _ = self.pending
        self.pending = None
        self.last_heard = now  # the pause was ours, not the participants' silence
        return self._begin(index, opening, exponent, now)

    def _close(self, now: float) -> list[Action]:
        count = len(self.plan.intervals)
        reason = f"the day is over: {count - self.not_cleared} of {count} intervals cleared"
        self.log.info("%s", reason)
        self.finish(EXIT_NOT_CONVERGED if self.not_cleared else EXIT_OK)
        return self._broadcast_closed(self.not_cleared == 0, reason)

    def _fail(self, error: str) -> list[Action]:
        self.error = error
        self.log.error("the day ends: %s", error)
        self.finish(EXIT_FAILURE)
        return self._broadcast_closed(False, error)

    def _broadcast_closed(self, committed: bool, reason: str) -> list[Action]:
        round_ = self.node.round if self.node is not None else 0
        self.closed_message = Outgoing(topics.BROADCAST, round_, Closed(committed, reason))
        return [CHECKPOINT, self.closed_message]

    def earlier(self, message: Message) -> list[Action]:
        """A violation report about an earlier interval, after its block: the block was
        computed with a value someone refutes, so the day cannot go on as if it stood."""
        body = message.body
        if isinstance(body, ViolationReport):
            return self._fail(
                f"protocol violation by {body.offender} in round {message.round}: "
                f"{body.reason} (reported by {message.sender} after that interval ended)"
            )
        return []

    def _is_later(self, message: Message) -> bool:
        return False  # nobody runs ahead of the MO

    # -- faults and restarts -----------------------------------------------------------------
    def report_violation(
        self, offender: str, reason: str, evidence: Sequence[bytes], round_: int
    ) -> list[Action]:
        if self.inner is None:
            return super().report_violation(offender, reason, evidence, round_)
        return self._after(self.inner.report_violation(offender, reason, evidence, round_), 0.0)

    def give_up(self, reason: str) -> list[Action]:
        """Not everyone came: tell those who did (as a single market's MO does)."""
        self.error = reason
        self.finish(EXIT_FAILURE)
        return [Outgoing(topics.BROADCAST, 0, Stop(converged=False, reason=reason))]

    def peer_restarted(self, peer: str, completed: int, new_keys: bool, now: float) -> list[Action]:
        """A participant rejoined: the current interval's broadcast first (it may have
        restarted from an earlier interval), then what the interval's node sends again."""
        again = super().peer_restarted(peer, completed, new_keys, now)
        return ([self.interval_message] if self.interval_message is not None else []) + again

    def in_interval(self) -> bool:
        return True

    def last_words(self) -> list[Action]:
        """Restarted after the day's ``closed`` (its checkpoint is saved right before the
        broadcast): the day is over and recorded; ``closed`` again for whoever is still
        there (the crash may have come before it went out), then exit."""
        self.log.info("the day was closed before the restart: closing it again")
        return [] if self.closed_message is None else [self.closed_message]

    def _resume(self, now: float) -> list[Action]:
        inner = self.node
        assert inner is not None
        if inner.exit_code is not None:  # the interval ended before the crash: go on
            return self.interval_ended(inner.exit_code, now)
        again = [self.interval_message] if self.interval_message is not None else []
        return again + self._after(inner.start(now), now)

    def day_snapshot(self) -> dict[str, Any]:
        last = self.interval_message
        closed = self.closed_message
        return {
            "announcement": None if last is None else last.to_state(),
            "not_cleared": self.not_cleared,
            "closed": None if closed is None else closed.to_state(),
            "exit_code": self.exit_code,
            "error": self.error,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        super().restore(state)
        last = state["announcement"]
        self.interval_message = None if last is None else Outgoing.from_state(last)
        self.not_cleared = int(state["not_cleared"])
        closed = state["closed"]
        if closed is not None:  # the day was over: nothing is left but to say so again
            self.closed_message = Outgoing.from_state(closed)
            self.error = state["error"]
            self.finish(int(state["exit_code"]))

    def rebuild(self, index: int, opening: int, state: Mapping[str, Any]) -> Node:
        scenario = self.plan.load(index)
        return OperatorNode(
            scenario,
            self.mode,
            self.log,
            self.progress_for(index),
            self.proposal_for(index, scenario),
            opening=opening,
            last=False,
        )
