"""Plain mode: each agent sends its share ``B_nm`` sealed to its partner, who adds it.

Per direction n→m and round: m sends ``share`` {B_mn}; n computes ``λ_nm = A_nm + B_mn``
(integer sum of fixed-point values) and sends ``price`` {λ_nm} back, so both sides know both
prices of the pair (needed for the price-consensus residual and the pair checks). Everything
is sealed per pair, so the broker sees neither shares nor prices — but the partner learns as
much as in the two-party computation (protocol.md §7.1).
"""

from __future__ import annotations

import numpy as np

from privgrid.privacy.exchange import PriceExchange
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import Kind, Price, Share
from privgrid.wire.schema import INT64_MAX, INT64_MIN


class PlainExchange(PriceExchange):
    kinds = frozenset({Kind.SHARE, Kind.PRICE})

    def begin(self, round_: int, own: np.ndarray, peer: np.ndarray) -> list[Outgoing]:
        self._reset(round_)
        self._own_share = [int(x) for x in own]
        self._peer_share = [int(x) for x in peer]
        return [Outgoing(m, round_, Share(int(peer[i]))) for i, m in self.active()]

    def handle(self, message: Message) -> list[Outgoing]:
        i = self.partner_index(message)
        match message.body:
            case Share(x=share):
                price = self._own_share[i] + share
                if not INT64_MIN <= price <= INT64_MAX:
                    raise Rejected("share makes the price overflow", message.sender)
                self._set_own(i, price)
                return [Outgoing(message.sender, self.round, Price(price))]
            case Price(x=price):
                self._set_peer(i, price)
                return []
        raise Rejected(f"unexpected {message.kind}", message.sender)

    def _restart_direction(self, i: int) -> list[Outgoing]:
        m = self.partners[i]
        return [Outgoing(m, self.round, Share(self._peer_share[i]))]
