"""Paillier mode: every price update is a two-party computation under the key owner's key.

Direction n→m in round k (owner n computes its own new price λ_nm = A_nm + B_mn; protocol.md
§4.1–§4.3):

1. ``share_own``   n → m: ``c_A = E_n(A_nm)``, sent by n at the start of the round;
2. ``share_peer``  m → n: ``c_B = E_n(B_mn)``, sent by m *only after* receiving c_A (no
   rushing: n cannot decrypt c_B first and then choose A to hit a price);
3. both run the smart contract ``c = c_A · c_B mod N²`` (:mod:`privgrid.contract`); c never
   travels;
4. ``price_proof`` n → m, sealed: ``x = Dec(c)`` and the Damgård–Jurik–Nielsen proof that
   ``Dec(c) = x``, Fiat–Shamir bound to (run, k, owner, peer, "price"); m recomputes c and
   verifies. Any failed check is a :class:`~privgrid.privacy.exchange.Violation`.

The plaintext is the integer sum of the two fixed-point shares, exactly what plain mode adds,
so both modes give the same prices bit for bit.

Keys: each process makes a Paillier key pair at start (``privacy.key_bits``, 2048 by default;
1024 only with ``privacy.insecure_test_keys``) and announces N with the key-validity proof
(gcd(N, φ(N)) = 1) in its signed, retained announcement. A peer's key is accepted only after
every check of protocol.md §2 (:func:`privgrid.crypto.keyproof.check_announced_key`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from privgrid.contract import pair_contract
from privgrid.crypto import paillier as pl
from privgrid.crypto.codec import decode_residue, to_residue
from privgrid.crypto.errors import CryptoError
from privgrid.crypto.framing import int_to_fixed
from privgrid.crypto.keyproof import check_announced_key, key_proof_to_bytes, make_key_proof
from privgrid.crypto.packing import decrypt_packed, encrypt_packed
from privgrid.crypto.zkp import DecryptionProof, ProofContext, prove_decryption, verify_decryption
from privgrid.market.fixedpoint import decode, encode, encode_scalar
from privgrid.privacy.exchange import CryptoCounters, PriceExchange, Violation
from privgrid.privacy.lmleg import DirectLeg
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected


class PaillierKeys:
    """This process's key pair and the peers' accepted public keys."""

    def __init__(self, me: str, run: str, bits: int, min_bits: int) -> None:
        self.me = me
        self.run = run
        self.min_bits = min_bits
        self.keypair = pl.generate_keypair(bits)
        self.peers: dict[str, pl.PublicKey] = {}

    def announcement(self) -> dict[str, Any]:
        proof = make_key_proof(self.keypair, self.run, self.me)
        return {
            "paillier_n": pl.public_key_to_bytes(self.keypair.public_key),
            "paillier_bits": self.keypair.bits,
            "key_proof": key_proof_to_bytes(self.keypair.n, proof),
        }

    def accept(self, sender: str, body: Mapping[str, Any]) -> None:
        """Checks 2–4 of protocol.md §2 (check 1, the signature and run, is the channel's)."""
        if "paillier_n" not in body or "key_proof" not in body or "paillier_bits" not in body:
            raise Rejected("key announcement without a Paillier key", sender)
        try:
            key = check_announced_key(
                body["paillier_n"],
                body["paillier_bits"],
                self.min_bits,
                self.run,
                sender,
                body["key_proof"],
            )
        except CryptoError as exc:
            raise Rejected(f"Paillier key refused: {exc.reason}", sender) from None
        self.peers[sender] = key

    def public(self, participant: str) -> pl.PublicKey:
        if participant == self.me:
            return self.keypair.public_key
        key = self.peers.get(participant)
        if key is None:
            raise Rejected(f"no accepted Paillier key of {participant}", participant)
        return key


class PaillierExchange(PriceExchange):
    kinds = frozenset({"share_own", "share_peer", "price_proof"})

    def __init__(
        self,
        me: str,
        partners: Sequence[str],
        keys: PaillierKeys,
        *,
        lie: float = 0.0,
        lie_from_round: int = 0,
    ) -> None:
        super().__init__(me, partners)
        self.keys = keys
        self.lie = encode_scalar(lie) if lie else 0
        self.lie_from_round = lie_from_round
        self.counters.counts.update(proofs_made=0, proofs_verified=0, proofs_failed=0)

    # -- helpers --------------------------------------------------------------------------------
    def _timed(self, phase: str, started: float) -> None:
        self.counters.add_time(phase, time.perf_counter() - started)

    def _direction(self, message: Message, owner: str, peer: str) -> int:
        i = self.partner_index(message)
        if message.body["pair"] != [owner, peer]:
            raise Violation(
                message.sender,
                f"{message.kind} names pair {message.body['pair']}, expected [{owner}, {peer}]",
                [message.raw],
            )
        return i

    def _context(self, owner: str, peer: str) -> ProofContext:
        return ProofContext(self.keys.run, self.round, owner, peer, "price")

    # -- the protocol ---------------------------------------------------------------------------
    def begin(self, round_: int, own: np.ndarray, peer: np.ndarray) -> list[Outgoing]:
        self._reset(round_)
        self._peer_share = [int(x) for x in peer]
        self._c_own: dict[int, int] = {}  # c_A of our directions
        self._c_theirs: dict[int, tuple[int, int, bytes]] = {}  # (c_A, c_B, raw share_own)
        started = time.perf_counter()
        me, key = self.me, self.keys.keypair.public_key
        out = []
        for i, m in self.active():
            c_a = self.keys.keypair.encrypt_int(int(own[i]))  # owner-side CRT encryption
            self._c_own[i] = c_a
            out.append(
                Outgoing(
                    "share_own", m, round_, {"pair": [me, m], "c": pl.ciphertext_to_bytes(key, c_a)}
                )
            )
        self._timed("encrypt", started)
        return out

    def handle(self, message: Message) -> list[Outgoing]:
        if message.kind == "share_own":
            return self._answer(message)
        if message.kind == "share_peer":
            return self._decrypt_and_prove(message)
        return self._verify(message)

    def _answer(self, message: Message) -> list[Outgoing]:
        """Peer step: the owner committed to c_A; now send c_B = E_owner(B)."""
        owner = message.sender
        i = self._direction(message, owner, self.me)
        if i in self._c_theirs:
            raise Rejected(f"second share_own from {owner} in round {self.round}", owner)
        key = self.keys.public(owner)
        try:
            c_a = pl.ciphertext_from_bytes(key, message.body["c"], "c_A")
        except CryptoError as exc:
            raise Violation(owner, exc.reason, [message.raw]) from None
        started = time.perf_counter()
        c_b = pl.encrypt_int(key, self._peer_share[i])
        self._timed("encrypt", started)
        self._c_theirs[i] = (c_a, c_b, message.raw)
        body = {"pair": [owner, self.me], "c": pl.ciphertext_to_bytes(key, c_b)}
        return [Outgoing("share_peer", owner, self.round, body)]

    def _decrypt_and_prove(self, message: Message) -> list[Outgoing]:
        """Owner step: run the contract, decrypt with CRT, prove, send x and the proof sealed."""
        peer = message.sender
        i = self._direction(message, self.me, peer)
        if self._own[i] is not None:
            raise Rejected(f"second share_peer from {peer} in round {self.round}", peer)
        keypair = self.keys.keypair
        try:
            c_b = pl.ciphertext_from_bytes(keypair.public_key, message.body["c"], "c_B")
            c = pair_contract(keypair.public_key, self._c_own[i], c_b)
        except CryptoError as exc:
            raise Violation(peer, exc.reason, [message.raw]) from None
        started = time.perf_counter()
        x, proof = prove_decryption(keypair, c, self._context(self.me, peer))
        self._timed("decrypt_prove", started)
        self.counters.count("proofs_made")
        self._own[i] = decode_residue(x, keypair.n)
        if self.lie and self.round >= self.lie_from_round:  # behaviour "lying-decryptor"
            x = to_residue(self._own[i] + self.lie, keypair.n)
        size = pl.modulus_length(keypair.public_key)
        body = {
            "pair": [self.me, peer],
            "x": int_to_fixed(x, size),
            "a": int_to_fixed(proof.a, 2 * size),
            "z": int_to_fixed(proof.z, size),
        }
        return [Outgoing("price_proof", peer, self.round, body)]

    def _verify(self, message: Message) -> list[Outgoing]:
        """Peer step: recompute c, check the decryption proof, record the owner's price."""
        owner = message.sender
        i = self._direction(message, owner, self.me)
        if i not in self._c_theirs:
            raise Violation(owner, "price_proof before the shares were exchanged", [message.raw])
        if self._peer[i] is not None or i in self._failed:
            raise Rejected(f"second price_proof from {owner} in round {self.round}", owner)
        c_a, c_b, share_own = self._c_theirs[i]
        key = self.keys.public(owner)
        started = time.perf_counter()
        try:
            c = pair_contract(key, c_a, c_b)
            proof = DecryptionProof(
                int.from_bytes(message.body["a"], "big"), int.from_bytes(message.body["z"], "big")
            )
            x = int.from_bytes(message.body["x"], "big")
            value = verify_decryption(key, c, x, proof, self._context(owner, self.me))
        except CryptoError as exc:
            self.counters.count("proofs_failed")
            self.fail(i)
            raise Violation(
                owner, f"decryption proof refused: {exc.reason}", [share_own, message.raw]
            ) from None
        finally:
            self._timed("verify", started)
        self.counters.count("proofs_verified")
        self._peer[i] = value
        return []


class PaillierLeg(DirectLeg):
    """Trades packed under the LM's key; charges packed under each agent's key (§6.2)."""

    agent_kind = "trades_enc"
    charges_kind = "charges_enc"

    def __init__(self, keys: PaillierKeys, counters: CryptoCounters) -> None:
        super().__init__()
        self.keys = keys
        self.counters = counters

    def _encrypt(self, recipient: str, values: np.ndarray) -> list[bytes]:
        started = time.perf_counter()
        key = self.keys.public(recipient)
        cts = encrypt_packed(key, [int(x) for x in encode(values)])
        self.counters.add_time("lm_leg", time.perf_counter() - started)
        return [pl.ciphertext_to_bytes(key, c) for c in cts]

    def _decrypt(self, message: Message, count: int) -> np.ndarray:
        started = time.perf_counter()
        keypair = self.keys.keypair
        try:
            cts = [pl.ciphertext_from_bytes(keypair.public_key, b) for b in message.body["c"]]
            values = decrypt_packed(keypair, cts, count)
        except CryptoError as exc:
            raise Violation(message.sender, exc.reason, [message.raw]) from None
        finally:
            self.counters.add_time("lm_leg", time.perf_counter() - started)
        return decode(np.array(values, dtype=np.int64))

    def agent_message(self, round_: int, trades: np.ndarray, extrapolated: np.ndarray) -> Outgoing:
        from privgrid.scenario import LM_ID

        return Outgoing(self.agent_kind, LM_ID, round_, {"c": self._encrypt(LM_ID, trades)})

    def agent_charges(self, message: Message, count: int) -> np.ndarray:
        return self._decrypt(message, count)

    def _read(self, message: Message, count: int) -> object:
        return self._decrypt(message, count)

    def charges_out(self, round_: int, agent: str, charges: np.ndarray) -> Outgoing:
        return Outgoing(self.charges_kind, agent, round_, {"c": self._encrypt(agent, charges)})
