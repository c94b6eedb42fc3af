"""The LM leg: how the Line Manager gets the flows it prices and how charges get back.

One object serves both ends — the agent calls ``agent_*``, the LM calls ``lm_*`` — so a
leg's two sides cannot drift apart, and neither role branches on the mode
(``privacy.lm_leg``, chosen at start-up):

- ``masked`` (I5, the default; :mod:`.masked`): each agent sends its share of the extrapolated
  line flows plus pairwise masks that cancel in the sum; the LM learns the flows only and
  sends each agent the line prices (both ways sealed); each agent computes its own charges.
  Reciprocity is then
  reported by the agents from what they derive about their partners;
- ``paillier`` (:mod:`.paillier`): trades packed under the LM's Paillier key, charges under the
  agent's — the published design, in which the LM decrypts every trade (protocol.md §7.2);
- ``sealed``: trades and charges as fixed-point integers in sealed bodies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from privgrid.market.agent_step import extrapolate
from privgrid.market.fixedpoint import decode, encode
from privgrid.market.line_step import LinePrices, charges_for, reciprocity_residual
from privgrid.market.setup import MarketSetup
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import Charges, Kind, Trades

#: What one agent sends the LM in a round: its decoded trades (direct legs) or its masked flow
#: shares as they arrived (masked leg).
Contribution = np.ndarray | Sequence[int]


class LmLeg(ABC):
    agent_kind: Kind  # what an agent sends the LM each round
    charges_kind: Kind  # what brings an agent its charges

    # -- agent side ------------------------------------------------------------------------------
    @abstractmethod
    def agent_message(self, round_: int, trades: np.ndarray, extrapolated: np.ndarray) -> Outgoing:
        """This round's contribution for the LM."""

    @abstractmethod
    def agent_charges(self, message: Message, count: int) -> np.ndarray:
        """The agent's charges from the LM's answer (``Rejected`` if it is malformed)."""

    # -- LM side ---------------------------------------------------------------------------------
    def __init__(self) -> None:
        self._received: dict[str, Contribution] = {}

    def lm_receive(self, message: Message, count: int) -> None:
        """Keep one agent's contribution for the round (``Rejected`` if malformed)."""
        self._last = self._read(message, count)
        self._received[message.sender] = self._last

    def last_received(self) -> list[float | int]:
        """What the LM just got, as it got it: an agent's trades (direct legs) or its masked
        flow shares (masked leg). For the opt-in audit record only."""
        return [v.item() if hasattr(v, "item") else v for v in self._last]

    @abstractmethod
    def _read(self, message: Message, count: int) -> Contribution: ...

    def lm_ready(self, agents: int) -> bool:
        return len(self._received) >= agents

    @abstractmethod
    def lm_flows(
        self, setup: MarketSetup, rho: float
    ) -> tuple[np.ndarray, np.ndarray, float | None]:
        """``(F̄, F(P^{k+1}), r_P or None)`` from the round's contributions (then forgotten)."""

    @abstractmethod
    def lm_send(self, round_: int, setup: MarketSetup, prices: LinePrices) -> list[Outgoing]:
        """Give the agents what they need for their charges."""

    #: LM-side arrays carried from round to round: what a checkpoint must hold.
    _carried: tuple[str, ...] = ()

    def lm_snapshot(self) -> dict[str, list[float] | None]:
        """The LM side's state between rounds (for the LM's checkpoint)."""
        return {
            name: None if getattr(self, name) is None else [float(x) for x in getattr(self, name)]
            for name in self._carried
        }

    def lm_restore(self, state: dict[str, list[float] | None]) -> None:
        """Resume from :meth:`lm_snapshot` (the round's contributions start empty)."""
        self._received = {}
        for name in self._carried:
            value = state.get(name)
            setattr(self, name, None if value is None else np.array(value, dtype=float))

    def lm_drop(self, setup: MarketSetup, pairs: Sequence[Sequence[str]]) -> None:  # noqa: B027
        """Pairs left the market (``drop_pair``); direct legs zero their remembered trades."""

    @abstractmethod
    def lm_carry(self, trades: np.ndarray | None, flows: np.ndarray) -> None:
        """A warm start (a day's next market): the LM side begins from what it holds of the
        previous market — the trades of the pairs kept (new ones at 0) where it sees trades,
        else its tracked flows ``F(P)``."""

    def lm_state(self, setup: MarketSetup) -> tuple[np.ndarray, np.ndarray]:
        """What the LM ends with for its KKT part: (trades, charges) — NaN where it never saw."""
        n = setup.graph.n_trades
        return np.full(n, np.nan), np.full(n, np.nan)


