"""Paillier keys of one process: its own key pair, and the peers' keys it has accepted.

Each process makes a key pair at start (``privacy.key_bits``, 2048 by default; 1024 only with
``privacy.insecure_test_keys``) and announces N with the key-validity proof (gcd(N, φ(N)) = 1)
in its signed, retained announcement. A peer's key is accepted only after every check of
protocol.md §2 (:func:`privgrid.crypto.keyproof.check_announced_key`). Apart from the price
exchange and the LM leg because both use the same keys, and a restart replaces them.
"""

from __future__ import annotations

from dataclasses import replace

from privgrid.crypto import paillier as pl
from privgrid.crypto.errors import CryptoError
from privgrid.crypto.keyproof import check_announced_key, key_proof_to_bytes, make_key_proof
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import KeyAnnouncement


class PaillierKeys:
    """This process's key pair and the peers' accepted public keys."""

    def __init__(self, me: str, run: str, bits: int, min_bits: int) -> None:
        self.me = me
        self.run = run
        self.min_bits = min_bits
        self.keypair = pl.generate_keypair(bits)
        self.peers: dict[str, pl.PublicKey] = {}

    def announcement(self, base: KeyAnnouncement) -> KeyAnnouncement:
        """``base`` with this process's Paillier key: N, its size and the key proof."""
        proof = make_key_proof(self.keypair, self.run, self.me)
        return replace(
            base,
            paillier_n=pl.public_key_to_bytes(self.keypair.public_key),
            paillier_bits=self.keypair.bits,
            key_proof=tuple(key_proof_to_bytes(self.keypair.n, proof)),
        )

    def accept(self, sender: str, body: KeyAnnouncement) -> None:
        """Checks 2–4 of protocol.md §2 (check 1, the signature and run, is the channel's).

        Raises:
            Rejected: the announcement has no Paillier key, or the key fails a check.
        """
        n, bits, key_proof = body.paillier_n, body.paillier_bits, body.key_proof
        if n is None or bits is None or key_proof is None:
            raise Rejected("key announcement without a Paillier key", sender)
        try:
            key = check_announced_key(n, bits, self.min_bits, self.run, sender, key_proof)
        except CryptoError as exc:
            raise Rejected(f"Paillier key refused: {exc.reason}", sender) from None
        self.peers[sender] = key

    def public(self, participant: str) -> pl.PublicKey:
        """``participant``'s public key (ours too).

        Raises:
            Rejected: no key of ``participant`` has been accepted.
        """
        if participant == self.me:
            return self.keypair.public_key
        key = self.peers.get(participant)
        if key is None:
            raise Rejected(f"no accepted Paillier key of {participant}", participant)
        return key
