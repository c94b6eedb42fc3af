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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privgrid.contract import pair_contract
from privgrid.crypto import paillier as pl
from privgrid.crypto.codec import decode_residue, to_residue
from privgrid.crypto.errors import CryptoError, PlaintextError
from privgrid.crypto.framing import int_to_fixed
from privgrid.crypto.keyproof import check_announced_key, key_proof_to_bytes, make_key_proof
from privgrid.crypto.packing import decrypt_packed, encrypt_packed
from privgrid.crypto.zkp import (
    DecryptionBatch,
    DecryptionProof,
    ProofContext,
    check_decryption,
    prove_decryption,
    verify_decryption,
)
from privgrid.market.fixedpoint import decode, encode, encode_scalar
from privgrid.privacy.exchange import CryptoCounters, PriceExchange, Violation
from privgrid.privacy.lmleg import DirectLeg
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected

#: Prices are int64 fixed point (:mod:`privgrid.market.fixedpoint`): a decryption beyond that
#: is refused as a violation (a tighter bound than the proof's 2^128, protocol.md §5.4).
FIXED_LIMIT = 1 << 63


def _in_fixed_range(value: int) -> int:
    """``value`` if it fits int64 fixed point; else a :class:`PlaintextError` (a violation)."""
    if abs(value) >= FIXED_LIMIT:
        raise PlaintextError(
            f"decrypted value beyond the 64-bit fixed-point range ({value.bit_length()} bits)"
        )
    return value


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


#: Values of ``privacy.verify``: every proof on arrival (the default), or batched per owner.
VERIFY_MODES = ("every_round", "batch")
#: Pools: the longest the fill at the start of round 1 may hold the event loop (partners'
#: pools need their keys, so they cannot be filled before the session in a one-session run).
START_FILL_BUDGET_S = 2.0
#: Batch verification: proofs folded into an owner's batch per idle call. At 2048 bits one
#: proof costs ~0.08 of a powmod floor, so a chunk keeps an idle call near one exponentiation.
ABSORB_CHUNK = 8
#: Batch verification: an owner's batch is closed (one full exponentiation) in idle time once
#: it holds this many proofs; whatever is left is closed before the final report.
BATCH_CLOSE = 32
#: Batch verification: an owner's batch holding this many proofs is closed at once, idle or
#: not. An agent with many partners is rarely idle for a tick, and each pending proof keeps
#: its ciphertexts and signed messages (≈ 3 KB at 1024 bits): without a bound they piled up
#: for the whole session (measured: +85 KB per round in a process of 5 sellers, ieee118-100).
BATCH_LIMIT = 4 * BATCH_CLOSE


@dataclass(frozen=True)
class DeferredProof:
    """What a batch needs to report a proof that fails: its round and its signed evidence."""

    round: int
    owner: str
    evidence: tuple[bytes, ...]


class DeferredViolation(Violation):
    """A violation found after its round (batch verification): carries the round it names."""

    def __init__(self, offender: str, reason: str, evidence: Sequence[bytes], round_: int) -> None:
        super().__init__(offender, reason, evidence)
        self.round = round_


@dataclass(frozen=True)
class Prepared:
    """A worker thread's result for one message (:meth:`PaillierExchange.precompute`): the
    inputs it was computed from, what came out (``(x, proof)`` of a decryption proof; the
    verified fixed-point price or the :class:`CryptoError` of a check) and its time."""

    inputs: tuple[Any, ...]
    result: Any
    seconds: float


