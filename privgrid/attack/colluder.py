"""A colluding agent: the honest agent plus the attack of protocol.md §9.2.

Every round the colluder derives the target's side of their pair from what it legitimately
holds (Theorem 1: :mod:`privgrid.market.derive`) and sends it to the coordinator — the lowest
colluder id — on the coalition topic (sealed; the ACL lets only colluders read or write it).
The coordinator (:mod:`privgrid.attack.coordinator`) answers with the round's order: play
honestly, or steer the pair's price to L. The levers:

- ``compliant``: declare the trade ``Q = clip((λ(k) − L)/(ρα) − P̄_tc(k−1), registered range)``
  in the price update instead of the honest one. A trade within one's registered range is all
  a party can choose, so the pair checks (I4) pass: steering through trades is
  indistinguishable from a buyer with a high willingness to pay (protocol.md §7.5);
- ``free``: inject the price directly, choosing the share ``B_ct`` so the target's price becomes
  L, and leave its own share honest. The pair's two prices then differ — exactly what I4's
  invariant check catches, in the first deviating round.

At the end the coordinator writes what the coalition estimated (``attack-estimates.json``);
the colluders never see the target's true data (the evaluator compares, outside the run).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from privgrid.attack.coordinator import Coordinator, Order
from privgrid.attack.estimators import PairRecord
from privgrid.logs import ParticipantLog
from privgrid.market.agent_step import LocalStep
from privgrid.market.fixedpoint import decode_scalar, encode_scalar, quantise_scalar
from privgrid.market.price import price_shares, share_to_fixed
from privgrid.scenario import AttackSection, MarketSection
from privgrid.wire import topics
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import CoalitionOrder, CoalitionRecord, Kind

ESTIMATES_FILE = "attack-estimates.json"
FIELDS = ("price", "charge", "previous", "target", "extrapolated", "own", "new_price")


class Colluder:
    kinds = frozenset({Kind.COALITION_RECORD, Kind.COALITION_ORDER})

    def __init__(
        self,
        me: str,
        attack: AttackSection,
        market: MarketSection,
        partners: list[str],
        own_range: tuple[float, float],
        log: ParticipantLog,
        report: Path | None = None,
    ) -> None:
        self.me = me
        self.attack = attack
        self.market = market
        self.target = attack.target
        self.slot = partners.index(attack.target)
        self.range = own_range
        self.log = log
        self.report = report
        self.coordinator_id = min(attack.colluders)
        self.coordinator = (
            Coordinator(attack, list(attack.colluders)) if me == self.coordinator_id else None
        )
        self.orders: dict[int, Order] = {}
        self.last_bar: float = 0.0  # P̄_tc of the last round, as derived
        self.steered = 0

    # -- the round's order ----------------------------------------------------------------------
    def ready(self, round_: int) -> bool:
        """Play round ``round_`` now? Honest rounds need no order; steered ones wait for it."""
        if self.attack.strategy == "passive" or round_ < self.attack.start_round:
            return True
        return round_ in self.orders

    def adjust(
        self,
        round_: int,
        step: LocalStep,
        prices: np.ndarray,
        trades: np.ndarray,
        own_fixed: np.ndarray,
        peer_fixed: np.ndarray,
        alpha: float,
    ) -> tuple[LocalStep, np.ndarray, np.ndarray]:
        """Apply the round's lever to the pair with the target (every other pair stays honest).

        ``alpha`` is the round's innovation step as the MO announced it (adaptive steps).
        """
        order = self.orders.get(round_)
        if order is None or order.price is None:
            return step, own_fixed, peer_fixed
        m, i = self.market, self.slot
        self.steered += 1
        if self.attack.shares == "free":
            # Inject the price: B_ct = L − A_tc, A_tc predicted from the target's last P̄.
            predicted_own = (1 - m.rho * m.beta) * prices[i] - m.rho * alpha * self.last_bar
            peer_fixed = peer_fixed.copy()
            peer_fixed[i] = encode_scalar(order.price - predicted_own)
            return step, own_fixed, peer_fixed
        q = (prices[i] - order.price) / (m.rho * alpha) - self.last_bar
        q = float(np.clip(q, *self.range))
        bar = step.extrapolated.copy()
        new = step.trades.copy()
        bar[i] = q
        new[i] = quantise_scalar(trades[i] + 0.5 * m.rho * (q - trades[i]))  # public recursion
        step = replace(step, trades=new, extrapolated=bar)
        own, peer = price_shares(prices, bar, alpha, m.beta, m.rho)
        return step, share_to_fixed(own), share_to_fixed(peer)

    # -- sharing with the coalition --------------------------------------------------------------
    def observe(self, record: PairRecord) -> list[Outgoing]:
        """After a round: send the derived target view to the coordinator (or keep it)."""
        self.last_bar = record.extrapolated
        if self.coordinator is not None:
            return self._pool(record)
        body = CoalitionRecord(
            record.round, **{f: encode_scalar(getattr(record, f)) for f in FIELDS}
        )
        return [Outgoing(self.coordinator_id, record.round, body)]

    def handle(self, message: Message) -> list[Outgoing]:
        match message.body:
            case CoalitionOrder(r=r, phase=phase, price=price):
                self.orders[r] = Order(r, phase, None if price is None else decode_scalar(price))
                return []
            case CoalitionRecord() as body:
                if self.coordinator is None:
                    raise Rejected(
                        "coalition record sent to a colluder that does not coordinate",
                        message.sender,
                    )
                if message.sender not in self.attack.colluders:
                    raise Rejected(f"{message.sender} is not in the coalition", message.sender)
                values = {f: decode_scalar(getattr(body, f)) for f in FIELDS}
                return self._pool(PairRecord(body.r, message.sender, **values))
        raise Rejected(f"unexpected {message.kind}", message.sender)

    def _pool(self, record: PairRecord) -> list[Outgoing]:
        coordinator = self.coordinator
        assert coordinator is not None
        coordinator.add(record)
        if not coordinator.complete(record.round):
            return []
        before = coordinator.phase
        order = coordinator.next_order(record.round)
        if coordinator.phase != before:
            self.log.warning(
                "coalition enters phase %s at round %d (target price %s)",
                coordinator.phase,
                order.round,
                order.price,
            )
        self.orders[order.round] = order
        price = None if order.price is None else encode_scalar(order.price)
        body = CoalitionOrder(order.round, order.phase, price)
        return [Outgoing(c, record.round, body) for c in self.attack.colluders if c != self.me]

    def subscriptions(self, run: str) -> list[str]:
        return [topics.collusion(run, self.attack.coalition)]

    def finish(self) -> None:
        """The coordinator writes what the coalition estimated (simulation output)."""
        if self.coordinator is None:
            return
        estimates = {
            "target": self.target,
            "colluders": list(self.attack.colluders),
            "steered_rounds": self.steered,
            **self.coordinator.estimates(),
        }
        self.log.warning(
            "coalition estimates for %s: Pmax %s, Pmin %s, active a/b %s/%s, passive a/b %s/%s",
            self.target,
            estimates["pmax"],
            estimates["pmin"],
            estimates["active"]["a"],
            estimates["active"]["b"],
            estimates["passive"]["a"],
            estimates["passive"]["b"],
        )
        if self.report is not None:
            self.report.mkdir(parents=True, exist_ok=True)
            (self.report / ESTIMATES_FILE).write_text(json.dumps(estimates, indent=2) + "\n")
