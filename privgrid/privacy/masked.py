"""I5, masked aggregation (protocol.md §6.2): the Line Manager learns line flows, never a trade.

The LM needs only ``F̄ = Σ_n f_n`` with ``f_n = G[:, slots of n] · P̄_n`` (G is public). Agent n
sends, per limited line, ``y_n = f_n + Σ_{m>n} M_nm − Σ_{m<n} M_mn (mod 2^64)`` where
``M_nm = HMAC-SHA256(k_mask_nm, run ‖ k ‖ line)[:8]`` and ``k_mask_nm`` comes from the same
X25519 exchange as the sealing keys (HKDF, info "privgrid/mask/v1"), over **all** agent pairs,
not only trading pairs. The masks cancel in ``Σ y_n``, so the LM gets F̄ exactly (in fixed point)
and nothing per agent. It tracks ``F(P^{k+1})`` itself (linear in the trades), sends the line
prices η to each agent, and each agent computes its own charges ``Gᵀη`` for its trades.

Both directions are sealed per pair (agent ↔ LM, :mod:`privgrid.wire.kinds`): the masks cancel
in the sum for anyone who holds every share, so shares in the clear would give the broker the
line flows each round; sealed, the broker learns nothing per round from this leg. The price of
that is one line-prices message per agent per round instead of one broadcast (docs/privacy.md).

Values use the one fixed-point scale 2^32 (protocol.md suggests 24 fractional bits; 32 leave
|F| < 2^31 kW, ample, and keep every value on one grid). If an agent drops out of a round, the
round cannot complete — the MO's timeout applies (protocol.md: "the round is repeated without
it"; recovery is the faults work). What it does not stop: the LM colluding with agents, who can
unmask partial sums.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from privgrid.crypto.sealing import net_masks
from privgrid.market.fixedpoint import decode, encode
from privgrid.market.line_step import (
    MASK_MODULUS,
    LinePrices,
    aggregate_flows,
    charges_for,
    flow_contribution,
    relaxed_flows,
)
from privgrid.market.setup import MarketSetup
from privgrid.privacy.lmleg import Contribution, LmLeg
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import FlowsMasked, Kind, LinePriceUpdate


class MaskedLeg(LmLeg):
    agent_kind = Kind.FLOWS_MASKED
    charges_kind = Kind.LINE_PRICES
    _carried = ("flows",)

    def __init__(
        self,
        me: str,
        run: str,
        setup: Callable[[], MarketSetup],
        mask_keys: Callable[[], dict[str, bytes]],
    ) -> None:
        super().__init__()
        self.me = me
        self.run = run
        self._setup = setup
        self._mask_keys = mask_keys
        self._columns: np.ndarray | None = None
        self.flows: np.ndarray | None = None  # LM side: F(P^k)

    def _agent_columns(self) -> np.ndarray:
        if self._columns is None:
            setup = self._setup()
            self._columns = setup.G[:, setup.graph.slots[setup.graph.index(self.me)]]
        return self._columns

    # -- agent side ------------------------------------------------------------------------------
    def agent_message(self, round_: int, trades: np.ndarray, extrapolated: np.ndarray) -> Outgoing:
        from privgrid.scenario import LM_ID

        setup = self._setup()
        contribution = flow_contribution(self._agent_columns(), extrapolated)
        lines = [setup.line_names[branch] for branch in setup.limited]
        nets = net_masks(self.me, self._mask_keys(), self.run, round_, lines)
        masked = [
            (int(value) + net) % MASK_MODULUS for value, net in zip(contribution, nets, strict=True)
        ]
        return Outgoing(LM_ID, round_, FlowsMasked(tuple(masked)))

    def agent_charges(self, message: Message, count: int) -> np.ndarray:
        columns = self._agent_columns()
        body = message.expect(LinePriceUpdate)
        up, down = body.up, body.down
        if len(up) != columns.shape[0] or len(down) != columns.shape[0]:
            raise Rejected(
                f"line prices for {len(up)} lines, {columns.shape[0]} are limited", message.sender
            )
        prices = LinePrices(
            decode(np.array(up, dtype=np.int64)), decode(np.array(down, dtype=np.int64))
        )
        return charges_for(columns, prices)

    # -- LM side ---------------------------------------------------------------------------------
    def _read(self, message: Message, count: int) -> Contribution:
        values = message.expect(FlowsMasked).y
        if len(values) != len(self._setup().limited):
            raise Rejected(f"masked flows for {len(values)} lines", message.sender)
        return values

    def lm_flows(
        self, setup: MarketSetup, rho: float
    ) -> tuple[np.ndarray, np.ndarray, float | None]:
        bar = aggregate_flows(list(self._received.values()))  # the masks cancel here
        self._received = {}
        old = self.flows if self.flows is not None else np.zeros(len(setup.limited))
        self.flows = relaxed_flows(old, bar, rho)
        return bar, self.flows, None  # reciprocity comes from the agents

    def lm_carry(self, trades: np.ndarray | None, flows: np.ndarray) -> None:
        self.flows = np.array(flows, dtype=float)  # what the LM tracked: no new aggregation

    def lm_send(self, round_: int, setup: MarketSetup, prices: LinePrices) -> list[Outgoing]:
        """The line prices, sealed to each agent (the same values for all)."""
        body = LinePriceUpdate(
            up=tuple(int(x) for x in encode(prices.up)),
            down=tuple(int(x) for x in encode(prices.down)),
        )
        return [Outgoing(agent, round_, body) for agent in setup.graph.agent_ids]
