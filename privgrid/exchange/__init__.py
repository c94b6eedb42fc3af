"""The pairwise price exchange of step 2, behind one interface for every privacy mode.

For each partner m, agent n holds its two fixed-point shares: ``A_nm`` (its own new price's
share) and ``B_nm`` (its contribution to m's new price). An exchange runs the two directions
of every pair and ends with, per partner, ``λ_nm`` (n's own new price) and ``λ_mn`` (the
partner's, as n verified it). The mode is chosen once at start-up (:func:`make_exchange`);
role code never branches on it.

- ``plain``: shares travel sealed (X25519 + ChaCha20-Poly1305) to the partner, who adds them;
- ``paillier``: the two-party computation of protocol.md §4 (see :mod:`.paillier`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from privgrid.market.fixedpoint import decode
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected


class PriceExchange(ABC):
    """One agent's side of all its pairs' price computations, round by round."""

    #: Message kinds this exchange consumes.
    kinds: frozenset[str] = frozenset()

    def __init__(self, me: str, partners: Sequence[str]) -> None:
        self.me = me
        self.partners = list(partners)
        self.index = {m: i for i, m in enumerate(self.partners)}
        self.round = 0
        self.crypto_seconds = 0.0  # time in this mode's cryptography
        self._own: list[int | None] = []
        self._peer: list[int | None] = []

    def _reset(self, round_: int) -> None:
        self.round = round_
        self._own = [None] * len(self.partners)
        self._peer = [None] * len(self.partners)

    def partner_index(self, message: Message) -> int:
        i = self.index.get(message.sender)
        if i is None:
            raise Rejected(
                f"{message.sender} is not a trading partner of {self.me}", message.sender
            )
        return i

    @abstractmethod
    def begin(self, round_: int, own: np.ndarray, peer: np.ndarray) -> list[Outgoing]:
        """Start round ``round_`` with our fixed-point shares A (own) and B (peer), per partner."""

    @abstractmethod
    def handle(self, message: Message) -> list[Outgoing]:
        """One message of ours; raise ``Rejected`` for anything out of protocol."""

    @property
    def complete(self) -> bool:
        return all(x is not None for x in self._own) and all(x is not None for x in self._peer)

    def prices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(λ_nm, λ_mn)`` per partner, once :attr:`complete`."""
        own = np.array(self._own, dtype=np.int64)
        peer = np.array(self._peer, dtype=np.int64)
        return decode(own), decode(peer)

    def counters(self) -> dict[str, float]:
        """Mode-specific figures for the results (e.g. proofs made, verified, failed)."""
        return {}


def make_exchange(mode: str, me: str, partners: Sequence[str], **options: object) -> PriceExchange:
    """The price exchange of privacy mode ``mode``."""
    if mode == "plain":
        from privgrid.exchange.plain import PlainExchange

        return PlainExchange(me, partners)
    raise ValueError(f"unknown privacy mode {mode!r}")
