"""The tampering MO (``market_operator.behaviour``): the honest proposal with an altered
cleared market — the Proof-of-Solution experiment (docs/ledger.md).

- ``tamper-trade``: the first pair's trade moved by 0.1 kW on both sides;
- ``tamper-price``: the first pair's price raised by 0.05 $/kW on both sides;
- ``suboptimal``: every trade scaled down by a few per cent (feasible, but not optimal).

Only the cleared vectors change: the block is then built by the honest code, so its line
flows and settlement follow from the altered trades, as a consistent forgery's would. The
participants the edit touches must reject it. The MO process builds a
:class:`TamperingProposal` instead of the honest one when the scenario asks for it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from privgrid.crypto.identity import Identity
from privgrid.ledger import Block, LedgerError
from privgrid.ledger.cleared import Cleared, seller_side
from privgrid.logs import ParticipantLog
from privgrid.market.fixedpoint import decode, encode, encode_scalar, quantise
from privgrid.market.kkt import Tolerances
from privgrid.market.setup import MarketSetup
from privgrid.roles.market_operator.node import RunOutcome
from privgrid.roles.market_operator.proposal import Proposal

TAMPER_POWER, TAMPER_PRICE, SHIFT = 0.1, 0.05, 0.3
BEHAVIOURS = ("tamper-trade", "tamper-price", "suboptimal")


def tamper(cleared: Cleared, behaviour: str, setup: MarketSetup) -> Cleared:
    """``cleared`` altered as ``behaviour`` says (one of :data:`BEHAVIOURS`)."""
    if behaviour == "suboptimal":
        return feasible_shift(cleared, setup)
    side = seller_side(cleared.trades, 0)
    other = side ^ 1  # the buyer's side of the first pair
    if behaviour == "tamper-trade":
        trades = cleared.trades.copy()
        trades[side] += encode_scalar(TAMPER_POWER)
        trades[other] -= encode_scalar(TAMPER_POWER)
        return replace(cleared, trades=trades)
    if behaviour == "tamper-price":
        prices = cleared.prices.copy()
        prices[[side, other]] += encode_scalar(TAMPER_PRICE)
        return replace(cleared, prices=prices)
    raise ValueError(f"unknown MO behaviour {behaviour!r}")


def feasible_shift(cleared: Cleared, setup: MarketSetup) -> Cleared:
    """Scale every trade down a little: the line flows shrink, so every limit still holds, and
    for a small factor every registered range does too — a feasible clearing that trades less
    than the optimum. (At the optimum the binding limits and bounds often leave no feasible
    way to shift power between trades: it is a vertex of the feasible set.)"""
    g, scenario = setup.graph, setup.scenario
    ranges = {a.id: (a.pmin, a.pmax) for a in scenario.agents}
    tol = Tolerances.for_market(scenario.market).power
    for factor in (1 - SHIFT / 5, 1 - SHIFT / 10, 1 - SHIFT / 30):
        P = quantise(decode(cleared.trades) * factor)
        totals = {a: float(P[g.slots[i]].sum()) for i, a in enumerate(g.agent_ids)}
        inside = all(lo - tol <= totals[a] <= hi + tol for a, (lo, hi) in ranges.items())
        if inside and np.all(np.abs(setup.G @ P) <= setup.fmax + tol / 2):
            return replace(cleared, trades=encode(P))
    raise LedgerError("no feasible suboptimal clearing found near the optimum")


class TamperingProposal(Proposal):
    """A :class:`Proposal` whose block records an altered market (``behaviour``)."""

    def __init__(
        self,
        setup: MarketSetup,
        identity: Identity,
        genesis: Block,
        head: Block,
        run: str,
        log: ParticipantLog,
        behaviour: str,
    ) -> None:
        super().__init__(setup, identity, genesis, head, run, log)
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown MO behaviour {behaviour!r}")
        self.behaviour = behaviour

    def cleared(self, outcome: RunOutcome) -> Cleared:
        self.log.warning("adversarial MO (%s): proposing an altered block", self.behaviour)
        return tamper(super().cleared(outcome), self.behaviour, self.setup)
