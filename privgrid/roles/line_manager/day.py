"""The Line Manager for a whole day (docs/feeder.md): its interval nodes and what it carries.

The LM takes part in every interval. A warm-started interval begins from what it held at the
end of the previous one (:meth:`LineManagerNode.carry_out`: the line prices, the flows it
tracked, and the trades where its leg shows it trades) and opens with one message to every
agent: the charges of the agent's pairs from those line prices (with the masked leg, the line
prices themselves), at the interval's opening round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from privgrid.crypto.identity import Identity
from privgrid.logs import ParticipantLog
from privgrid.market.setup import build_setup
from privgrid.privacy import PrivacyMode
from privgrid.roles.daylayer import DayLayer
from privgrid.roles.dayplan import DayPlan
from privgrid.roles.line_manager.node import LineManagerNode, LmHeld
from privgrid.runtime import CHECKPOINT, EXIT_FAILURE, Action, Node
from privgrid.scenario import MO_ID, Scenario, ScenarioError
from privgrid.wire.kinds import IntervalStart


class DayLineManager(DayLayer):
    """The LM of a day: the runtime's node for its whole session."""

    def __init__(
        self,
        plan: DayPlan,
        first: Scenario,
        mode: PrivacyMode,
        log: ParticipantLog,
        identity: Identity | None,
    ) -> None:
        from privgrid.scenario import LM_ID

        super().__init__(LM_ID, log, plan, mode, first.timeouts)
        self.identity = identity

    def peers(self) -> set[str]:
        return {*self.plan.agent_ids, MO_ID}

    def start(self, now: float) -> list[Action]:
        self.last_heard = now
        if self.inner is not None:  # restored: the interval node's clocks count from now
            return self.inner.start(now)
        return []

    def begin_interval(self, opening: int, body: IntervalStart, now: float) -> list[Action]:
        index = body.index
        try:
            if body.scenario != self.plan.digest(index):
                raise ScenarioError.single(
                    self.plan.scenario_path(index),
                    "<file>",
                    "differs from the scenario the MO announced (SHA-256)",
                )
            scenario = self.plan.load(index)
            held = self._held(index) if body.warm else None
            inner = self._node(opening, scenario, held)
        except (ScenarioError, ValueError) as exc:
            self.log.error("interval %d: %s", index, exc)
            self.finish(EXIT_FAILURE)
            return []
        self.switch(index, opening, inner)
        self.log.info(
            "interval %d begins after round %d%s", index, opening, " (warm)" if held else ""
        )
        started = inner.start(now)
        return [*started, *(inner.opening_messages() or [CHECKPOINT]), *self.replay(now)]

    def _held(self, index: int) -> LmHeld:
        previous = self.inner
        if not isinstance(previous, LineManagerNode) or self.index != index - 1:
            raise ValueError(f"a warm start needs interval {index - 1}'s state, not held here")
        return previous.carry_out()

    def _node(self, opening: int, scenario: Scenario, held: LmHeld | None) -> LineManagerNode:
        setup = build_setup(scenario)
        return LineManagerNode(
            setup, self.mode, self.log, self.identity, opening=opening, held=held
        )

    def behind(self, peer: str) -> int:
        """An agent that restarted from an earlier interval still needs our opening."""
        return self.opening - 1

    def in_interval(self) -> bool:
        inner = self.inner
        return isinstance(inner, LineManagerNode) and not inner.voted

    def rebuild(self, index: int, opening: int, state: Mapping[str, Any]) -> Node:
        return self._node(opening, self.plan.load(index), None)
