"""The prosumer's protocol logic: one round = local step, price exchange, charges, residuals.

Round k, after the MO's ``round k`` (which announces the round's step exponent e: τ·2^e and
α·2^-e, :mod:`privgrid.market.steps`):
1. the exact local step on (P, λ, c) of round k−1 → new trades, P̄, r_d (private θ kept);
2. the price shares A, B → the price exchange with every partner (the privacy mode's);
3. the new trades → the LM (through the mode's LM leg);
4. with every price and the LM's charges in: commit the round and send (r_d, r_C) to the MO.
After ``stop``: check its own part of the KKT conditions and send the final report to the MO.

A market of a day (docs/feeder.md) begins at an *opening* round instead of round 0: its rounds
continue the day's numbering. A warm-started one also begins from what the agent holds of the
pairs it keeps (:class:`Held`: its trade, both prices and its derived view of the partner's
trade); before its first round it waits for the LM's opening message, which gives it the
charges of every pair from the carried line prices (``opening``).

Messages of the next round may arrive before its ``round`` broadcast; they wait in a buffer.
Messages of older rounds are dropped with a log line. A partner caught cheating is reported
to the MO with the signed evidence; if the MO drops the pair (``on_violation = "drop_pair"``),
the trade is fixed at 0 from the next round and the pair exchanges nothing more.
All maths is in :mod:`privgrid.market`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privgrid.crypto.identity import Identity
from privgrid.ledger import Block
from privgrid.ledger.pos import agent_checks
from privgrid.logs import ParticipantLog
from privgrid.market.agent_step import AgentCost, LocalStep, local_step
from privgrid.market.derive import PartnerView, derive_partner, pair_checks, partner_shares
from privgrid.market.fixedpoint import encode, encode_scalar, fixed_tuple, quantise_scalar
from privgrid.market.kkt import AgentView, Check, Tolerances, check_agent, excluding_pairs
from privgrid.market.price import price_shares, share_to_fixed
from privgrid.market.setup import MarketSetup, TradeGraph, build_setup, trade_ranges
from privgrid.market.steps import StepSizes
from privgrid.market.stopping import agent_pair_residuals
from privgrid.market.warm import predicted
from privgrid.privacy import PrivacyMode, Violation
from privgrid.roles.voter import Voter
from privgrid.runtime import CHECKPOINT, EXIT_FAILURE, Action
from privgrid.scenario import LM_ID, MO_ID, Scenario
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import (
    AgentFinal,
    AgentResiduals,
    BlockProposal,
    Closed,
    Gone,
    Round,
    Stop,
)

_SETUPS: dict[int, tuple[Scenario, MarketSetup]] = {}


def _shared_setup(scenario: Scenario) -> MarketSetup:
    """One :class:`MarketSetup` per scenario object, shared by the agents of one process."""
    cached = _SETUPS.get(id(scenario))
    if cached is None or cached[0] is not scenario:
        cached = _SETUPS[id(scenario)] = (scenario, build_setup(scenario))
    return cached[1]


@dataclass(frozen=True)
class Held:
    """What an agent carries of one pair into the next market of a day (a warm start): values
    it holds already, so nothing new is revealed (docs/privacy.md)."""

    trade: float  # P_nm, its own trade
    price: float  # λ_nm, its own price
    partner_price: float  # λ_mn, the partner's price as the exchange gave it
    derived: float  # its view of the partner's trade (masked LM leg)

    def to_state(self) -> list[float]:
        return [self.trade, self.price, self.partner_price, self.derived]

    @classmethod
    def from_state(cls, state: Sequence[float]) -> Held:
        return cls(*(float(v) for v in state))


def predicted_held(last: Mapping[str, Held], before: Mapping[str, Held]) -> dict[str, Held]:
    """A warm start's values per partner (:mod:`privgrid.market.warm`): ``last`` — what the
    previous market ended with — where the pair is new in it, else with the trade and the
    derived view of the partner's trade :func:`~privgrid.market.warm.predicted` from
    ``before`` (the market before that) too; prices are carried as they were."""
    out = dict(last)
    for m, held in last.items():
        earlier = before.get(m)
        if earlier is not None:
            out[m] = Held(
                predicted(held.trade, earlier.trade),
                held.price,
                held.partner_price,
                predicted(held.derived, earlier.derived),
            )
    return out


@dataclass
class RoundWork:
    """What the agent has of the round in progress."""

    round: int
    step: LocalStep
    own_shares: np.ndarray  # A_nm, fixed point: with λ_nm(k+1) it gives the partner's B_mn
    steps: StepSizes  # τ, α (and σ) of this round, as the MO announced them
    charges: np.ndarray | None = None
    evidence: dict[str, list[bytes]] = field(default_factory=dict)  # partners' signed messages


class AgentNode(Voter):
    mode: PrivacyMode  # an agent always has one (Node's may be None)

    def __init__(
        self,
        me: str,
        scenario: Scenario,
        cost: AgentCost,
        mode: PrivacyMode,
        log: ParticipantLog,
        identity: Identity | None = None,
        *,
        opening: int = 0,
        held: Mapping[str, Held] | None = None,
        setup: MarketSetup | None = None,
    ) -> None:
        """``opening``: the round before this market's first (a day's market; 0 alone).
        ``held``: a warm start — per partner kept from the previous market, its :class:`Held`
        values (an empty map: warm, but no pair kept); the agent then awaits the LM's opening
        message before round ``opening + 1``. ``setup``: the market's setup, if built already.
        """
        super().__init__(me, log, scenario, identity)
        self.dropped_pairs: tuple[tuple[str, str], ...] = ()
        self.scenario = scenario
        self.market = scenario.market
        graph = TradeGraph.from_scenario(scenario)
        index = graph.index(me)
        slots = graph.slots[index]
        self.partners = graph.partners_of(index)
        self.lo, self.hi = graph.lo[slots].copy(), graph.hi[slots].copy()
        self.cost = cost
        self.mode = mode
        self.exchange = mode.exchange(self.partners)
        self.crypto_threads = mode.crypto_threads
        # Built before connecting: loading the network takes seconds of CPU, and a client that
        # is silent for 1.5 keepalives inside its event loop is dropped by the broker.
        self._setup = setup if setup is not None else _shared_setup(scenario)
        self.base_steps = StepSizes(self.market.tau, self.market.alpha, self._setup.sigma)
        self.leg = mode.lm_leg(self.market_setup, self._mask_keys)
        ranges = trade_ranges(scenario)
        self.partner_lo = np.array([ranges[m][0] for m in self.partners])
        self.partner_hi = np.array([ranges[m][1] for m in self.partners])
        self.pair_checks = scenario.privacy.pair_checks
        n = len(slots)
        self.trades = np.zeros(n)
        self.prices = np.full(n, self.market.lambda0)
        self.partner_prices = self.prices.copy()
        self.charges = np.zeros(n)
        self.derived = np.zeros(n)  # what we derive of each partner's trade with us
        self.theta = float("nan")
        self.completed = opening  # last committed round
        #: A warm start's opening round while its LM message is awaited (then None).
        self.opening: int | None = None
        self.held_round: tuple[int, tuple[tuple[str, str], ...], int] | None = None
        if held is not None:
            self._carry_in(held)
            self.opening, self.completed = opening, opening - 1
        self.work: RoundWork | None = None
        self.early: list[Message] = []  # messages of round completed + 1, before its broadcast
        # Restarts (docs/reliability.md): what a restarted LM may have lost (the MO: last_mo).
        self.last_lm: Outgoing | None = None  # our LM contribution of the last round begun
        #: After our own restart: the round our checkpoint had completed (we resumed there).
        self.resumed_from: int | None = None

    def _carry_in(self, held: Mapping[str, Held]) -> None:
        for i, m in enumerate(self.partners):
            kept = held.get(m)
            if kept is not None:
                self.trades[i], self.prices[i] = kept.trade, kept.price
                self.partner_prices[i], self.derived[i] = kept.partner_price, kept.derived

    def carry_out(self) -> dict[str, Held]:
        """What this agent holds of each pair still in the market, for the next market."""
        dropped = self.exchange.dropped
        return {
            m: Held(
                float(self.trades[i]),
                float(self.prices[i]),
                float(self.partner_prices[i]),
                float(self.derived[i]),
            )
            for i, m in enumerate(self.partners)
            if m not in dropped
        }

    def counters(self) -> dict[str, float]:
        """The exchange's figures (proofs, pools), added up across restarts by the runtime."""
        return self.exchange.stats()

    def market_setup(self) -> MarketSetup:
        """The public market structure with the network."""
        return self._setup

    def _mask_keys(self) -> dict[str, bytes]:
        """k_mask with every other agent (masked aggregation runs over all agent pairs)."""
        assert self.channel is not None
        return {a: self.channel.mask_key(a) for a in self.scenario.agent_ids if a != self.me}

    def peers(self) -> set[str]:
        peers = {*self.partners, LM_ID, MO_ID}
        if self.scenario.privacy.lm_leg == "masked":
            peers |= set(self.scenario.agent_ids) - {self.me}  # mask keys with every agent
        return peers

    def start(self, now: float) -> list[Action]:
        self.last_heard = now
        return []

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, message: Message, now: float) -> list[Action]:
        self.last_heard = now
        from_mo = message.sender == MO_ID
        match message.body:
            case Round(dropped=dropped, steps=exponent) if from_mo:
                return self._begin(message.round, dropped or (), exponent or 0)
            case Stop() as stop:
                return self._stop(message.round, stop)
            case BlockProposal(block=raw) if from_mo:
                return self._vote(message.round, raw)
            case Closed(reason=reason) if from_mo:
                return self._closed(reason)
            case Gone():
                if message.sender in (MO_ID, LM_ID):
                    if self.wait_missing:
                        self.log.warning(
                            "%s left the run; waiting for it to rejoin", message.sender
                        )
                        return []
                    self.log.error("%s left the run; stopping", message.sender)
                    self.finish(EXIT_FAILURE)
                return []
        if self.opening is not None:
            if message.round == self.opening and message.sender == LM_ID:
                return self._opened(message)
            if message.round == self.opening + 1:
                self.early.append(message)  # a partner began the first round before us
                return []
        current = self.work.round if self.work else self.completed
        if message.round == current and self.work is not None:
            return self._in_round(message)
        if message.round == self.completed and self.exchange.redo:
            return self._serve(message)
        if message.round == self.completed + 1:
            self.early.append(message)
            return []
        self.log.warning(
            "dropped %s from %s: round %d is not the current round %d",
            message.kind,
            message.sender,
            message.round,
            current,
        )
        return []

    def precompute(self, message: Message) -> Callable[[], None] | None:
        work = self.work
        if work is None or message.round != work.round or message.kind not in self.exchange.kinds:
            return None
        return self.exchange.precompute(message)

    def tick(self, now: float) -> list[Action]:
        self._check_clocks(now)
        # Nothing arrived for a tick: spare time for the exchange's deferred work (pool
        # top-ups, batch verification); a proof found bad there is reported like any other.
        outgoing: list[Action] = []
        for found in self.exchange.work_while_idle(now):
            round_ = getattr(found, "round", self.completed)
            outgoing += self.report_violation(found.offender, found.reason, found.evidence, round_)
        return outgoing

    # -- restarts (docs/reliability.md) ---------------------------------------------------------
    _ARRAYS = ("trades", "prices", "partner_prices", "charges", "derived", "lo", "hi")

    def snapshot(self) -> dict[str, object] | None:
        """Our state at the end of a round (or after the final report / the vote)."""
        state: dict[str, object] = {n: [float(x) for x in getattr(self, n)] for n in self._ARRAYS}
        last_mo = self.last_mo
        state.update(
            completed=self.completed,
            opening=self.opening,
            theta=self.theta,
            dropped_pairs=[list(p) for p in self.dropped_pairs],
            exchange_dropped=sorted(self.exchange.dropped),
            awaiting_block=self.awaiting_block,
            voted=self.voted,
            last_mo=None if last_mo is None else last_mo.to_state(),
            # The round just completed, for a partner that restarts one round behind us
            # (peer_restarted): both of us restarted, it had not completed it yet.
            exchange=self.exchange.snapshot() if self._exchange_completed() else None,
        )
        return state

    def _exchange_completed(self) -> bool:
        """The exchange holds the round we completed last (not one in progress, not none)."""
        return self.work is None and 0 < self.exchange.round == self.completed

    def restore(self, state: Mapping[str, Any]) -> None:
        for name in self._ARRAYS:
            setattr(self, name, np.array(state[name], dtype=float))
        self.completed = int(state["completed"])
        opening = state.get("opening")
        self.opening = None if opening is None else int(opening)
        self.theta = float(state["theta"])
        self.dropped_pairs = tuple((str(a), str(b)) for a, b in state["dropped_pairs"])
        self.exchange.drop(state["exchange_dropped"])
        self.awaiting_block = bool(state["awaiting_block"])
        self.voted = bool(state["voted"])
        last = state["last_mo"]
        self.last_mo = None if last is None else Outgoing.from_state(last)
        exchange = state.get("exchange")  # absent from a checkpoint of an earlier version
        if exchange is not None:
            self.exchange.restore(exchange)
        self.resumed_from = self.completed
        self.log.round = self.completed

    def restore_session_secrets(self, secrets: Mapping[str, bytes]) -> None:
        if self.mode.restore_session_secrets(secrets) and hasattr(self.exchange, "rekeyed"):
            self.exchange.rekeyed()

    def resume_point(self) -> int:
        return self.completed

    def peer_restarted(
        self, peer: str, completed: int, new_keys: bool, now: float
    ) -> list[Action]:
        """Redo or re-send what ``peer`` lost since its checkpoint at round ``completed``."""
        self.last_heard = now
        if peer == MO_ID:
            return [] if self.last_mo is None else [self.last_mo]
        if peer == LM_ID:
            lm = self.last_lm
            return [lm] if lm is not None and lm.round == completed + 1 else []
        i = self.exchange.index.get(peer)
        if i is None or peer in self.exchange.dropped:
            return []
        self.early = [m for m in self.early if m.sender != peer]  # sent before its crash
        if self.work is not None and self.exchange.round <= completed:
            # It completed the round we are in. If we restarted into this round too, it
            # ignored our opening share (sent before we saw its restart) and needs it to redo
            # the round with us (it kept that round in its checkpoint); otherwise it got
            # everything of ours before its checkpoint.
            if self.resumed_from is None or self.work.round != self.resumed_from + 1:
                return []
            return [*self.exchange.resend_opening(i)]
        if self.exchange.round != completed + 1:
            return []  # we have not begun the round it redoes: it will come in order
        self.log.info("redoing round %d with %s after its restart", completed + 1, peer)
        return [*self.exchange.restart_partner(i)]

    def peer_resynced(self, peer: str) -> list[Action]:
        """After our restart: the MO may have lost our last report (the LM and partners lose
        nothing we sent before our checkpoint — they needed it to let us complete the round)."""
        if peer == MO_ID and self.last_mo is not None:
            return [self.last_mo]
        return []

    def _serve(self, message: Message) -> list[Action]:
        """A restarted partner redoes the round we completed: answer, nothing to commit."""
        try:
            if message.kind not in self.exchange.kinds:
                raise Rejected(f"unexpected {message.kind}", message.sender)
            outgoing: list[Action] = [*self.exchange.handle(message)]
        except Violation as exc:
            return self.report_violation(exc.offender, exc.reason, exc.evidence, self.completed)
        except Rejected as exc:
            self.log.warning("dropped %s from %s: %s", message.kind, message.sender, exc.reason)
            return []
        i = self.exchange.index[message.sender]
        if self.exchange.redo_done(i):
            self.log.info(
                "redo of round %d with %s done: same prices", self.completed, message.sender
            )
        return outgoing

    # -- a round ------------------------------------------------------------------------------
    def _drop_pairs(self, dropped: Sequence[Sequence[str]]) -> None:
        gone = {m for pair in dropped if self.me in pair for m in pair if m != self.me}
        new = gone - self.exchange.dropped
        if not new:
            return
        self.exchange.drop(new)
        for i, m in enumerate(self.partners):
            if m in new:  # the trade leaves the market: fixed at 0 on both sides
                self.trades[i] = 0.0
                self.lo[i] = self.hi[i] = 0.0
        self.log.warning(
            "the MO removed my pair(s) with %s from the market", ", ".join(sorted(new))
        )

    def _begin(
        self, round_: int, dropped: tuple[tuple[str, str], ...], exponent: int
    ) -> list[Action]:
        if round_ <= self.completed or (self.work is not None and self.work.round == round_):
            return []  # a repeat (the MO re-broadcasts its round after its restart)
        if self.opening is not None and round_ == self.opening + 1:
            self.held_round = (round_, dropped, exponent)  # begins once the opening is in
            return []
        if round_ != self.completed + 1 or self.work is not None:
            self.log.warning("ignored round %d (expected %d)", round_, self.completed + 1)
            return []
        self.dropped_pairs = dropped
        return self._play(round_, exponent)

    def _opened(self, message: Message) -> list[Action]:
        """The LM's opening message of a warm start: the charges of every pair from the
        carried line prices (``c = Gᵀ(η⁺ − η⁻)``); round ``opening + 1`` may begin."""
        assert self.opening is not None
        try:
            if message.kind != self.leg.charges_kind:
                raise Rejected(f"unexpected {message.kind}", message.sender)
            self.charges = self.leg.agent_charges(message, len(self.partners))
        except Rejected as exc:
            self.log.warning("dropped %s from %s: %s", message.kind, message.sender, exc.reason)
            return []
        self.completed, self.opening = self.opening, None
        outgoing: list[Action] = [CHECKPOINT]
        held, self.held_round = self.held_round, None
        if held is not None:
            outgoing += self._begin(*held)
        return outgoing

    def _play(self, round_: int, exponent: int) -> list[Action]:
        """Round ``round_`` begins with the step sizes the MO announced (exponent e: τ·2^e,
        α·2^-e): the local step, then our side of every exchange and the contribution for the
        LM; messages that came early are handled now."""
        self.log.round = round_
        self._drop_pairs(self.dropped_pairs)
        started = time.perf_counter()
        steps = self.base_steps.scaled(exponent)
        m = self.market
        step = local_step(
            self.cost, self.trades, self.prices, self.charges, self.lo, self.hi, steps.tau, m.rho
        )
        self.theta = step.theta
        step, own_fixed, peer_fixed = self._shares(round_, step, steps)
        self.compute_seconds += time.perf_counter() - started
        self.work = RoundWork(round_, step, own_fixed, steps)
        outgoing: list[Action] = [*self.exchange.begin(round_, own_fixed, peer_fixed)]
        self.last_lm = self.leg.agent_message(round_, step.trades, step.extrapolated)
        outgoing.append(self.last_lm)
        early, self.early = self.early, []
        for message in early:
            outgoing += self._in_round(message)
        return outgoing

    def _shares(
        self, round_: int, step: LocalStep, steps: StepSizes
    ) -> tuple[LocalStep, np.ndarray, np.ndarray]:
        """The step we play and our fixed-point price shares A (own) and B (peer) from it
        (``steps``: the round's step sizes as the MO announced them)."""
        m = self.market
        own, peer = price_shares(self.prices, step.extrapolated, steps.alpha, m.beta, m.rho)
        return step, share_to_fixed(own), share_to_fixed(peer)

    def _in_round(self, message: Message) -> list[Action]:
        work = self.work
        assert work is not None
        outgoing: list[Action] = []
        try:
            if message.kind in self.exchange.kinds:
                work.evidence.setdefault(message.sender, []).append(message.raw)
                outgoing = [*self.exchange.handle(message)]
            elif message.kind == self.leg.charges_kind and message.sender == LM_ID:
                work.charges = self.leg.agent_charges(message, len(self.partners))
            else:
                raise Rejected(f"unexpected {message.kind}", message.sender)
        except Violation as exc:
            i = self.exchange.index.get(exc.offender)
            if i is not None:
                self.exchange.fail(i)
            outgoing = self.report_violation(exc.offender, exc.reason, exc.evidence, work.round)
        except Rejected as exc:
            self.log.warning("dropped %s from %s: %s", message.kind, message.sender, exc.reason)
            return []
        if work.charges is None or not self.exchange.complete:
            return outgoing
        return outgoing + self._commit(work)

    def _commit(self, work: RoundWork) -> list[Action]:
        own, partner = self.exchange.prices(self.prices)
        m = self.market
        shares = partner_shares(encode(own), work.own_shares)
        alpha = work.steps.alpha
        view = derive_partner(shares, self.partner_prices, self.derived, alpha, m.beta, m.rho)
        active = np.zeros(len(self.partners), dtype=bool)
        active[[i for i, _ in self.exchange.active()]] = True
        outgoing = self._pair_checks(work, own, partner, view, active)
        self.trades, self.prices, self.partner_prices = work.step.trades, own, partner
        self.derived = np.where(active, view.trades, 0.0)
        self.charges = work.charges if work.charges is not None else self.charges
        self.completed, self.work = work.round, None
        gap, mismatch = agent_pair_residuals(own, partner, self.trades, self.derived, active)
        body = AgentResiduals(
            r_d=encode_scalar(work.step.residual),
            r_C=encode_scalar(quantise_scalar(gap)),
            r_P=encode_scalar(quantise_scalar(mismatch)),
        )
        self.last_mo = Outgoing(MO_ID, work.round, body)
        return [*outgoing, CHECKPOINT, self.last_mo]

    def _pair_checks(
        self,
        work: RoundWork,
        own: np.ndarray,
        partner: np.ndarray,
        view: PartnerView,
        active: np.ndarray,
    ) -> list[Action]:
        """I4, before the round is committed: every partner's two proven prices agree and the
        trade we derive of it (``view``) is in its range; a failure is reported to the MO."""
        if not self.pair_checks:
            return []
        checked = active & ~np.isin(np.arange(len(self.partners)), list(self.exchange.failed))
        failures = pair_checks(
            own,
            partner,
            view.target,
            self.partner_lo,
            self.partner_hi,
            self.market.beta,
            self.market.rho,
            checked,
        )
        outgoing: list[Action] = []
        for failure in failures:
            offender = self.partners[failure.partner_index]
            evidence = work.evidence.get(offender, [])
            reason = f"pair check: {failure.reason}"
            outgoing += self.report_violation(offender, reason, evidence, work.round)
        return outgoing

    # -- the end ------------------------------------------------------------------------------
    def _stop(self, round_: int, stop: Stop) -> list[Action]:
        if round_ == 0:
            self.log.error("the MO could not start the run: %s", stop.reason)
            self.finish(EXIT_FAILURE)
            return []
        if self.last_mo is not None and not isinstance(self.last_mo.body, AgentResiduals):
            return []  # a repeat (the MO re-broadcasts after its restart): reported already
        if round_ != self.completed:
            self.log.warning("stop for round %d while at round %d", round_, self.completed)
        verdict = "converged" if stop.converged else "did not converge"
        self.log.info("market %s after round %d: %s", verdict, round_, stop.reason)
        active = [i for i, _ in self.exchange.active()]
        view = AgentView(
            [self.partners[i] for i in active],
            self.trades[active],
            self.prices[active],
            self.charges[active],
            self.lo[active],
            self.hi[active],
            self.partner_prices[active],
        )
        checks = check_agent(
            self.me, self.cost, self.theta, view, Tolerances.for_market(self.market)
        )
        for check in (c for c in checks if not c.passed):
            self.log.warning(
                "own KKT check %s failed at %s: %.3g > %.3g",
                check.condition,
                check.subject,
                check.value,
                check.tolerance,
            )
        # Batch verification: every proof still pending is checked now, before the report and
        # so before any block; a failure reaches the MO ahead of the report (it commits nothing).
        reports: list[Action] = []
        for found in self.exchange.settle():
            round_ = getattr(found, "round", self.completed)
            reports += self.report_violation(found.offender, found.reason, found.evidence, round_)
        body = AgentFinal(
            P=fixed_tuple(self.trades),
            lam=fixed_tuple(self.prices),
            lam_peer=fixed_tuple(self.partner_prices),
            c=fixed_tuple(self.charges),
            kkt=tuple(c.as_dict() for c in checks),
            stats=self.stats(),  # with counters(): every incarnation
        )
        self._expect_block(stop.converged)
        self.last_mo = Outgoing(MO_ID, self.completed, body)
        return [*reports, CHECKPOINT, self.last_mo]

    def block_checks(self, block: Block) -> list[Check]:
        """Proof of Solution, an agent's part: our own record in the block (A0) and the KKT
        conditions with our private cost and θ (A1–A4); pairs the MO dropped do not count."""
        held = (self.trades, self.prices, self.charges)
        checks = agent_checks(block, self._setup, self.me, self.cost, self.theta, held)
        return excluding_pairs(checks, [[self.me, m] for m in self.exchange.dropped])
