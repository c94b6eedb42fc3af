"""The LM leg: how trades reach the Line Manager and charges come back, per privacy mode.

One object serves both ends (the agent and the LM call different methods), so a mode's two
sides cannot drift apart. ``privacy.lm_leg`` picks one at start-up:

- ``sealed``: trades sealed to the LM, charges sealed to each agent (plain mode's default);
- ``paillier``: trades packed into ciphertexts under the LM's Paillier key, charges packed
  under each agent's key (protocol.md §6.2, the published design) — the LM decrypts every
  trade, which is what lets it recover everyone's a, b (protocol.md §7.2).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from privgrid.market.fixedpoint import decode, encode
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected


class LmLeg(ABC):
    trades_kind: str
    charges_kind: str

    @abstractmethod
    def trades_out(self, round_: int, trades: np.ndarray) -> Outgoing:
        """Agent side: its new trades for the LM."""

    @abstractmethod
    def trades_in(self, message: Message, count: int) -> np.ndarray:
        """LM side: an agent's trades (``count`` values) or ``Rejected``."""

    @abstractmethod
    def charges_out(self, round_: int, agent: str, charges: np.ndarray) -> Outgoing:
        """LM side: one agent's charges."""

    @abstractmethod
    def charges_in(self, message: Message, count: int) -> np.ndarray:
        """Agent side: its charges (``count`` values) or ``Rejected``."""


def _checked(values: list[int], count: int, message: Message, what: str) -> np.ndarray:
    if len(values) != count:
        raise Rejected(f"{what}: {len(values)} values where {count} are expected", message.sender)
    return decode(np.array(values, dtype=np.int64))


class SealedLeg(LmLeg):
    """Fixed-point values in sealed bodies (sealing happens in the channel)."""

    trades_kind = "trades"
    charges_kind = "charges"

    def trades_out(self, round_: int, trades: np.ndarray) -> Outgoing:
        from privgrid.scenario import LM_ID

        return Outgoing(self.trades_kind, LM_ID, round_, {"x": [int(x) for x in encode(trades)]})

    def trades_in(self, message: Message, count: int) -> np.ndarray:
        return _checked(message.body["x"], count, message, "trades")

    def charges_out(self, round_: int, agent: str, charges: np.ndarray) -> Outgoing:
        return Outgoing(self.charges_kind, agent, round_, {"x": [int(x) for x in encode(charges)]})

    def charges_in(self, message: Message, count: int) -> np.ndarray:
        return _checked(message.body["x"], count, message, "charges")