class PaillierExchange(PriceExchange):
    """The two-party price computation of every pair, with pools and optional batch checks.

    Precomputation (``pool_rounds`` > 0; protocol.md §10, docs/performance.md):
    - **own pool** (CRT, this agent's key): one entry per own direction for ``c_A`` and one
      for the proof commitment ``a``, i.e. 2 per partner per round. Filled to
      ``pool_rounds`` rounds' worth in the constructor, which runs before the process
      connects and announces its key, so the whole fill is *offline* (phase ``offline``);
    - **partner pools** (each partner's public key, full powmod): one entry per round for
      ``c_B``. They can be filled only once the partner's key is accepted: in idle time
      before round 1, and what is still missing when round 1 begins is filled right then,
      before the first share is sent, for at most ``START_FILL_BUDGET_S`` (phase
      ``offline_start``);
    - during the session :meth:`idle` tops the pools up, one entry per call (``topup``).
      The depth never exceeds the rounds that can still run (``market.max_rounds``), so
      ``pool_rounds ≥ max_rounds`` precomputes the whole session and never tops up.
    An empty pool is not an error: the entry is computed on the spot (``pool_misses``).

    Concurrency (``privacy.crypto_threads``): :meth:`precompute` hands out the two heavy
    steps, decrypt + prove (``share_peer``) and a proof's check (``price_proof``), as jobs
    the process runs on worker threads while it goes on with other messages; the steps read
    only what earlier messages settled and write nothing but their result, keyed by the
    message's signed bytes. :meth:`handle` then takes that result if it was computed from
    the very inputs it would use (else it computes inline), so every check happens as
    without threads.

    Verification (``verify``): ``every_round`` checks each proof when it arrives (~1.14
    floor). ``batch`` runs only the cheap checks on arrival (ranges, units, the 2^128 range,
    the Fiat–Shamir hash), takes x optimistically, and verifies each owner's proofs together
    (:class:`~privgrid.crypto.zkp.DecryptionBatch`): in idle time, at once when an owner has
    ``batch_limit`` proofs pending (memory), and all that is left in
    :meth:`settle`, which the agent calls before its final report. A failed batch names the
    offending round(s) and yields a :class:`DeferredViolation` with that round's signed
    messages, as a per-round failure would.
    """

    kinds = frozenset({"share_own", "share_peer", "price_proof"})
    #: Batch mode: most pending proofs per owner (:data:`BATCH_LIMIT`).
    batch_limit = BATCH_LIMIT

    def __init__(
        self,
        me: str,
        partners: Sequence[str],
        keys: PaillierKeys,
        *,
        lie: float = 0.0,
        lie_from_round: int = 0,
        pool_rounds: int = 0,
        verify: str = "every_round",
        max_rounds: int | None = None,
        counters: CryptoCounters | None = None,
    ) -> None:
        super().__init__(me, partners)
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        if pool_rounds < 0:
            raise ValueError("pool_rounds must be ≥ 0")
        if counters is not None:
            self.counters = counters
        self.keys = keys
        self.lie = encode_scalar(lie) if lie else 0
        self.lie_from_round = lie_from_round
        self.pool_rounds = pool_rounds
        self.max_rounds = max_rounds
        self.verify = verify
        self.counters.counts.update(proofs_made=0, proofs_verified=0, proofs_failed=0)
        self.own_pool = pl.ObfuscatorPool(keys.keypair)
        self.partner_pools: dict[str, pl.ObfuscatorPool] = {}
        self._batches: dict[str, DecryptionBatch[DeferredProof]] = {}
        self._found: list[DeferredViolation] = []
        self._reported: set[str] = set()  # owners a deferred violation was raised against
        self._prepared: dict[bytes, Prepared] = {}  # worker results by message bytes
        self._started = False
        if pool_rounds:
            self._set_targets()
            self.counters.add_time("offline", self.own_pool.fill_to_target())

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

    def _contract_of(self, message: Message, i: int) -> int:
        """Owner side: the contract's c for direction ``i`` from the peer's ``share_peer``."""
        public = self.keys.keypair.public_key
        c_b = pl.ciphertext_from_bytes(public, message.body["c"], "c_B")
        return pair_contract(public, self._c_own[i], c_b)

    def _claim_of(self, message: Message, i: int) -> tuple[int, int, DecryptionProof, ProofContext]:
        """Peer side: (c, x, proof, context) of the owner's ``price_proof`` for direction ``i``."""
        owner = message.sender
        c_a, c_b, _ = self._c_theirs[i]
        c = pair_contract(self.keys.public(owner), c_a, c_b)
        body = message.body
        proof = DecryptionProof(int.from_bytes(body["a"], "big"), int.from_bytes(body["z"], "big"))
        return c, int.from_bytes(body["x"], "big"), proof, self._context(owner, self.me)

    # -- work on threads (privacy.crypto_threads) ------------------------------------------------
    def precompute(self, message: Message) -> Callable[[], None] | None:
        try:
            if message.kind == "share_peer":
                return self._prepare_proof(message)
            if message.kind == "price_proof" and self.verify == "every_round":
                return self._prepare_check(message)
        except (Rejected, CryptoError, LookupError, TypeError, ValueError):
            pass  # not a message to work on ahead: handle() checks it and says why
        return None

    def _prepare_proof(self, message: Message) -> Callable[[], None] | None:
        i = self._direction(message, self.me, message.sender)
        if self._own[i] is not None:
            return None
        c, context = self._contract_of(message, i), self._context(self.me, message.sender)
        keypair, raw = self.keys.keypair, message.raw
        pool = self.own_pool  # taken here, on the event loop: pools are not thread-safe
        commitment = pool.take() if len(pool) else None

        def job() -> None:
            started = time.perf_counter()
            result = prove_decryption(keypair, c, context, commitment)
            self._prepared[raw] = Prepared((c, context), result, time.perf_counter() - started)

        return job

    def _prepare_check(self, message: Message) -> Callable[[], None] | None:
        i = self._direction(message, message.sender, self.me)
        if i not in self._c_theirs or self._peer[i] is not None:
            return None
        c, x, proof, context = self._claim_of(message, i)
        key, raw = self.keys.public(message.sender), message.raw

        def job() -> None:
            started = time.perf_counter()
            result: int | CryptoError
            try:
                result = verify_decryption(key, c, x, proof, context)
            except CryptoError as exc:
                result = exc
            inputs = (key.n, c, x, proof, context)
            self._prepared[raw] = Prepared(inputs, result, time.perf_counter() - started)

        return job

    def _take_prepared(self, message: Message, inputs: tuple[Any, ...]) -> Prepared | None:
        """The worker's result for ``message`` if it was computed from ``inputs``."""
        prepared = self._prepared.pop(message.raw, None)
        if prepared is None or prepared.inputs != inputs:
            return None
        self.counters.count("worker_jobs")
        return prepared

    def _checked(
        self,
        message: Message,
        key: pl.PublicKey,
        c: int,
        x: int,
        proof: DecryptionProof,
        context: ProofContext,
    ) -> int:
        """``verify_decryption``, or the worker's verdict on the same inputs."""
        prepared = self._take_prepared(message, (key.n, c, x, proof, context))
        if prepared is None:
            return verify_decryption(key, c, x, proof, context)
        self.counters.add_time("verify", prepared.seconds)
        if isinstance(prepared.result, CryptoError):
            raise prepared.result
        return int(prepared.result)

    # -- pools ----------------------------------------------------------------------------------
    def _depth(self) -> int:
        """Rounds of entries to hold: ``pool_rounds``, but never more than can still run."""
        if self.max_rounds is None:
            return self.pool_rounds
        return max(0, min(self.pool_rounds, self.max_rounds - self.round + 1))

    def _partner_pool(self, partner: str) -> pl.ObfuscatorPool:
        """The pool of ``partner``'s key (made when first needed; the key must be accepted)."""
        pool = self.partner_pools.get(partner)
        if pool is None:
            pool = self.partner_pools[partner] = pl.ObfuscatorPool(self.keys.public(partner))
        return pool

    def _set_targets(self) -> list[pl.ObfuscatorPool]:
        """Set every pool's target depth; return the pools that can be filled now."""
        depth = self._depth() if self.pool_rounds else 0
        active = [m for _, m in self.active()]
        self.own_pool.target = 2 * len(active) * depth
        pools = [self.own_pool]
        for m in self.partners:
            if m not in self.partner_pools and m not in self.keys.peers:
                continue  # its key is not in yet
            pool = self._partner_pool(m)
            pool.target = depth if m in active else 0
            pools.append(pool)
        return pools

    def _fill_at_start(self) -> float:
        """Fill the pools round-robin for at most ``START_FILL_BUDGET_S``; return the time.

        Bounded because it runs in the event loop: a client that computes for 1.5 keepalives
        without serving its connection is dropped by the broker (measured: an unbounded
        200-round fill at 2048 bits, 7 s of CPU per agent, did that on a loaded machine).
        Whatever is left is topped up in idle time or made on demand (a pool miss).
        """
        pools = self._set_targets()
        deadline = time.perf_counter() + START_FILL_BUDGET_S
        spent = 0.0
        while time.perf_counter() < deadline:
            needy = [pool for pool in pools if pool.deficit]
            if not needy:
                break
            for pool in needy:
                spent += pool.fill(1)
        return spent

    def idle(self, now: float) -> bool:
        """Spare time: one pool entry, or one chunk of batch verification. True if it worked.

        Pools come first (their entries are needed in the next rounds; verification can wait
        until the final report).
        """
        if self.pool_rounds:
            pools = [p for p in self._set_targets() if p.target]
            if pools:
                pool = max(pools, key=lambda p: p.deficit / p.target)
                started = time.perf_counter()
                if pool.fill_one():
                    self._timed("topup" if self._started else "offline_start", started)
                    return True
        if self.verify == "batch":
            for batch in self._batches.values():
                if batch.queued:
                    started = time.perf_counter()
                    batch.absorb(ABSORB_CHUNK)
                    self._timed("batch_verify", started)
                    return True
            for owner, batch in self._batches.items():
                if batch.absorbed >= BATCH_CLOSE:
                    self._close(owner)
                    return True
        return False

    # -- batch verification ---------------------------------------------------------------------
    def _close(self, owner: str) -> None:
        """Verify ``owner``'s pending proofs; a failure becomes a :class:`DeferredViolation`."""
        batch = self._batches[owner]
        verified, failed = batch.verified, batch.failed
        started = time.perf_counter()
        bad = batch.close()
        self._timed("batch_verify", started)
        self.counters.count("proofs_verified", batch.verified - verified)
        self.counters.count("proofs_failed", batch.failed - failed)
        if not bad or owner in self._reported:
            return
        self._reported.add(owner)
        first = min(bad, key=lambda d: d.round)
        rounds = sorted({d.round for d in bad})
        listed = ", ".join(map(str, rounds[:10])) + (", …" if len(rounds) > 10 else "")
        reason = (
            "decryption proof refused: verification equation z^N ≡ a·u^e (mod N²) fails "
            f"(batch verification; {len(bad)} proof(s) of {owner} fail, in round(s) {listed})"
        )
        self._found.append(DeferredViolation(owner, reason, first.evidence, first.round))

    def settle(self) -> list[Violation]:
        """Verify every pending proof now (before the final report); return what failed.

        Also returns deferred violations found in idle time and not yet collected.
        """
        for owner in list(self._batches):
            if len(self._batches[owner]):
                self._close(owner)
        return self.drain_violations()

    def drain_violations(self) -> list[Violation]:
        """Deferred violations found since the last call (to be reported to the MO)."""
        found, self._found = self._found, []
        return list(found)

    def drop(self, partners: Iterable[str]) -> None:
        """The MO removed these pairs: their pools and unverified proofs are of no more use."""
        super().drop(partners)
        for m in self.dropped:
            self._batches.pop(m, None)
            pool = self.partner_pools.get(m)
            if pool is not None:
                pool.target = 0

    def stats(self) -> dict[str, float]:
        pools = [self.own_pool, *self.partner_pools.values()]
        return {
            **super().stats(),
            "pool_made": float(sum(p.made for p in pools)),
            "pool_misses": float(sum(p.misses for p in pools)),
            "pool_left": float(sum(len(p) for p in pools)),
        }

    # -- restarts (docs/reliability.md) ----------------------------------------------------------
    def rekeyed(self) -> None:
        """Our key pair was replaced (restored from a checkpoint): pooled entries are void."""
        self.own_pool = pl.ObfuscatorPool(self.keys.keypair)
        if self.pool_rounds:
            self._set_targets()

    def _restart_direction(self, i: int) -> list[Outgoing]:
        """Partner ``i`` restarted: forget its part (its key may be new), resend our c_A.

        Our c_A is sent again byte for byte — it commits to the same share — so only the
        partner's side is computed afresh.
        """
        m = self.partners[i]
        self._c_theirs.pop(i, None)
        if m in self._batches:  # proofs under its previous key: settle them under that key
            if len(self._batches[m]):
                self._close(m)
            del self._batches[m]
        self.partner_pools.pop(m, None)
        if i not in self._c_own:
            return []
        body = {
            "pair": [self.me, m],
            "c": pl.ciphertext_to_bytes(self.keys.keypair.public_key, self._c_own[i]),
        }
        return [Outgoing("share_own", m, self.round, body)]

    # -- the protocol ---------------------------------------------------------------------------
    def begin(self, round_: int, own: np.ndarray, peer: np.ndarray) -> list[Outgoing]:
        self._reset(round_)
        self._prepared.clear()  # results for last round's messages are of no more use
        if not self._started:
            self._started = True
            if self.pool_rounds:  # the end of the offline phase: top the pools up first
                self.counters.add_time("offline_start", self._fill_at_start())
        self._peer_share = [int(x) for x in peer]
        self._c_own: dict[int, int] = {}  # c_A of our directions
        self._c_theirs: dict[int, tuple[int, int, bytes]] = {}  # (c_A, c_B, raw share_own)
        started = time.perf_counter()
        me, key = self.me, self.keys.keypair.public_key
        out = []
        for i, m in self.active():
            c_a = self.keys.keypair.encrypt_int(int(own[i]), self.own_pool.take_rn())
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
        c_b = pl.encrypt_int(key, self._peer_share[i], self._partner_pool(owner).take_rn())
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
            c = self._contract_of(message, i)
        except CryptoError as exc:
            raise Violation(peer, exc.reason, [message.raw]) from None
        context = self._context(self.me, peer)
        prepared = self._take_prepared(message, (c, context))
        if prepared is None:
            started = time.perf_counter()
            x, proof = prove_decryption(keypair, c, context, self.own_pool.take())
            self._timed("decrypt_prove", started)
        else:
            x, proof = prepared.result
            self.counters.add_time("decrypt_prove", prepared.seconds)
        self.counters.count("proofs_made")
        try:  # X = A + B: our A is in range, so a sum beyond int64 is the peer's B
            self._set_own(i, _in_fixed_range(decode_residue(x, keypair.n)))
        except CryptoError as exc:
            raise Violation(peer, exc.reason, [message.raw]) from None
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
        """Peer step: recompute c, check the decryption proof, record the owner's price.

        With ``verify = "batch"`` only the cheap checks run here; the equation waits in the
        owner's batch and x is used optimistically until then.
        """
        owner = message.sender
        i = self._direction(message, owner, self.me)
        if i not in self._c_theirs:
            raise Violation(owner, "price_proof before the shares were exchanged", [message.raw])
        if self._peer[i] is not None or i in self._failed:
            raise Rejected(f"second price_proof from {owner} in round {self.round}", owner)
        share_own = self._c_theirs[i][2]
        key = self.keys.public(owner)
        started = time.perf_counter()
        try:
            c, x, proof, context = self._claim_of(message, i)
            if self.verify == "batch":
                pending = check_decryption(key, c, x, proof, context)
                evidence = DeferredProof(self.round, owner, (share_own, message.raw))
                batch = self._batches.get(owner)
                if batch is None:
                    batch = self._batches[owner] = DecryptionBatch(key)
                batch.add(pending, evidence)
                value = pending.fixed
            else:
                value = self._checked(message, key, c, x, proof, context)
            _in_fixed_range(value)  # an honest proof of an absurd price is still refused
        except CryptoError as exc:
            self.counters.count("proofs_failed")
            self.fail(i)
            raise Violation(
                owner, f"decryption proof refused: {exc.reason}", [share_own, message.raw]
            ) from None
        finally:
            self._timed("verify", started)
        if self.verify != "batch":
            self.counters.count("proofs_verified")
        elif len(self._batches[owner]) >= self.batch_limit:
            self._close(owner)  # a failure is reported with the next idle work (tick)
        self._set_peer(i, value)
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
        from privgrid.scenario import LM_ID

        return Outgoing(self.agent_kind, LM_ID, round_, {"c": self._encrypt(LM_ID, trades)})

    def agent_charges(self, message: Message, count: int) -> np.ndarray:
        return self._decrypt(message, count)

    def _read(self, message: Message, count: int) -> object:
        return self._decrypt(message, count)

    def charges_out(self, round_: int, agent: str, charges: np.ndarray) -> Outgoing:
        return Outgoing(self.charges_kind, agent, round_, {"c": self._encrypt(agent, charges)})
