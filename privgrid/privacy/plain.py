"""Plain mode: one sealed ``share`` per direction and round, carrying both of the sender's
shares of the pair.

m sends n ``share`` {x: B_mn, own: A_mn}; n computes its own new price ``λ_nm = A_nm + B_mn``
and the partner's ``λ_mn = A_mn + B_nm`` (integer sums of fixed-point values), and m does the
same with n's message — so both sides know both prices of the pair (needed for the
price-consensus residual and the pair checks) after one hop. Everything is sealed per pair,
so the broker sees neither shares nor prices; the partner learns what the two-party
computation reveals too: its partner's new price, and with its own B_nm that gives A_mn
(protocol.md §7.1).

Why one message and not a share and a price sent back: the price back carried nothing the
recipient could not add up itself, and cost a message and a broker hop per direction and
round — a third of a plain round's messages (docs/performance.md, the wire profile).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from privgrid.privacy.exchange import PriceExchange
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import Kind, Share
from privgrid.wire.schema import INT64_MAX, INT64_MIN


class PlainExchange(PriceExchange):
    kinds = frozenset({Kind.SHARE})

    def __init__(self, me: str, partners: Sequence[str]) -> None:
        super().__init__(me, partners)
        self._own_share: list[int] = []  # A_nm and B_nm of the round, per partner
        self._peer_share: list[int] = []

    def begin(self, round_: int, own: np.ndarray, peer: np.ndarray) -> list[Outgoing]:
        self._reset(round_)
        self._own_share = [int(x) for x in own]
        self._peer_share = [int(x) for x in peer]
        return [self._share(i, m) for i, m in self.active()]

    def _share(self, i: int, m: str) -> Outgoing:
        return Outgoing(m, self.round, Share(self._peer_share[i], self._own_share[i]))

    def handle(self, message: Message) -> list[Outgoing]:
        i = self.partner_index(message)
        share = message.expect(Share)
        own = self._own_share[i] + share.x  # λ_nm = A_nm + B_mn
        peer = share.own + self._peer_share[i]  # λ_mn = A_mn + B_nm
        if not (INT64_MIN <= own <= INT64_MAX and INT64_MIN <= peer <= INT64_MAX):
            raise Rejected("share makes a price overflow", message.sender)
        self._set_own(i, own)
        self._set_peer(i, peer)
        return []

    def _restart_direction(self, i: int) -> list[Outgoing]:
        return [self._share(i, self.partners[i])]

    def _opening(self, i: int) -> list[Outgoing]:
        return [self._share(i, self.partners[i])]

    def _round_state(self) -> dict[str, object]:
        return {"own_share": list(self._own_share), "peer_share": list(self._peer_share)}

    def _restore_round_state(self, state: Mapping[str, Any]) -> None:
        self._own_share = [int(x) for x in state["own_share"]]
        self._peer_share = [int(x) for x in state["peer_share"]]
        if {len(self._own_share), len(self._peer_share)} != {len(self.partners)}:
            raise ValueError("the exchange's checkpoint is of another set of partners")
