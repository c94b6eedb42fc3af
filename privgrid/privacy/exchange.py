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

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from privgrid.market.fixedpoint import decode
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected


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
    kinds: frozenset[str] = frozenset()

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

    def _reset(self, round_: int) -> None:
        self.round = round_
        self._own = [None] * len(self.partners)
        self._peer = [None] * len(self.partners)
        self._failed = set()

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

    def stats(self) -> dict[str, float]:
        """Mode-specific figures for the results (proofs made/verified/failed, crypto phases)."""
        return self.counters.as_stats()
