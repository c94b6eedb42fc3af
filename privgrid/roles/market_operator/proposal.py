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

import copy
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from privgrid.crypto.identity import Identity
from privgrid.ledger import Block, Decision, LedgerError, Vote, commit_decision
from privgrid.ledger.cleared import cleared_block
from privgrid.ledger.genesis import quorum_of, required_voters, roster_of
from privgrid.ledger.pos import mo_checks, vote_on
from privgrid.logs import ParticipantLog
from privgrid.market.fixedpoint import decode
from privgrid.market.kkt import Tolerances, excluding_pairs
from privgrid.market.line_step import LinePrices
from privgrid.market.setup import MarketSetup
from privgrid.report import assemble
from privgrid.results import Outcome
from privgrid.roles.market_operator.node import RunOutcome
from privgrid.scenario import MO_ID

TAMPER_POWER, TAMPER_PRICE, SHIFT = 0.1, 0.05, 0.3


def tamper(
    trades: list[dict[str, Any]], behaviour: str, setup: MarketSetup
) -> list[dict[str, Any]]:
    """The adversarial MO's edit of the cleared trades (seller-side rows)."""
    trades = copy.deepcopy(trades)
    if behaviour == "tamper-trade":
        trades[0]["power"] += TAMPER_POWER
        trades[0]["buyer_power"] -= TAMPER_POWER
    elif behaviour == "tamper-price":
        trades[0]["price"] += TAMPER_PRICE
        trades[0]["buyer_price"] += TAMPER_PRICE
    elif behaviour == "suboptimal":
        return feasible_shift(trades, setup)
    return trades


def feasible_shift(trades: list[dict[str, Any]], setup: MarketSetup) -> list[dict[str, Any]]:
    """Scale every trade down a little: the line flows shrink, so every limit still holds, and
    for a small factor every registered range does too — a feasible clearing that trades less
    than the optimum. (At the optimum the binding limits and bounds often leave no feasible
    way to shift power between trades: it is a vertex of the feasible set.)"""
    g, scenario = setup.graph, setup.scenario
    ranges = {a.id: (a.pmin, a.pmax) for a in scenario.agents}
    tol = Tolerances.for_market(scenario.market).power
    for factor in (1 - SHIFT / 5, 1 - SHIFT / 10, 1 - SHIFT / 30):
        trial = copy.deepcopy(trades)
        for row in trial:
            row["power"] *= factor
            row["buyer_power"] *= factor
        P = np.zeros(g.n_trades)
        for row in trial:
            P[g.trade(row["seller"], row["buyer"])] = row["power"]
            P[g.trade(row["buyer"], row["seller"])] = row["buyer_power"]
        totals = {a: float(P[g.slots[i]].sum()) for i, a in enumerate(g.agent_ids)}
        inside = all(lo - tol <= totals[a] <= hi + tol for a, (lo, hi) in ranges.items())
        if inside and np.all(np.abs(setup.G @ P) <= setup.fmax + tol / 2):
            return trial
    raise LedgerError("no feasible suboptimal clearing found near the optimum")


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
        v = assemble(self.setup, outcome.finals)
        lm = outcome.lm_final
        eta = LinePrices(
            decode(np.array(lm.eta_up if lm else [], dtype=np.int64)),
            decode(np.array(lm.eta_down if lm else [], dtype=np.int64)),
        )
        cleared = Outcome(True, outcome.rounds, v["P"], v["lam"], v["c"], eta)
        edit = None
        if self.behaviour != "honest":
            self.log.warning("adversarial MO (%s): proposing an altered block", self.behaviour)
            edit = functools.partial(tamper, behaviour=self.behaviour, setup=self.setup)
        return cleared_block(
            self.setup,
            cleared,
            height=self.head.height + 1,
            prev_hash=self.head.hash,
            run=self.run,
            edit=edit,
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
