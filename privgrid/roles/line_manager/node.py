"""The Line Manager's protocol logic: flows in, line prices (and charges) out, each round.

Round k: collect every agent's contribution through the LM leg (its trades, or with masked
aggregation only its masked share of the line flows) and the MO's ``round k`` broadcast (its
step exponent e sets the round's σ·2^-e, :mod:`privgrid.market.steps`); run the LM step —
projected dual ascent on the line limits (:mod:`privgrid.market.line_step`); send each agent
what it needs for its charges (its charges, or the line prices) and the MO the residuals r_L
(and r_P when the LM sees trades). After ``stop``: check its KKT part on the last state and
send it, with the line prices, to the MO; after convergence, vote on the MO's block.

A market of a day (docs/feeder.md) begins at an *opening* round (the day's rounds continue).
A warm-started one begins from what the LM holds of the previous market (:class:`LmHeld`: its
line prices, its tracked flows and, when it sees trades, the trades of the pairs kept); its
opening message gives every agent the charges of its pairs from those line prices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from privgrid.crypto.identity import Identity
from privgrid.ledger import Block
from privgrid.ledger.pos import lm_checks
from privgrid.logs import ParticipantLog
from privgrid.market.fixedpoint import encode_scalar, fixed_tuple
from privgrid.market.kkt import Check, Tolerances, check_line_flows, check_lines, excluding_pairs
from privgrid.market.line_step import LinePrices, line_update
from privgrid.market.setup import MarketSetup
from privgrid.market.steps import StepSizes
from privgrid.privacy import PrivacyMode, Violation
from privgrid.roles.voter import Voter
from privgrid.runtime import CHECKPOINT, EXIT_FAILURE, Action
from privgrid.scenario import LM_ID, MO_ID
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import (
    BlockProposal,
    Closed,
    Gone,
    LmFinal,
    LmResiduals,
    Round,
    Stop,
)


@dataclass(frozen=True)
class LmHeld:
    """What the LM carries into the next market of a day (a warm start): values it holds."""

    line_prices: LinePrices  # η of the limited lines (the same lines on one feeder)
    flows: np.ndarray  # F(P^k) as it tracked them (masked leg)
    trades: dict[tuple[str, str], float] | None  # (owner, partner) → P, where it sees trades


class LineManagerNode(Voter):
    def __init__(
        self,
        setup: MarketSetup,
        mode: PrivacyMode,
        log: ParticipantLog,
        identity: Identity | None = None,
        *,
        opening: int = 0,
        held: LmHeld | None = None,
    ) -> None:
        """``opening``: the round before this market's first (a day's market; 0 alone).
        ``held``: a warm start from the previous market's values (:meth:`opening_messages`
        then sends the agents their starting charges)."""
        super().__init__(LM_ID, log, setup.scenario, identity)
        self.mode = mode
        self.setup = setup
        self.leg = mode.lm_leg(lambda: setup, self._mask_keys)
        self.graph = setup.graph
        self.market = setup.scenario.market
        self.base_steps = StepSizes(self.market.tau, self.market.alpha, setup.sigma)
        #: (round, step exponent) of the latest ``round`` broadcast: a round is priced with the
        #: σ the MO announced for it, so the LM waits for that broadcast as well.
        self.announced: tuple[int, int] | None = None
        self.line_prices = LinePrices.zero(len(setup.limited))
        self.flows = np.zeros(len(setup.limited))  # F(P^k) on the limited lines
        self.completed = opening
        self.opening = opening
        self.dropped: tuple[tuple[str, str], ...] = ()
        # Restarts (docs/reliability.md): what we sent last, for a peer that lost it (and
        # ``last_mo``, our last message to the MO).
        self.last_step: list[Outgoing] = []  # the last round's charges or line prices
        #: Opt-in audit of what the LM received (the honest-but-curious experiment).
        self.record: Callable[[dict[str, object]], object] | None = None
        self.audit: list[dict[str, object]] = []  # this round's entries, until it is priced
        self.warm = held is not None
        if held is not None:
            self._carry_in(held)

    def _carry_in(self, held: LmHeld) -> None:
        if held.line_prices.up.shape != (len(self.setup.limited),):
            raise ValueError("a warm start needs the same limited lines in both markets")
        self.line_prices = LinePrices(held.line_prices.up.copy(), held.line_prices.down.copy())
        self.flows = np.array(held.flows, copy=True)
        g = self.graph
        trades = None
        if held.trades is not None:
            ids = g.agent_ids
            trades = np.array(
                [
                    held.trades.get((ids[o], ids[p]), 0.0)  # a new pair starts at 0
                    for o, p in zip(g.owner, g.partner, strict=True)
                ]
            )
        self.leg.lm_carry(trades, self.flows)

    def carry_out(self) -> LmHeld:
        """What the LM holds at the end of this market, for the next one."""
        g = self.graph
        trades, _ = self.leg.lm_state(self.setup)
        seen = None
        if np.all(np.isfinite(trades)):
            ids = g.agent_ids
            seen = {
                (ids[int(o)], ids[int(p)]): float(trades[t])
                for t, (o, p) in enumerate(zip(g.owner, g.partner, strict=True))
            }
        return LmHeld(self.line_prices, self.flows.copy(), seen)

    def opening_messages(self) -> list[Action]:
        """A warm start's opening: every agent's starting charges (its leg's message at the
        opening round), from the carried line prices. Nothing for a cold start."""
        if not self.warm:
            return []
        self.last_step = self.leg.lm_send(self.opening, self.setup, self.line_prices)
        return [CHECKPOINT, *self.last_step]

    def _mask_keys(self) -> dict[str, bytes]:  # the LM holds no masks
        return {}

    def peers(self) -> set[str]:
        return {*self.graph.agent_ids, MO_ID}

    def start(self, now: float) -> list[Action]:
        self.last_heard = now
        return []

    def handle(self, message: Message, now: float) -> list[Action]:
        self.last_heard = now
        from_mo = message.sender == MO_ID
        match message.body:
            case Stop() as stop:
                return self._stop(message.round, stop)
            case BlockProposal(block=raw) if from_mo:
                return self._vote(message.round, raw)
            case Closed(reason=reason) if from_mo:
                return self._closed(reason)
            case Gone():
                if from_mo:
                    if self.wait_missing:
                        self.log.warning("the MO left the run; waiting for it to rejoin")
                        return []
                    self.log.error("the MO left the run; stopping")
                    self.finish(EXIT_FAILURE)
                return []
            case Round(dropped=dropped, steps=exponent) if from_mo:
                if message.round <= self.completed:
                    return []  # a repeat (the MO re-broadcasts after a restart)
                self.log.round = message.round
                self.announced = (message.round, exponent or 0)
                if (dropped or ()) != self.dropped:
                    self.dropped = dropped or ()
                    self.leg.lm_drop(self.setup, self.dropped)
                return self._ready()
        if message.kind != self.leg.agent_kind:
            self.log.warning("dropped unexpected %s from %s", message.kind, message.sender)
            return []
        if message.round == self.completed:
            return []  # a restarted agent redoing the round we priced already: same values
        if message.round != self.completed + 1:
            self.log.warning(
                "dropped %s of round %d from %s (expected round %d)",
                message.kind,
                message.round,
                message.sender,
                self.completed + 1,
            )
            return []
        slots = self.graph.slots[self.graph.index(message.sender)]
        try:
            self.leg.lm_receive(message, len(slots))
            if self.record is not None:  # written when the round is priced, with its steps
                self.audit.append(
                    {
                        "round": message.round,
                        "from": message.sender,
                        "kind": message.kind,
                        "received": self.leg.last_received(),
                    }
                )
        except Violation as exc:
            return self.report_violation(exc.offender, exc.reason, exc.evidence, message.round)
        except Rejected as exc:
            self.log.warning("dropped %s from %s: %s", message.kind, message.sender, exc.reason)
            return []
        return self._ready()

    def _ready(self) -> list[Action]:
        """Price round ``completed + 1`` once every contribution and its broadcast are in."""
        round_ = self.completed + 1
        if self.announced is None or self.announced[0] != round_:
            return []
        if not self.leg.lm_ready(self.graph.n_agents):
            return []
        return self._step(round_, self.announced[1])

    def _step(self, round_: int, exponent: int) -> list[Action]:
        started = time.perf_counter()
        setup = self.setup
        sigma = self.base_steps.scaled(exponent).sigma
        if self.record is not None:
            for entry in self.audit:
                if entry["round"] == round_:
                    self.record({**entry, "steps": exponent})
            self.audit = []
        flows_bar, flows_new, reciprocity = self.leg.lm_flows(setup, self.market.rho)
        line = line_update(
            flows_bar, setup.fmax, sigma, self.market.rho, self.line_prices, flows_new
        )
        self.line_prices, self.flows, self.completed = line.prices, flows_new, round_
        self.compute_seconds += time.perf_counter() - started
        outgoing = self.leg.lm_send(round_, setup, line.prices)
        r_p = None if reciprocity is None else encode_scalar(reciprocity)
        residuals = LmResiduals(encode_scalar(line.line_residual), r_p)
        self.last_mo = Outgoing(MO_ID, round_, residuals)
        self.last_step = outgoing
        return [CHECKPOINT, *outgoing, self.last_mo]

    def tick(self, now: float) -> list[Action]:
        self._check_clocks(now)
        return []

    def _final_checks(self) -> list[Check]:
        """L1–L3 when the LM saw the trades; from the flows alone (L1, L2) when it did not."""
        tol = Tolerances.for_market(self.market)
        trades, charges = self.leg.lm_state(self.setup)
        if np.all(np.isfinite(trades)):
            return check_lines(self.setup, trades, charges, self.line_prices, tol)
        return check_line_flows(self.setup, self.flows, self.line_prices, tol)

    def _stop(self, round_: int, stop: Stop) -> list[Action]:
        if round_ == 0:
            self.log.error("the MO could not start the run: %s", stop.reason)
            self.finish(EXIT_FAILURE)
            return []
        if self.last_mo is not None and not isinstance(self.last_mo.body, LmResiduals):
            return []  # a repeat (the MO re-broadcasts after its restart): reported already
        verdict = "converged" if stop.converged else "did not converge"
        self.log.info("market %s after round %d", verdict, round_)
        checks = self._final_checks()
        for check in (c for c in checks if not c.passed):
            self.log.warning(
                "own KKT check %s failed at %s: %.3g > %.3g",
                check.condition,
                check.subject,
                check.value,
                check.tolerance,
            )
        body = LmFinal(
            eta_up=fixed_tuple(self.line_prices.up),
            eta_down=fixed_tuple(self.line_prices.down),
            kkt=tuple(c.as_dict() for c in checks),
            stats=self.stats(),
        )
        self._expect_block(stop.converged)
        self.last_mo = Outgoing(MO_ID, self.completed, body)
        return [CHECKPOINT, self.last_mo]

    def block_checks(self, block: Block) -> list[Check]:
        """Proof of Solution, the LM's part: line records, limits, line prices, charges."""
        return excluding_pairs(lm_checks(block, self.setup), self.dropped)

    # -- restarts (docs/reliability.md) ---------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        return {
            "completed": self.completed,
            "eta_up": [float(x) for x in self.line_prices.up],
            "eta_down": [float(x) for x in self.line_prices.down],
            "flows": [float(x) for x in self.flows],
            "dropped": [list(p) for p in self.dropped],
            "announced": None if self.announced is None else list(self.announced),
            "leg": self.leg.lm_snapshot(),
            "awaiting_block": self.awaiting_block,
            "voted": self.voted,
            "last_step": [o.to_state() for o in self.last_step],
            "last_mo": None if self.last_mo is None else self.last_mo.to_state(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.completed = int(state["completed"])
        self.line_prices = LinePrices(
            np.array(state["eta_up"], dtype=float), np.array(state["eta_down"], dtype=float)
        )
        self.flows = np.array(state["flows"], dtype=float)
        self.dropped = tuple((str(a), str(b)) for a, b in state["dropped"])
        announced = state.get("announced")
        self.announced = None if announced is None else (int(announced[0]), int(announced[1]))
        if self.dropped:
            self.leg.lm_drop(self.setup, self.dropped)
        self.leg.lm_restore(state["leg"])
        self.awaiting_block = bool(state["awaiting_block"])
        self.voted = bool(state["voted"])
        self.last_step = [Outgoing.from_state(o) for o in state["last_step"]]
        self.last_mo = None if state["last_mo"] is None else Outgoing.from_state(state["last_mo"])
        self.log.round = self.completed

    def resume_point(self) -> int:
        return self.completed

    def _resend_to(self, peer: str) -> list[Action]:
        """Our last round's messages for ``peer`` (every leg addresses each agent its own:
        charges, or the line prices, sealed; the LM broadcasts nothing)."""
        if peer == MO_ID:
            return [] if self.last_mo is None else [self.last_mo]
        return [o for o in self.last_step if o.recipient == peer]

    def peer_restarted(
        self, peer: str, completed: int, new_keys: bool, now: float
    ) -> list[Action]:
        """An agent that lost our answer to the round it redoes gets it again; the MO gets
        our last report again."""
        self.last_heard = now
        if peer == MO_ID:
            return self._resend_to(peer)
        if self.completed != completed + 1:
            return []
        return self._resend_to(peer)

    def peer_resynced(self, peer: str) -> list[Action]:
        """After our restart: each peer that resyncs gets our last messages for it again."""
        return self._resend_to(peer)