class DirectLeg(LmLeg):
    """Legs in which the LM receives every trade (sealed or under its Paillier key)."""

    _carried = ("trades", "charges")

    def __init__(self) -> None:
        super().__init__()
        self.trades: np.ndarray | None = None
        self.charges: np.ndarray | None = None

    def _collect(self, setup: MarketSetup) -> np.ndarray:
        g = setup.graph
        new = np.empty(g.n_trades)
        for agent, values in self._received.items():
            new[g.slots[g.index(agent)]] = values
        self._received = {}
        return new

    def lm_flows(
        self, setup: MarketSetup, rho: float
    ) -> tuple[np.ndarray, np.ndarray, float | None]:
        old = self.trades if self.trades is not None else np.zeros(setup.graph.n_trades)
        new = self._collect(setup)
        self.trades = new
        bar = extrapolate(old, new, rho)
        return setup.G @ bar, setup.G @ new, reciprocity_residual(new, setup.graph.mirror)

    def lm_send(self, round_: int, setup: MarketSetup, prices: LinePrices) -> list[Outgoing]:
        g = setup.graph
        self.charges = charges_for(setup.G, prices)
        return [
            self.charges_out(round_, agent, self.charges[g.slots[i]])
            for i, agent in enumerate(g.agent_ids)
        ]

    @abstractmethod
    def charges_out(self, round_: int, agent: str, charges: np.ndarray) -> Outgoing: ...

    def lm_carry(self, trades: np.ndarray | None, flows: np.ndarray) -> None:
        if trades is None:
            raise ValueError("a warm start of a direct LM leg needs the trades it saw")
        self.trades = np.array(trades, dtype=float)

    def lm_drop(self, setup: MarketSetup, pairs: Sequence[Sequence[str]]) -> None:
        if self.trades is None:
            return
        g = setup.graph
        for n, m in pairs:
            self.trades[g.trade(n, m)] = self.trades[g.trade(m, n)] = 0.0

    def lm_state(self, setup: MarketSetup) -> tuple[np.ndarray, np.ndarray]:
        trades, charges = super().lm_state(setup)
        return (
            self.trades if self.trades is not None else trades,
            self.charges if self.charges is not None else charges,
        )


def _checked(values: Sequence[int], count: int, message: Message, what: str) -> np.ndarray:
    if len(values) != count:
        raise Rejected(f"{what}: {len(values)} values where {count} are expected", message.sender)
    return decode(np.array(values, dtype=np.int64))


class SealedLeg(DirectLeg):
    """Fixed-point values in sealed bodies (sealing happens in the channel)."""

    agent_kind = Kind.TRADES
    charges_kind = Kind.CHARGES

    def agent_message(self, round_: int, trades: np.ndarray, extrapolated: np.ndarray) -> Outgoing:
        from privgrid.scenario import LM_ID

        return Outgoing(LM_ID, round_, Trades(tuple(int(x) for x in encode(trades))))

    def agent_charges(self, message: Message, count: int) -> np.ndarray:
        return _checked(message.expect(Charges).x, count, message, "charges")

    def _read(self, message: Message, count: int) -> Contribution:
        return _checked(message.expect(Trades).x, count, message, "trades")

    def charges_out(self, round_: int, agent: str, charges: np.ndarray) -> Outgoing:
        return Outgoing(agent, round_, Charges(tuple(int(x) for x in encode(charges))))
