"""The Paillier LM leg (``privacy.lm_leg = "paillier"``): trades and charges under keys.

Each agent sends its trades packed into Paillier ciphertexts under the LM's key; the LM
sends each agent its line charges packed under that agent's key (protocol.md §6.2). Only the
packing and the keys differ from the sealed leg, so this is a :class:`DirectLeg`. Apart from
the price exchange because it is another conversation (agent ↔ LM, not agent ↔ agent) that
only shares the keys.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from privgrid.crypto import paillier as pl
from privgrid.crypto.errors import CryptoError
from privgrid.crypto.packing import decrypt_packed, encrypt_packed
from privgrid.market.fixedpoint import decode, encode
from privgrid.privacy.exchange import CryptoCounters, Violation
from privgrid.privacy.lmleg import Contribution, DirectLeg
from privgrid.privacy.paillier.keys import PaillierKeys
from privgrid.scenario import LM_ID
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.kinds import ChargesEnc, Kind, TradesEnc


class PaillierLeg(DirectLeg):
    """Trades packed under the LM's key; charges packed under each agent's key (§6.2)."""

    agent_kind = Kind.TRADES_ENC
    charges_kind = Kind.CHARGES_ENC

    def __init__(self, keys: PaillierKeys, counters: CryptoCounters) -> None:
        super().__init__()
        self.keys = keys
        self.counters = counters

    def _encrypt(self, recipient: str, values: np.ndarray) -> tuple[bytes, ...]:
        started = time.perf_counter()
        key = self.keys.public(recipient)
        cts = encrypt_packed(key, [int(x) for x in encode(values)])
        self.counters.add_time("lm_leg", time.perf_counter() - started)
        return tuple(pl.ciphertext_to_bytes(key, c) for c in cts)

    def _decrypt(self, message: Message, packed: Sequence[bytes], count: int) -> np.ndarray:
        started = time.perf_counter()
        keypair = self.keys.keypair
        try:
            cts = [pl.ciphertext_from_bytes(keypair.public_key, b) for b in packed]
            values = np.array(decrypt_packed(keypair, cts, count), dtype=np.int64)
        except CryptoError as exc:
            raise Violation(message.sender, exc.reason, [message.raw]) from None
        except OverflowError:  # a slot holds up to 2^87; fixed point is 64-bit
            reason = "a packed value is beyond the 64-bit fixed-point range"
            raise Violation(message.sender, reason, [message.raw]) from None
        finally:
            self.counters.add_time("lm_leg", time.perf_counter() - started)
        return decode(values)

    def agent_message(self, round_: int, trades: np.ndarray, extrapolated: np.ndarray) -> Outgoing:
        return Outgoing(LM_ID, round_, TradesEnc(self._encrypt(LM_ID, trades)))

    def agent_charges(self, message: Message, count: int) -> np.ndarray:
        return self._decrypt(message, message.expect(ChargesEnc).c, count)

    def _read(self, message: Message, count: int) -> Contribution:
        return self._decrypt(message, message.expect(TradesEnc).c, count)

    def charges_out(self, round_: int, agent: str, charges: np.ndarray) -> Outgoing:
        return Outgoing(agent, round_, ChargesEnc(self._encrypt(agent, charges)))
