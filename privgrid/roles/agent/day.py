"""A prosumer for a whole day (docs/feeder.md): its interval nodes and what it carries.

Each interval the agent takes part in gets an ordinary :class:`~.node.AgentNode` built from
the interval's scenario (its cost and bounds of that interval; its partners among those who
take part). A warm-started interval begins from what the agent held at the end of the previous
one (:meth:`AgentNode.carry_out`): per partner it still trades with, its trade, both prices and
its view of the partner's trade — predicted a little further along their last change where the
pair also traded in the interval before (:func:`~.node.predicted_held`, the same values as the
in-process day's :func:`~privgrid.market.warm.carry_over`); a partner it did not trade with in
the previous interval starts at round 0. An interval it sits out (nothing to trade) gets an
:class:`AbsentAgent`, which only votes on the interval's block: every registered participant
votes on every block.

Between intervals — once its part of one is done (its vote cast), through an interval it sits
out, and before the first — the agent's idle ticks precompute for the next interval's market
(:meth:`PrivacyMode.fill_ahead`: the Paillier pools of its pairs in that interval), a bounded
slice per tick as the in-interval top-up, so a message that arrives meanwhile waits no longer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from privgrid.crypto.identity import Identity
from privgrid.ledger import Block
from privgrid.ledger.pos import absent_checks
from privgrid.logs import ParticipantLog
from privgrid.market.kkt import Check
from privgrid.market.setup import build_setup, played_cost
from privgrid.privacy import PrivacyMode
from privgrid.privacy.exchange import IDLE_BUDGET_S
from privgrid.roles.agent.node import AgentNode, Held, predicted_held
from privgrid.roles.daylayer import DayLayer
from privgrid.roles.dayplan import DayPlan
from privgrid.roles.voter import Voter
from privgrid.runtime import CHECKPOINT, EXIT_FAILURE, Action, Node
from privgrid.scenario import LM_ID, MO_ID, Scenario, ScenarioError
from privgrid.wire.channel import Message
from privgrid.wire.kinds import BlockProposal, Gone, IntervalStart, Stop


class AbsentAgent(Voter):
    """An agent of the day that sits an interval out: it has no market, and votes on the
    interval's block with its one check — the block shows no trade of its own."""

    def __init__(
        self, me: str, scenario: Scenario, log: ParticipantLog, identity: Identity | None
    ) -> None:
        super().__init__(me, log, scenario, identity)

    def peers(self) -> set[str]:
        return {MO_ID}

    def start(self, now: float) -> list[Action]:
        return []

    def handle(self, message: Message, now: float) -> list[Action]:
        self.last_heard = now
        match message.body:
            case BlockProposal(block=raw) if message.sender == MO_ID and not self.voted:
                self.awaiting_block = self.identity is not None
                return self._vote(message.round, raw)
            case Gone() if message.sender in (MO_ID, LM_ID) and not self.wait_missing:
                self.log.error("%s left the run; stopping", message.sender)
                self.finish(EXIT_FAILURE)
        return []

    def block_checks(self, block: Block) -> list[Check]:
        return absent_checks(block, self.me)

    def snapshot(self) -> dict[str, Any]:
        last = self.last_mo
        return {"voted": self.voted, "last_mo": None if last is None else last.to_state()}

    def restore(self, state: Mapping[str, Any]) -> None:
        from privgrid.wire.channel import Outgoing

        self.voted = bool(state["voted"])
        last = state["last_mo"]
        self.last_mo = None if last is None else Outgoing.from_state(last)

    def peer_resynced(self, peer: str) -> list[Action]:
        return [self.last_mo] if peer == MO_ID and self.last_mo is not None else []

    def peer_restarted(self, peer: str, completed: int, new_keys: bool, now: float) -> list[Action]:
        return self.peer_resynced(peer)


