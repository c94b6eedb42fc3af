"""The lying decryptor (agent ``behaviour = "lying-decryptor"``): the honest Paillier exchange,
except that from round ``lie_from_round`` it reports every price it decrypts off by ``lie``.

The deviation is the claim only: the decryption and its proof are the honest ones, of the true
value, so the partner's check of the proof (protocol.md §4.3) refuses the false ``x`` — the
experiment shows that this is caught in the first lying round (docs/privacy.md). Its own price
is recorded truthfully, as a liar that keeps the true value would.

The agent process builds the agent's privacy mode as a :class:`LyingDecryptorMode` instead of
the honest Paillier mode when the scenario gives the agent this behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Unpack

from privgrid.crypto import paillier as pl
from privgrid.crypto.codec import to_residue
from privgrid.crypto.framing import int_to_fixed
from privgrid.logs import ParticipantLog
from privgrid.market.fixedpoint import encode_scalar
from privgrid.privacy import PaillierMode, PriceExchange
from privgrid.privacy.paillier.exchange import ExchangeOptions, PaillierExchange
from privgrid.privacy.paillier.keys import PaillierKeys
from privgrid.scenario import Scenario
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.kinds import PriceProof, SharePeer


class LyingDecryptor(PaillierExchange):
    """A :class:`PaillierExchange` whose price claims are off by ``lie`` from ``from_round``."""

    def __init__(
        self,
        me: str,
        partners: Sequence[str],
        keys: PaillierKeys,
        *,
        lie: float,
        from_round: int,
        **options: Unpack[ExchangeOptions],
    ) -> None:
        super().__init__(me, partners, keys, **options)
        self.lie = encode_scalar(lie)
        self.from_round = from_round

    def _decrypt_and_prove(self, message: Message, body: SharePeer) -> list[Outgoing]:
        outgoing = super()._decrypt_and_prove(message, body)
        if self.round < self.from_round:
            return outgoing
        own = self._own[self.index[message.sender]]
        assert own is not None  # the honest step recorded it
        keypair = self.keys.keypair
        false = to_residue(own + self.lie, keypair.n)
        size = pl.modulus_length(keypair.public_key)
        return [
            Outgoing(out.recipient, out.round, replace(out.body, x=int_to_fixed(false, size)))
            if isinstance(out.body, PriceProof)
            else out
            for out in outgoing
        ]


class LyingDecryptorMode(PaillierMode):
    """Paillier mode with a :class:`LyingDecryptor` as the price exchange."""

    def __init__(self, scenario: Scenario, me: str, run: str, log: ParticipantLog) -> None:
        super().__init__(scenario, me, run, log)
        agent = scenario.agent(me)
        self.lie, self.from_round = agent.lie, agent.lie_from_round

    def exchange(self, partners: Sequence[str]) -> PriceExchange:
        return LyingDecryptor(
            self.me,
            partners,
            self.keys,
            lie=self.lie,
            from_round=self.from_round,
            **self.exchange_options(),
        )
