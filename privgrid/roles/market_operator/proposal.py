"""The MO's block proposal: the cleared market as a ledger block, its own vote, the decision.

After a converged run the MO turns the final reports into a market block (cleared trades with
both sides' prices and charges, line flows and prices, settlement), broadcasts it, votes on it
(its part of Proof of Solution: reciprocity and price agreement on every pair) and applies the
commit rule to everyone's signed votes. The append itself (I/O) happens in the process.

``market_operator.behaviour`` makes the MO propose a bad block instead — the Proof-of-Solution
experiment: ``tamper-trade`` (one trade moved by 0.1 kW on both sides), ``tamper-price`` (one
price raised by 0.05 $/kW on both sides), ``suboptimal`` (every trade scaled down by a few per cent:
feasible, but not optimal). The affected participants must reject.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from privgrid.crypto.identity import Identity
from privgrid.ledger import Block, Decision, LedgerError, Vote, commit_decision
from privgrid.ledger.cleared import Cleared, cleared_block, seller_side
from privgrid.ledger.genesis import quorum_of, required_voters, roster_of
from privgrid.ledger.pos import mo_checks, vote_on
from privgrid.logs import ParticipantLog
from privgrid.market.fixedpoint import decode, encode, encode_scalar, quantise
from privgrid.market.kkt import Tolerances, excluding_pairs
from privgrid.market.setup import MarketSetup
from privgrid.roles.market_operator.node import RunOutcome
from privgrid.scenario import MO_ID

TAMPER_POWER, TAMPER_PRICE, SHIFT = 0.1, 0.05, 0.3


def tamper(cleared: Cleared, behaviour: str, setup: MarketSetup) -> Cleared:
    """The adversarial MO's edit of the cleared market (the first pair, or every trade)."""
    if behaviour == "suboptimal":
        return feasible_shift(cleared, setup)
    side = seller_side(cleared.trades, 0)
    other = side ^ 1
    if behaviour == "tamper-trade":
        trades = cleared.trades.copy()
        trades[side] += encode_scalar(TAMPER_POWER)
        trades[other] -= encode_scalar(TAMPER_POWER)
        return replace(cleared, trades=trades)
    if behaviour == "tamper-price":
        prices = cleared.prices.copy()
        prices[[side, other]] += encode_scalar(TAMPER_PRICE)
        return replace(cleared, prices=prices)
    return cleared


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
        self.behaviour = setup.scenario.market_operator.behaviour

    @property
    def voters(self) -> Sequence[str]:
        return required_voters(self.genesis)

    def build(self, outcome: RunOutcome) -> Block:
        """The block of the final reports on top of ``head`` (:class:`LedgerError` if the
        reports do not make a market of this scenario)."""
        cleared = cleared_of(self.setup, outcome)
        if self.behaviour != "honest":
            self.log.warning("adversarial MO (%s): proposing an altered block", self.behaviour)
            cleared = tamper(cleared, self.behaviour, self.setup)
        return cleared_block(
            self.setup,
            cleared,
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