class DayAgent(DayLayer):
    """One agent of a day: the runtime's node for its whole session."""

    def __init__(
        self,
        me: str,
        plan: DayPlan,
        first: Scenario,
        mode: PrivacyMode,
        log: ParticipantLog,
        identity: Identity | None,
    ) -> None:
        """``first``: the day's first interval scenario (its privacy and timeouts are the
        day's)."""
        super().__init__(me, log, plan, mode, first.timeouts)
        self.identity = identity
        self._peers = {*plan.partners(me), LM_ID, MO_ID}
        #: What the agent's last market ended with (interval ``ended_index``), per partner:
        #: with the next one's, it predicts a warm start (:func:`predicted_held`).
        self.ended: dict[str, Held] = {}
        self.ended_index = 0
        if first.privacy.lm_leg == "masked":
            self._peers |= set(plan.agent_ids) - {me}  # mask keys with every agent
        #: The next interval's scenario for :meth:`between_intervals` (None: unreadable, or
        #: nothing to precompute for it), loaded on the first idle tick after one begins.
        self._next: tuple[int, Scenario | None] | None = None
        self.ahead = 0  # work done ahead of the next interval (pool entries)

    def peers(self) -> set[str]:
        return set(self._peers)

    def start(self, now: float) -> list[Action]:
        self.last_heard = now
        if self.inner is not None:  # restored: the interval node's clocks count from now
            return self.inner.start(now)
        return []

    # -- intervals ---------------------------------------------------------------------------
    def begin_interval(self, opening: int, body: IntervalStart, now: float) -> list[Action]:
        index = body.index
        try:
            scenario = self._scenario(index, body.scenario)
        except ScenarioError as exc:
            self.log.error("interval %d: %s", index, exc)
            self.finish(EXIT_FAILURE)
            return []
        previous = self.inner
        held: dict[str, Held] | None = None
        if body.warm:
            kept = isinstance(previous, AgentNode) and self.index == index - 1
            last = previous.carry_out() if isinstance(previous, AgentNode) and kept else {}
            before = self.ended if self.ended_index == index - 2 else {}
            held = predicted_held(last, before)
            self.ended, self.ended_index = last, index - 1
        inner = self._node(index, opening, scenario, held)
        self.switch(index, opening, inner)
        ahead, self.ahead = self.ahead, 0
        self.log.info(
            "interval %d begins after round %d (%s%s%s)",
            index,
            opening,
            "taking part" if isinstance(inner, AgentNode) else "sitting it out",
            ", warm" if held is not None else "",
            f", {ahead} pool entries made ahead" if ahead else "",
        )
        return [*inner.start(now), CHECKPOINT, *self.replay(now)]

    def _scenario(self, index: int, digest: bytes) -> Scenario:
        if digest != self.plan.digest(index):
            raise ScenarioError.single(
                self.plan.scenario_path(index),
                "<file>",
                "differs from the scenario the MO announced (SHA-256)",
            )
        ahead = self._next
        if ahead is not None and ahead[0] == index and ahead[1] is not None:
            return ahead[1]  # read between intervals (checked against the plan then)
        return self.plan.load(index)

    def _node(
        self, index: int, opening: int, scenario: Scenario, held: dict[str, Held] | None
    ) -> Node:
        if self.me not in scenario.agent_ids:
            return AbsentAgent(self.me, scenario, self.log, self.identity)
        cost = played_cost(scenario, self.me)
        return AgentNode(
            self.me,
            scenario,
            cost,
            self.mode,
            self.log,
            self.identity,
            opening=opening,
            held=held,
            setup=build_setup(scenario),
        )

    def _is_later(self, message: Message) -> bool:
        if isinstance(self.inner, AbsentAgent):  # only its interval's block concerns it
            ours = isinstance(message.body, BlockProposal | Stop) and message.sender == MO_ID
            return not ours
        return super()._is_later(message)

    def in_interval(self) -> bool:
        inner = self.inner
        return isinstance(inner, AgentNode) and not inner.voted

    def between_intervals(self, now: float) -> list[Action]:
        """Idle time before the next interval: precompute for its market (module docstring)."""
        scenario = self._next_scenario()
        if scenario is not None:
            self.ahead += self.mode.fill_ahead(self.me, scenario, IDLE_BUDGET_S)
        return []

    def _next_scenario(self) -> Scenario | None:
        """The next interval's scenario if there is one and something to precompute for it
        (read once; an unreadable file is left for :meth:`begin_interval` to report)."""
        upcoming = self.index + 1
        if self._next is None or self._next[0] != upcoming:
            scenario = None
            if self.mode.precomputes() and upcoming <= len(self.plan.intervals):
                with contextlib.suppress(ScenarioError):
                    scenario = self.plan.load(upcoming)
            self._next = (upcoming, scenario)
        return self._next[1]

    def rebuild(self, index: int, opening: int, state: Mapping[str, Any]) -> Node:
        return self._node(index, opening, self.plan.load(index), None)

    def day_snapshot(self) -> dict[str, Any]:
        return {
            "ended": {m: h.to_state() for m, h in self.ended.items()},
            "ended_index": self.ended_index,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        super().restore(state)
        self.ended = {m: Held.from_state(v) for m, v in state["ended"].items()}
        self.ended_index = int(state["ended_index"])
