"""The pairwise price exchange of step 2, one interface for every privacy mode.

For each partner m, agent n holds its two fixed-point shares: ``A_nm`` (its own new price's
share) and ``B_nm`` (its contribution to m's new price). An exchange runs both directions of
every pair and ends with, per partner, ``λ_nm`` (n's own new price) and ``λ_mn`` (the partner's,
as n verified it). The integer sum of the shares is the price in every mode, so plain and
Paillier runs compute the same bits.

A check that fails on a correctly signed message is a protocol violation: the exchange raises
:class:`Violation` carrying the offender's signed messages as evidence; the agent reports it
to the MO and the direction counts as failed (the round still completes; the MO decides).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privgrid.market.fixedpoint import decode
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import Kind

#: Longest stretch of deferred work per idle tick: short enough that a message arriving
#: meanwhile waits no longer than a typical MQTT hop on loopback takes anyway.
IDLE_BUDGET_S = 0.05


class Violation(Rejected):
    """A signed, in-protocol message failed a check: evidence against ``offender``."""

    def __init__(self, offender: str, reason: str, evidence: Sequence[bytes] = ()) -> None:
        super().__init__(reason, offender)
        self.offender = offender
        self.evidence = list(evidence)


@dataclass
class CryptoCounters:
    """Proof counters and crypto time per phase, shared by a mode's exchange and LM leg."""

    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add_time(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def as_stats(self) -> dict[str, float]:
        return {
            **{f"crypto_{k}": v for k, v in self.seconds.items()},
            **{k: float(v) for k, v in self.counts.items()},
        }


class PriceExchange(ABC):
    """One agent's side of all its pairs' price computations, round by round."""

    #: Message kinds this exchange consumes.
    kinds: frozenset[Kind] = frozenset()

    def __init__(self, me: str, partners: Sequence[str]) -> None:
        self.me = me
        self.partners = list(partners)
        self.index = {m: i for i, m in enumerate(self.partners)}
        self.round = 0
        self.counters = CryptoCounters()
        self.dropped: set[str] = set()  # partners removed by the MO (on_violation = drop_pair)
        self._own: list[int | None] = []
        self._peer: list[int | None] = []
        self._failed: set[int] = set()
        #: Partners redoing this round after a restart, and the prices we had with them.
        self.redo: set[int] = set()
        self._expected: dict[int, tuple[int | None, int | None]] = {}

    def _reset(self, round_: int) -> None:
        self.round = round_
        self._own = [None] * len(self.partners)
        self._peer = [None] * len(self.partners)
        self._failed = set()
        self.redo = set()
        self._expected = {}

    # -- results, checked against what we had before a partner's restart ---------------------
    def _set_own(self, i: int, value: int) -> None:
        self._check_redo(i, 0, value, "our price")
        self._own[i] = value

    def _set_peer(self, i: int, value: int) -> None:
        self._check_redo(i, 1, value, "its price")
        self._peer[i] = value

    def _check_redo(self, i: int, side: int, value: int, what: str) -> None:
        expected = self._expected.get(i)
        if expected is None or expected[side] is None or expected[side] == value:
            return
        partner = self.partners[i]
        raise Violation(
            partner,
            f"after its restart, {partner} computed {what} of round {self.round} differently "
            f"({value} instead of {expected[side]}, fixed point)",
        )

    def restart_partner(self, i: int) -> list[Outgoing]:
        """Partner ``i`` restarted and redoes this round with us: start both directions over.

        Our shares are unchanged, so the prices must come out the same as before (checked:
        a partner that changes them after a restart is reported). Returns what we send first.
        """
        if self._own[i] is not None or self._peer[i] is not None:
            self._expected[i] = (self._own[i], self._peer[i])
        self._own[i] = self._peer[i] = None
        self._failed.discard(i)
        self.redo.add(i)
        return self._restart_direction(i)

    def _restart_direction(self, i: int) -> list[Outgoing]:
        """Mode hook of :meth:`restart_partner`: forget the partner's part, resend ours."""
        raise NotImplementedError

    def resend_opening(self, i: int) -> list[Outgoing]:
        """Partner ``i`` rejoined having completed the round we are in, while our own price
        with it is not in yet: both of us restarted, and it ignored what we sent it before we
        saw its restart (it waits for our ``resync``). Send our opening message of the round
        to it again — the same share, nothing forgotten — so that it can answer. Returns
        nothing when we have our price already (it had all it needed from us)."""
        if self._own[i] is not None:
            return []
        return self._opening(i)

    def _opening(self, i: int) -> list[Outgoing]:
        """Mode hook of :meth:`resend_opening`: our opening message of the round to ``i``."""
        raise NotImplementedError

    # -- our own restart: the last completed round, kept in the checkpoint --------------------
    def snapshot(self) -> dict[str, object]:
        """What we need to redo the round just completed with a partner that restarted one
        round behind us, after our own restart (msgpack-able): the round, both results of
        every pair (fixed point), and the mode's shares (:meth:`_round_state`). Without it a
        restarted partner that had not completed that round waits for us forever: we moved
        on, and the round's shares were only in memory."""
        return {
            "round": self.round,
            "own": list(self._own),
            "peer": list(self._peer),
            **self._round_state(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """The exchange of :meth:`snapshot`'s round, completed: ready to serve a restarted
        partner's redo of it (:meth:`restart_partner`), whose prices must come out equal."""
        self._reset(int(state["round"]))
        self._own = [None if v is None else int(v) for v in state["own"]]
        self._peer = [None if v is None else int(v) for v in state["peer"]]
        if len(self._own) != len(self.partners) or len(self._peer) != len(self.partners):
            raise ValueError("the exchange's checkpoint is of another set of partners")
        self._restore_round_state(state)

    def _round_state(self) -> dict[str, object]:
        """Mode hook of :meth:`snapshot`: the round's own shares, as plain integers."""
        raise NotImplementedError

    def _restore_round_state(self, state: Mapping[str, Any]) -> None:
        """Mode hook of :meth:`restore`."""
        raise NotImplementedError

    def redo_done(self, i: int) -> bool:
        """Partner ``i``'s redo is complete (both prices in again)."""
        done = self._own[i] is not None and self._peer[i] is not None
        if done:
            self.redo.discard(i)
            self._expected.pop(i, None)
        return done

    def drop(self, partners: Iterable[str]) -> None:
        self.dropped.update(p for p in partners if p in self.index)

    def active(self) -> list[tuple[int, str]]:
        return [(i, m) for i, m in enumerate(self.partners) if m not in self.dropped]

    def partner_index(self, message: Message) -> int:
        i = self.index.get(message.sender)
        if i is None or message.sender in self.dropped:
            raise Rejected(
                f"{message.sender} is not a trading partner of {self.me}", message.sender
            )
        return i

    @property
    def failed(self) -> frozenset[int]:
        """Partners whose direction failed its checks this round."""
        return frozenset(self._failed)

    def fail(self, i: int) -> None:
        """The partner's direction failed its checks this round (a violation was reported)."""
        self._failed.add(i)

    @abstractmethod
    def begin(self, round_: int, own: np.ndarray, peer: np.ndarray) -> list[Outgoing]:
        """Start round ``round_`` with our fixed-point shares A (own) and B (peer), per partner."""

    @abstractmethod
    def handle(self, message: Message) -> list[Outgoing]:
        """One message of ours; raise ``Rejected`` (or ``Violation``) when it is out of line."""

    @property
    def complete(self) -> bool:
        return all(
            i in self._failed or (self._own[i] is not None and self._peer[i] is not None)
            for i, _ in self.active()
        )

    def prices(self, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(λ_nm, λ_mn)`` per partner, once :attr:`complete`. Dropped partners, and pairs
        that failed this round (a violation was reported; the MO rules on it), keep
        ``previous``."""
        own = previous.copy()
        peer = previous.copy()
        for i, _ in self.active():
            if i not in self._failed:
                own[i], peer[i] = decode(np.array([self._own[i], self._peer[i]], dtype=np.int64))
        return own, peer

    # -- deferred work (Paillier pools and batch verification; no-ops elsewhere) ---------------
    def precompute(self, message: Message) -> Callable[[], None] | None:
        """The heavy, side-effect-free part of handling ``message``, to run on a worker thread
        (``privacy.crypto_threads``) while other pairs' messages are handled; None if there is
        none. :meth:`handle` uses the result only if its inputs are the ones it would use
        itself, and computes inline otherwise, so precomputing never changes an outcome."""
        return None

    def idle(self, now: float) -> bool:
        """Do one small piece of deferred work in spare time; False when there is none."""
        return False

    def settle(self) -> list[Violation]:
        """Finish every deferred check (before the final report); return what failed."""
        return self.drain_violations()

    def drain_violations(self) -> list[Violation]:
        """Violations found by deferred checks since the last call, to report to the MO."""
        return []

    def work_while_idle(self, now: float, budget_s: float = IDLE_BUDGET_S) -> list[Violation]:
        """Deferred work for up to about ``budget_s`` (the caller's event loop waits meanwhile),
        then the violations it found. Called by the agent when nothing arrived for a tick."""
        deadline = time.perf_counter() + budget_s
        while time.perf_counter() < deadline and self.idle(now):
            pass
        return self.drain_violations()

    def stats(self) -> dict[str, float]:
        """Mode-specific figures for the results (proofs made/verified/failed, crypto phases)."""
        return self.counters.as_stats()
