"""A colluding agent: the honest :class:`~privgrid.roles.agent.node.AgentNode` and the few places
where it deviates (protocol.md §9.2; the coalition's logic is :class:`~.colluder.Colluder`).

- it also listens on its coalition's topic and hands coalition messages to the colluder;
- a round it is to steer waits for the coordinator's order before it begins;
- its price shares (and, with ``compliant`` shares, its declared trade) follow the order;
- after each round, instead of checking its pairs (I4) it sends what it derived of the target
  to the coordinator: a colluder does not police its own attack (a broken invariant looks the
  same from both sides, and only the honest side's report names the party that deviated);
- it keeps no checkpoint (its attack state lives in the coalition), and at the stop the
  coordinator writes the coalition's estimates.

The role process builds one of these instead of an honest agent for every agent the
scenario's ``[attack]`` names as a colluder.
"""

from __future__ import annotations

import numpy as np

from privgrid.attack.colluder import Colluder
from privgrid.attack.estimators import PairRecord
from privgrid.crypto.identity import Identity
from privgrid.logs import ParticipantLog
from privgrid.market.agent_step import AgentCost, LocalStep
from privgrid.market.derive import PartnerView
from privgrid.market.steps import StepSizes
from privgrid.privacy import PrivacyMode
from privgrid.roles.agent.node import AgentNode, RoundWork
from privgrid.runtime import Action
from privgrid.scenario import Scenario
from privgrid.wire.channel import Channel, Message
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import AgentResiduals, Stop


class ColludingAgent(AgentNode):
    def __init__(
        self,
        me: str,
        scenario: Scenario,
        cost: AgentCost,
        mode: PrivacyMode,
        log: ParticipantLog,
        identity: Identity | None,
        colluder: Colluder,
    ) -> None:
        super().__init__(me, scenario, cost, mode, log, identity)
        self.colluder = colluder
        #: (round, step exponent) of a round waiting for the coordinator's order.
        self.pending: tuple[int, int] | None = None

    # -- the coalition's channel ----------------------------------------------------------------
    def bind(self, channel: Channel) -> None:
        super().bind(channel)
        channel.coalition = self.colluder.attack.coalition

    def extra_subscriptions(self, run: str) -> list[str]:
        return self.colluder.subscriptions(run)

    def listens_to(self) -> set[str]:
        """The coalition's keys too (its records are sealed)."""
        return self.peers() | set(self.colluder.attack.colluders)

    def snapshot(self) -> None:
        return None  # the attack state lives in the coalition: nothing to resume from

    def handle(self, message: Message, now: float) -> list[Action]:
        if message.kind not in self.colluder.kinds:
            return super().handle(message, now)
        self.last_heard = now
        try:
            outgoing: list[Action] = [*self.colluder.handle(message)]
        except Rejected as exc:
            self.log.warning("dropped %s from %s: %s", message.kind, message.sender, exc.reason)
            return []
        if self.pending is not None and self.colluder.ready(self.pending[0]):
            (pending, exponent), self.pending = self.pending, None
            outgoing += self._play(pending, exponent)
        return outgoing

    # -- where the play deviates ----------------------------------------------------------------
    def _play(self, round_: int, exponent: int) -> list[Action]:
        if not self.colluder.ready(round_):
            self.pending = (round_, exponent)  # the coordinator's order is not in yet
            return []
        return super()._play(round_, exponent)

    def _shares(
        self, round_: int, step: LocalStep, steps: StepSizes
    ) -> tuple[LocalStep, np.ndarray, np.ndarray]:
        step, own, peer = super()._shares(round_, step, steps)
        return self.colluder.adjust(
            round_, step, self.prices, self.trades, own, peer, steps.alpha
        )

    def _pair_checks(
        self,
        work: RoundWork,
        own: np.ndarray,
        partner: np.ndarray,
        view: PartnerView,
        active: np.ndarray,
    ) -> list[Action]:
        """No checks of our own pairs: the round's view of the target goes to the coalition."""
        i = self.colluder.slot
        record = PairRecord(
            work.round,
            self.me,
            price=float(self.partner_prices[i]),
            charge=float(-self.charges[i]),
            previous=float(self.derived[i]),
            target=float(view.target[i]),
            extrapolated=float(view.extrapolated[i]),
            own=float(work.step.trades[i]),
            new_price=float(partner[i]),
        )
        return [*self.colluder.observe(record)]

    def _stop(self, round_: int, stop: Stop) -> list[Action]:
        first = round_ != 0 and (
            self.last_mo is None or isinstance(self.last_mo.body, AgentResiduals)
        )
        outgoing = super()._stop(round_, stop)
        if first:  # not a repeat of the stop: the coordinator writes its estimates
            self.colluder.finish()
        return outgoing
