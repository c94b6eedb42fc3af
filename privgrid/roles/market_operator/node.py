"""The Market Operator's protocol logic: the round clock and the stopping rule.

It starts round 1 once every participant has announced itself, collects each round's residuals
(r_d, r_C from every agent; r_P, r_L from the LM), applies the stopping test of
:mod:`privgrid.market.stopping`, and broadcasts the next round — with its step exponent, from
the step controller of :mod:`privgrid.market.steps` — or ``stop``. A participant that
leaves (its signed last will), or a round that does not complete within the timeout, ends the
run with an error naming who is missing. After ``stop`` it collects the final reports; what
becomes of them (results, ledger) is the process layer's business (:attr:`outcome`).

A market of a day (docs/feeder.md) begins after an *opening* round: its round numbers continue
the day's (so every message key stays unique in the day's one session), while the outcome, the
trace and the round limit count this market's own rounds, 1, 2, …; a warm-started market's
steps begin at the previous market's last exponent. ``closed`` follows only the day's last
market (``last``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from privgrid.ledger import Block, Decision, LedgerError, Vote
from privgrid.logs import ParticipantLog
from privgrid.market.fixedpoint import decode_scalar
from privgrid.market.setup import TradeGraph
from privgrid.market.steps import StepController
from privgrid.market.stopping import AgentReport, Residuals, converged, round_residuals
from privgrid.privacy import PrivacyMode
from privgrid.runtime import (
    CHECKPOINT,
    EXIT_FAILURE,
    EXIT_NOT_CONVERGED,
    EXIT_OK,
    Action,
    Node,
)
from privgrid.scenario import LM_ID, MO_ID, Scenario
from privgrid.wire import topics
from privgrid.wire.body import Body
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.kinds import (
    AgentFinal,
    AgentResiduals,
    BlockProposal,
    BlockVote,
    Closed,
    Gone,
    LinePriceUpdate,
    LmFinal,
    LmResiduals,
    Round,
    Stop,
    ViolationReport,
)
from privgrid.wire.schema import fit_text

if TYPE_CHECKING:
    from privgrid.roles.market_operator.proposal import Proposal



class Phase(StrEnum):
    """Where the MO is: the round clock runs; final reports come in; votes come in; over."""

    RUNNING = "running"
    FINISHING = "finishing"
    VOTING = "voting"
    DONE = "done"


#: After a failure, how long the MO waits at most for the final reports (and any further
#: violation reports) of those still there: enough for live participants, who answer at once.
FAILED_FINISH_SECONDS = 5.0


@dataclass
class TraceRow:
    round: int
    residuals: Residuals
    elapsed: float  # seconds since round 1 started


@dataclass
class RunOutcome:
    """Everything the MO knows when the negotiation ends."""

    converged: bool = False
    rounds: int = 0
    reason: str = ""
    error: str | None = None
    trace: list[TraceRow] = field(default_factory=list)
    finals: dict[str, AgentFinal] = field(default_factory=dict)  # agent id → final report
    lm_final: LmFinal | None = None
    started: float = 0.0  # perf_counter at round 1
    stopped: float = 0.0  # perf_counter at the stop
    finished: float = 0.0  # perf_counter when the finals were in
    violations: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # pairs removed (drop_pair)
    block: Block | None = None  # the proposed block (converged runs with a ledger)
    votes: dict[str, Vote] = field(default_factory=dict)
    decision: Decision | None = None


class OperatorNode(Node):
    def __init__(
        self,
        scenario: Scenario,
        mode: PrivacyMode,
        log: ParticipantLog,
        on_progress: Callable[[TraceRow], None] | None = None,
        proposal: Proposal | None = None,
        *,
        opening: int = 0,
        exponent: int = 0,
        last: bool = True,
    ) -> None:
        """``opening``: the round before this market's first (a day's market; 0 alone).
        ``exponent``: the step exponent to begin at (a warm start: the previous market's last).
        ``last``: broadcast ``closed`` at the end (False: a day goes on with its next market).
        """
        super().__init__(MO_ID, log)
        self.mode = mode
        self.proposal = proposal  # None: no ledger
        self.scenario = scenario
        self.graph = TradeGraph.from_scenario(scenario)
        self.market = scenario.market
        self.steps = StepController.for_market(scenario.market, exponent=exponent)
        self.agents = list(self.graph.agent_ids)
        self.expected = {*self.agents, LM_ID}
        self.on_progress = on_progress
        self.phase = Phase.RUNNING
        self.opening = opening
        self.last = last
        self.round = opening  # the day's round numbers (``self.rounds``: this market's count)
        self.round_started = 0.0
        self.stop_sent_at = 0.0
        self.agent_residuals: dict[str, AgentReport] = {}
        self.lm_residuals: tuple[float | None, float] | None = None
        self.outcome = RunOutcome()
        # Faults and restarts (docs/reliability.md).
        self.wait_missing = scenario.timeouts.on_missing == "wait"
        self.missing: dict[str, float] = {}  # participant → when it left
        self.paused_at = 0.0
        self.last_broadcast: Outgoing | None = None  # the phase message, sent again on restart
        self.outbox: list[Action] = []
        #: After a failure: participants not expected to send a final report (they left).
        self.absent: set[str] = set()

    def peers(self) -> set[str]:
        return set(self.expected)

    @property
    def rounds(self) -> int:
        """Rounds of this market so far (the day's round numbers continue across markets)."""
        return self.round - self.opening

    def start(self, now: float) -> list[Action]:
        if self.restored:
            return self._resume(now)
        self.log.info("every participant announced itself; starting round 1")
        self.outcome.started = time.perf_counter()
        return self._next_round(now)

    def _broadcast(self, body: Body) -> list[Action]:
        """A phase message for everyone, checkpointed first: a restarted MO sends it again."""
        self.last_broadcast = Outgoing(topics.BROADCAST, self.round, body)
        return [CHECKPOINT, self.last_broadcast]

    # -- rounds -------------------------------------------------------------------------------
    def _next_round(self, now: float) -> list[Action]:
        self.round += 1
        self.log.round = self.round
        self.round_started = now
        self.agent_residuals, self.lm_residuals = {}, None
        steps = self.steps.exponent if self.steps.adaptive else None
        return self._broadcast(Round(tuple(self.outcome.dropped) or None, steps))

    def _stop(
        self,
        now: float,
        *,
        ok: bool,
        reason: str,
        error: str | None = None,
        absent: Iterable[str] = (),
    ) -> list[Action]:
        """Broadcast ``stop`` and collect the final reports.

        After a failure (``error``) the run is over whatever comes next, but the MO still
        collects, for at most :data:`FAILED_FINISH_SECONDS`, the final reports of those still
        there (all but ``absent``: their last state and traffic counters go into the
        results) and any further violation reports (several reporters, or one reporter with
        several offenders, all end up in the results, not only the first)."""
        outcome = self.outcome
        stopped_before = self.phase in (Phase.FINISHING, Phase.VOTING)  # a failure after the stop
        outcome.converged, outcome.rounds, outcome.reason = ok, self.rounds, reason
        outcome.error = error
        outcome.stopped = time.perf_counter()
        self.phase, self.stop_sent_at = Phase.FINISHING, now
        log = self.log.info if ok else self.log.error
        log("stopping after round %d: %s", self.round, error or reason)
        if error is not None:
            self.absent |= set(absent) | set(self.missing)
            self.missing = {}
        body = Stop(converged=ok, reason=fit_text(error or reason))
        # One ``stop`` per run: a second, different one for the same round would read as an
        # equivocation of ours; the ``closed`` at the end tells everyone about the failure.
        outgoing: list[Action] = [CHECKPOINT] if stopped_before else self._broadcast(body)
        if error is not None and not self._awaited():  # every report was in already
            self._done()
        return outgoing

    def _awaited(self) -> set[str]:
        """Whose final report the MO still waits for."""
        reported = set(self.outcome.finals) | ({LM_ID} if self.outcome.lm_final else set())
        return self.expected - reported - self.absent

    def handle(self, message: Message, now: float) -> list[Action]:
        outgoing = self._handle(message, now)
        return outgoing + self._drain()

    def _drain(self) -> list[Action]:
        """Messages queued by :meth:`_done` (the ``closed`` broadcast)."""
        queued, self.outbox = self.outbox, []
        return queued

    def _handle(self, message: Message, now: float) -> list[Action]:
        sender = message.sender
        match message.body:
            case Gone():
                return self._departed(sender, now)
            case ViolationReport(offender=offender, reason=reason, evidence=evidence):
                return self._violation(sender, offender, reason, len(evidence), message.round, now)
            case AgentFinal() | LmFinal() as final:
                return self._final(sender, final, now)
            case LinePriceUpdate() | BlockProposal() | Round() | Stop() | Closed():
                return []  # broadcasts for the agents (our own come back too)
            case BlockVote(vote=raw):
                return self._vote(sender, raw)
        if self.phase != Phase.RUNNING:
            return []
        residuals = isinstance(message.body, AgentResiduals | LmResiduals)
        if message.round == self.round - 1 and residuals:
            return []  # re-sent to us after our restart; we had it before the checkpoint
        if message.round != self.round:
            self.log.warning(
                "dropped %s from %s for round %d (current round %d)",
                message.kind,
                sender,
                message.round,
                self.round,
            )
            return []
        match message.body:
            case AgentResiduals(r_d=r_d, r_C=r_c, r_P=r_p):
                self.agent_residuals[sender] = AgentReport(
                    decode_scalar(r_d),
                    decode_scalar(r_c),
                    None if r_p is None else decode_scalar(r_p),
                )
            case LmResiduals(r_L=r_l, r_P=r_p):
                reciprocity = None if r_p is None else decode_scalar(r_p)
                self.lm_residuals = (reciprocity, decode_scalar(r_l))
            case _:
                self.log.warning("dropped unexpected %s from %s", message.kind, sender)
                return []
        if self.lm_residuals is None or len(self.agent_residuals) < len(self.agents):
            return []
        return self._round_complete(now)

    def _round_complete(self, now: float) -> list[Action]:
        assert self.lm_residuals is not None
        reciprocity, line = self.lm_residuals
        reports = self.agent_residuals.values()
        if reciprocity is None and any(r.reciprocity is None for r in reports):
            self.log.warning("an agent did not report its reciprocity residual")
        residuals = round_residuals(reports, line, reciprocity)
        row = TraceRow(self.rounds, residuals, time.perf_counter() - self.outcome.started)
        self.outcome.trace.append(row)
        if self.on_progress is not None:
            self.on_progress(row)
        if converged(residuals, self.market.epsilon_p, self.market.epsilon_lambda):
            return self._stop(now, ok=True, reason="converged")
        if self.rounds >= self.market.max_rounds:
            return self._stop(now, ok=False, reason=f"round limit {self.market.max_rounds} reached")
        before = self.steps.exponent
        after = self.steps.observe(self.rounds, residuals)
        if after != before:
            self.log.info(
                "steps from round %d: exponent %d -> %d (tau = %g, alpha = %g; change %d of at "
                "most %d)",
                self.round + 1,
                before,
                after,
                math.ldexp(self.market.tau, after),
                math.ldexp(self.market.alpha, -after),
                self.steps.changes,
                self.steps.rule.max_changes,
            )
        return self._next_round(now)

    # -- faults ------------------------------------------------------------------------------
    def report_violation(
        self, offender: str, reason: str, evidence: Sequence[bytes], round_: int
    ) -> list[Action]:
        """A violation the MO saw itself (e.g. a second key announcement)."""
        return self._violation(self.me, offender, reason, len(evidence), round_, time.monotonic())

    def _violation(
        self, reporter: str, offender: str, reason: str, evidence: int, round_: int, now: float
    ) -> list[Action]:
        """Apply ``privacy.on_violation``: end the run naming the offender, or drop the pair."""
        self.outcome.violations.append(
            {
                "reporter": reporter,
                "offender": offender,
                "reason": reason,
                "round": round_,
                "evidence": evidence,
            }
        )
        self.log.error(
            "violation reported by %s against %s in round %d: %s",
            reporter,
            offender,
            round_,
            reason,
        )
        if self.phase in (Phase.FINISHING, Phase.VOTING) and self.outcome.error is None:
            # A deferred check (privacy.verify = "batch") failed after the stop: the result
            # was computed with the false value, so nothing is committed, whatever
            # on_violation says; the final reports still on their way are not needed.
            error = (
                f"protocol violation by {offender} in round {round_}: {reason} "
                f"(reported by {reporter} after the stop)"
            )
            return self._stop(now, ok=False, reason="protocol violation", error=error)
        if self.phase != Phase.RUNNING:
            return []
        first, second = sorted((reporter, offender))
        pair = (first, second)
        agents = set(self.agents)
        partners = (
            reporter in agents
            and offender in agents
            and any(set(p) == set(pair) for p in self.scenario.pairs)
        )
        if self.scenario.privacy.on_violation == "drop_pair" and partners:
            if pair not in self.outcome.dropped:
                self.outcome.dropped.append(pair)
                self.log.warning(
                    "removing pair %s-%s from the market (on_violation = drop_pair)", *pair
                )
            return []
        error = (
            f"protocol violation by {offender} in round {round_}: {reason} (reported by {reporter})"
        )
        return self._stop(now, ok=False, reason="protocol violation", error=error)

    def give_up(self, reason: str) -> list[Action]:
        """Not everyone came: tell those who did, so nobody waits for a round that never comes."""
        self.outcome.error = reason
        self.phase = Phase.DONE
        self.finish(EXIT_FAILURE)
        return [Outgoing(topics.BROADCAST, 0, Stop(converged=False, reason=fit_text(reason)))]

    def _departed(self, sender: str, now: float) -> list[Action]:
        if self.outcome.error is not None:  # the run failed already: one report fewer to await
            self.absent.add(sender)
            if self.phase == Phase.FINISHING and not self._awaited():
                self._done()
            return []
        if self.wait_missing and self.phase in (Phase.RUNNING, Phase.FINISHING, Phase.VOTING):
            if not self.missing:
                self.paused_at = now
            self.missing[sender] = now
            self.log.warning(
                "%s left the run during round %d; the round clock is paused for up to %g s "
                "while it may rejoin (timeouts.on_missing = wait)",
                sender,
                self.round,
                self.scenario.timeouts.missing,
            )
            return []
        if self.phase == Phase.RUNNING:
            error = f"participant {sender} left the run during round {self.round}"
            return self._stop(
                now, ok=False, reason="participant left", error=error, absent=[sender]
            )
        if self.phase == Phase.FINISHING and sender not in self.outcome.finals and sender != LM_ID:
            self.log.warning("%s left before sending its final report", sender)
        return []

    def tick(self, now: float) -> list[Action]:
        return self._tick(now) + self._drain()

    def _tick(self, now: float) -> list[Action]:
        timeouts = self.scenario.timeouts
        if self.missing:
            if self.phase == Phase.DONE or now - self.paused_at <= timeouts.missing:
                return []  # the round clock is paused
            names = ", ".join(sorted(self.missing))
            gone = list(self.missing)
            self.missing = {}
            error = (
                f"participant {names} left the run during round {self.round} and did not "
                f"rejoin within {timeouts.missing:g} s"
            )
            if self.phase != Phase.RUNNING:
                self.outcome.error = error
                self.log.error("%s", error)
                self._done()
                return []
            return self._stop(now, ok=False, reason="participant left", error=error, absent=gone)
        if self.phase == Phase.RUNNING and now - self.round_started > timeouts.round:
            missing = [a for a in self.agents if a not in self.agent_residuals]
            if self.lm_residuals is None:
                missing.append(LM_ID)
            return self._stop(
                now,
                ok=False,
                reason="round timeout",
                error=(
                    f"round {self.round} did not complete within {timeouts.round:g} s; "
                    f"no residuals from {', '.join(missing)}"
                ),
                # Not ``absent``: those waiting for a silent partner are alive and report.
            )
        if self.phase == Phase.VOTING and now - self.stop_sent_at > timeouts.finish:
            self.log.error("not every vote arrived within %g s", timeouts.finish)
            self._decide()
        failed = self.outcome.error is not None
        limit = min(timeouts.finish, FAILED_FINISH_SECONDS) if failed else timeouts.finish
        if self.phase == Phase.FINISHING and now - self.stop_sent_at > limit:
            awaited = ", ".join(sorted(self._awaited()))
            if failed:  # the failure stays the reason; the missing reports are a footnote
                self.log.warning("no final report from %s within %g s", awaited, limit)
            else:
                self.outcome.error = f"no final report from {awaited}"
                self.log.error("%s within %g s", self.outcome.error, limit)
            self._done()
        return []

    # -- restarts (docs/reliability.md) ---------------------------------------------------------
    def peer_restarted(
        self, peer: str, completed: int, new_keys: bool, now: float
    ) -> list[Action]:
        """A participant rejoined: resume the round clock; give it the phase message again."""
        if peer in self.missing:
            del self.missing[peer]
            if not self.missing:  # the clock runs again, minus the pause
                paused = now - self.paused_at
                self.round_started += paused
                self.stop_sent_at += paused
        self.log.info(
            "%s rejoined at round %d (its last completed: %d)", peer, self.round, completed
        )
        return [] if self.last_broadcast is None else [self.last_broadcast]

    def snapshot(self) -> dict[str, object]:
        o = self.outcome
        last = self.last_broadcast
        return {
            "round": self.round,
            "phase": str(self.phase),
            "elapsed": time.perf_counter() - o.started if o.started else 0.0,
            # The stop and the end as offsets from round 1 (the clocks are this process's):
            # a restarted MO's record measures the negotiation and the finish as they were.
            "stopped": o.stopped - o.started if o.stopped else None,
            "finished": o.finished - o.started if o.finished else None,
            "converged": o.converged,
            "rounds": o.rounds,
            "reason": o.reason,
            "error": o.error,
            "trace": [[r.round, r.elapsed, *astuple(r.residuals)] for r in o.trace],
            "finals": {agent: final.to_body() for agent, final in o.finals.items()},
            "lm_final": None if o.lm_final is None else o.lm_final.to_body(),
            "violations": o.violations,
            "dropped": [list(p) for p in o.dropped],
            "block": None if o.block is None else o.block.to_bytes(),
            "votes": {voter: vote.to_bytes() for voter, vote in o.votes.items()},
            "last_broadcast": None if last is None else last.to_state(),
            "steps": self.steps.snapshot(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        o = self.outcome
        self.round = int(state["round"])
        self.phase = Phase(state["phase"])
        o.started = time.perf_counter() - float(state["elapsed"])
        # Absent from an older checkpoint: unknown (0), as before this was kept.
        stopped, finished = state.get("stopped"), state.get("finished")
        o.stopped = 0.0 if stopped is None else o.started + float(stopped)
        o.finished = 0.0 if finished is None else o.started + float(finished)
        o.converged, o.rounds = bool(state["converged"]), int(state["rounds"])
        o.reason, o.error = str(state["reason"]), state["error"]
        o.trace = [
            TraceRow(int(r[0]), Residuals(*(float(x) for x in r[2:])), float(r[1]))
            for r in state["trace"]
        ]
        o.finals = {agent: AgentFinal.from_body(body) for agent, body in state["finals"].items()}
        lm = state["lm_final"]
        o.lm_final = None if lm is None else LmFinal.from_body(lm)
        o.violations = list(state["violations"])
        o.dropped = [(str(a), str(b)) for a, b in state["dropped"]]
        o.block = None if state["block"] is None else Block.from_bytes(state["block"])
        o.votes = {voter: Vote.from_bytes(raw) for voter, raw in state["votes"].items()}
        self.steps.restore(state["steps"])
        last = state["last_broadcast"]
        if last is not None:
            self.last_broadcast = Outgoing.from_state(last)
        self.log.round = self.round
        if self.phase == Phase.DONE:  # crashed after the end: only the commit may be left to do
            if o.block is not None and o.votes and self.proposal is not None:
                o.decision = self.proposal.decide(o.block, list(o.votes.values()))
            self.finish(self._exit_code())

    def resume_point(self) -> int:
        return self.round

    def _resume(self, now: float) -> list[Action]:
        """Start after a restart: the clocks run from now; the phase message goes out again."""
        self.round_started = self.stop_sent_at = now
        self.log.info("resuming in phase %s at round %d", self.phase, self.round)
        voters = set() if self.proposal is None else set(self.proposal.voters)
        if self.phase == Phase.VOTING and voters <= set(self.outcome.votes):
            self._decide()  # every vote was in before the crash
            return self._drain()
        if self.phase == Phase.RUNNING:
            self.agent_residuals, self.lm_residuals = {}, None
        return [] if self.last_broadcast is None else [self.last_broadcast]

    # -- the end -----------------------------------------------------------------------------
    def _final(self, sender: str, final: AgentFinal | LmFinal, now: float) -> list[Action]:
        if self.phase != Phase.FINISHING:
            self.log.warning("dropped %s from %s: the run has not stopped", final.KIND, sender)
            return []
        if isinstance(final, AgentFinal):
            self.outcome.finals[sender] = final
        else:
            self.outcome.lm_final = final
        if self.outcome.error is not None and not self._awaited():
            self._done()  # a failed run: everyone still there has reported
            return []
        if self.outcome.lm_final is not None and len(self.outcome.finals) == len(self.agents):
            outcome = self.outcome
            if outcome.converged and outcome.error is None and self.proposal is not None:
                return self._propose(now)
            self._done()
            return []
        return [CHECKPOINT]

    # -- the block -------------------------------------------------------------------------------
    def _propose(self, now: float) -> list[Action]:
        """Every final report is in: propose the block, cast the MO's own vote, await votes."""
        assert self.proposal is not None
        try:
            block = self.proposal.build(self.outcome)
        except LedgerError as exc:
            self.outcome.error = f"could not build the block: {exc}"
            self.log.error("%s", self.outcome.error)
            self._done()
            return []
        self.outcome.block = block
        self.outcome.votes[self.me] = self.proposal.own_vote(block, self.outcome.dropped)
        self.phase, self.stop_sent_at = Phase.VOTING, now
        self.log.info(
            "proposing block %d (%s…) for Proof of Solution", block.height, block.hash_hex[:16]
        )
        return self._broadcast(BlockProposal(block.to_bytes()))

    def _vote(self, sender: str, raw: bytes) -> list[Action]:
        if self.phase != Phase.VOTING or self.proposal is None:
            self.log.warning("dropped a vote from %s: no block is being voted on", sender)
            return []
        try:
            vote = Vote.from_bytes(raw)
        except LedgerError as exc:
            self.log.warning("dropped a vote from %s: %s", sender, exc)
            return []
        if vote.voter != sender:
            self.log.warning("dropped a vote from %s cast in the name of %s", sender, vote.voter)
            return []
        self.outcome.votes[vote.voter] = vote
        verdict = "accepts" if vote.accept else "REJECTS"
        self.log.info(
            "%s %s the block%s",
            vote.voter,
            verdict,
            "" if vote.accept else ": " + "; ".join(str(f) for f in vote.failures),
        )
        if set(self.proposal.voters) <= set(self.outcome.votes):
            self._decide()
            return []
        return [CHECKPOINT]

    def _decide(self) -> None:
        outcome = self.outcome
        assert outcome.block is not None and self.proposal is not None
        decision = self.proposal.decide(outcome.block, list(outcome.votes.values()))
        outcome.decision = decision
        if decision.commit:
            self.log.info("block %d accepted: %s", outcome.block.height, decision.summary())
        else:
            outcome.error = f"block {outcome.block.height} not committed: {decision.summary()}"
            self.log.error("%s", outcome.error)
        self._done()

    def _done(self) -> None:
        self.phase = Phase.DONE
        self.outcome.finished = time.perf_counter()
        decision = self.outcome.decision
        committed = decision is not None and decision.commit
        reason = self.outcome.error or self.outcome.reason
        if self.last:
            self.outbox += self._broadcast(Closed(committed=committed, reason=fit_text(reason)))
        self.finish(self._exit_code())

    def _exit_code(self) -> int:
        if self.outcome.error is not None:
            return EXIT_FAILURE
        return EXIT_OK if self.outcome.converged else EXIT_NOT_CONVERGED
