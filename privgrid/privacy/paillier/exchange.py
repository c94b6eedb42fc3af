"""The pair computation of Paillier mode: every price update is a two-party computation under
the key owner's key.

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

This module is the protocol only. What makes it fast lives beside it: precomputed obfuscators
(:mod:`.pools`), proofs checked together (:mod:`.batch`), heavy steps on worker threads
(:mod:`.workers`); the keys are :mod:`.keys`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from privgrid.contract import pair_contract
from privgrid.crypto import paillier as pl
from privgrid.crypto.codec import decode_residue
from privgrid.crypto.errors import CryptoError, PlaintextError
from privgrid.crypto.framing import int_to_fixed
from privgrid.crypto.zkp import DecryptionProof, ProofContext, check_decryption
from privgrid.privacy.exchange import CryptoCounters, PriceExchange, Violation
from privgrid.privacy.paillier.batch import BatchVerifier, DeferredProof
from privgrid.privacy.paillier.keys import PaillierKeys
from privgrid.privacy.paillier.pools import ExchangePools, KeyPools
from privgrid.privacy.paillier.workers import WorkerResults
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import Kind, PriceProof, ShareOwn, SharePeer

#: Prices are int64 fixed point (:mod:`privgrid.market.fixedpoint`): a decryption beyond that
#: is refused as a violation (a tighter bound than the proof's 2^128, protocol.md §5.4).
FIXED_LIMIT = 1 << 63

#: Values of ``privacy.verify``: every proof on arrival (the default), or batched per owner.
VERIFY_MODES = ("every_round", "batch")


class ExchangeOptions(TypedDict, total=False):
    """The keyword options of :class:`PaillierExchange` a scenario sets."""

    pool_rounds: int
    verify: str
    max_rounds: int | None
    counters: CryptoCounters | None
    store: KeyPools | None


def _in_fixed_range(value: int) -> int:
    """``value`` if it fits int64 fixed point; else a :class:`PlaintextError` (a violation)."""
    if abs(value) >= FIXED_LIMIT:
        raise PlaintextError(
            f"decrypted value beyond the 64-bit fixed-point range ({value.bit_length()} bits)"
        )
    return value


class PaillierExchange(PriceExchange):
    """The two-party price computation of every pair, with pools and optional batch checks.

    Precomputation (``pool_rounds`` > 0): :class:`~.pools.ExchangePools`. The own pool is
    filled in the constructor, which runs before the process connects and announces its key
    (phase ``offline``); partner pools when round 1 begins (``offline_start``); both are
    topped up in :meth:`idle` (``topup``). Each fill makes only what the pools lack: with the
    day's ``store`` they may hold entries already (left over, or made between intervals).

    Concurrency (``privacy.crypto_threads``): :meth:`precompute` hands out the two heavy
    steps, decrypt + prove (``share_peer``) and a proof's check (``price_proof``), as jobs
    the process runs on worker threads; :meth:`handle` uses a job's result only if it was
    computed from the very inputs it would use (:class:`~.workers.WorkerResults`).

    Verification (``verify``): ``every_round`` checks each proof when it arrives (~1.14
    floor). ``batch`` runs only the cheap checks on arrival and takes x optimistically; the
    proofs of each owner are verified together (:class:`~.batch.BatchVerifier`): in idle
    time, at once when an owner has ``batches.limit`` proofs pending (memory), and all that
    is left in :meth:`settle`, which the agent calls before its final report.
    """

    kinds = frozenset({Kind.SHARE_OWN, Kind.SHARE_PEER, Kind.PRICE_PROOF})

    def __init__(
        self,
        me: str,
        partners: Sequence[str],
        keys: PaillierKeys,
        *,
        pool_rounds: int = 0,
        verify: str = "every_round",
        max_rounds: int | None = None,
        counters: CryptoCounters | None = None,
        store: KeyPools | None = None,
    ) -> None:
        super().__init__(me, partners)
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        if pool_rounds < 0:
            raise ValueError("pool_rounds must be ≥ 0")
        if counters is not None:
            self.counters = counters
        self.keys = keys
        self.verify = verify
        for name in ("proofs_made", "proofs_verified", "proofs_failed"):  # running totals when
            self.counters.counts.setdefault(name, 0)  # shared: a day's exchanges add them up
        self.pools = ExchangePools(keys, self.partners, pool_rounds, max_rounds, store)
        self.batches = BatchVerifier(self.counters)
        self.prepared = WorkerResults(self.counters)
        self._started = False
        #: Of the round in progress (or last completed): A_nm and B_nm of our directions (the
        #: checkpoint keeps them: :meth:`snapshot`), our c_A, and the partners' (c_A, c_B, raw
        #: share_own) for their directions.
        self._own_share: list[int | None] | None = None
        self._peer_share: list[int] = []
        self._c_own: dict[int, int] = {}
        self._c_theirs: dict[int, tuple[int, int, bytes]] = {}
        if pool_rounds:
            self.counters.add_time("offline", self.pools.fill_offline(self.round, self._active()))

    # -- helpers --------------------------------------------------------------------------------
    def _timed(self, phase: str, started: float) -> None:
        self.counters.add_time(phase, time.perf_counter() - started)

    def _active(self) -> list[str]:
        """The partners whose pairs are still in the market."""
        return [m for _, m in self.active()]

    def _direction(self, message: Message, pair: tuple[str, str], owner: str, peer: str) -> int:
        i = self.partner_index(message)
        if pair != (owner, peer):
            raise Violation(
                message.sender,
                f"{message.kind} names pair {list(pair)}, expected [{owner}, {peer}]",
                [message.raw],
            )
        return i

    def _context(self, owner: str, peer: str) -> ProofContext:
        return ProofContext(self.keys.run, self.round, owner, peer, "price")

    def _contract_of(self, body: SharePeer, i: int) -> int:
        """Owner side: the contract's c for direction ``i`` from the peer's ``share_peer``."""
        public = self.keys.keypair.public_key
        c_b = pl.ciphertext_from_bytes(public, body.c, "c_B")
        return pair_contract(public, self._c_own[i], c_b)

    def _claim_of(
        self, owner: str, body: PriceProof, i: int
    ) -> tuple[int, int, DecryptionProof, ProofContext]:
        """Peer side: (c, x, proof, context) of the owner's ``price_proof`` for direction ``i``."""
        c_a, c_b, _ = self._c_theirs[i]
        c = pair_contract(self.keys.public(owner), c_a, c_b)
        proof = DecryptionProof(int.from_bytes(body.a, "big"), int.from_bytes(body.z, "big"))
        return c, int.from_bytes(body.x, "big"), proof, self._context(owner, self.me)

    # -- work on threads (privacy.crypto_threads) ------------------------------------------------
    def precompute(self, message: Message) -> Callable[[], None] | None:
        try:
            match message.body:
                case SharePeer() as body:
                    return self._prepare_proof(message, body)
                case PriceProof() as body if self.verify == "every_round":
                    return self._prepare_check(message, body)
        except (Rejected, CryptoError, LookupError, TypeError, ValueError):
            pass  # not a message to work on ahead: handle() checks it and says why
        return None

    def _prepare_proof(self, message: Message, body: SharePeer) -> Callable[[], None] | None:
        i = self._direction(message, body.pair, self.me, message.sender)
        if self._own[i] is not None:
            return None
        c, context = self._contract_of(body, i), self._context(self.me, message.sender)
        return self.prepared.proof_job(message.raw, self.keys.keypair, c, context, self.pools.own)

    def _prepare_check(self, message: Message, body: PriceProof) -> Callable[[], None] | None:
        i = self._direction(message, body.pair, message.sender, self.me)
        if i not in self._c_theirs or self._peer[i] is not None:
            return None
        c, x, proof, context = self._claim_of(message.sender, body, i)
        key = self.keys.public(message.sender)
        return self.prepared.check_job(message.raw, key, c, x, proof, context)

    # -- deferred work ---------------------------------------------------------------------------
    def idle(self, now: float) -> bool:
        """Spare time: one pool entry, or one chunk of batch verification. True if it worked.

        Pools come first (their entries are needed in the next rounds; verification can wait
        until the final report).
        """
        seconds = self.pools.top_up(self.round, self._active())
        if seconds is not None:
            self.counters.add_time("topup" if self._started else "offline_start", seconds)
            return True
        return self.verify == "batch" and self.batches.work()

    def settle(self) -> list[Violation]:
        """Verify every pending proof now (before the final report); return what failed.

        Also returns deferred violations found in idle time and not yet collected.
        """
        self.batches.close_all()
        return self.drain_violations()

    def drain_violations(self) -> list[Violation]:
        """Deferred violations found since the last call (to be reported to the MO)."""
        return list(self.batches.drain())

    def drop(self, partners: Iterable[str]) -> None:
        """The MO removed these pairs: their pools and unverified proofs are of no more use."""
        super().drop(partners)
        for m in self.dropped:
            self.batches.forget(m)
            self.pools.retire(m)

    def stats(self) -> dict[str, float]:
        return {**super().stats(), **self.pools.stats()}

    # -- restarts (docs/reliability.md) ----------------------------------------------------------
    def rekeyed(self) -> None:
        """Our key pair was replaced (restored from a checkpoint): pooled entries are void."""
        self.pools.rekey(self.round, self._active())

    def _restart_direction(self, i: int) -> list[Outgoing]:
        """Partner ``i`` restarted: forget its part (its key may be new), resend our c_A.

        Our c_A is sent again byte for byte — it commits to the same share — so only the
        partner's side is computed afresh.
        """
        m = self.partners[i]
        self._c_theirs.pop(i, None)
        self.batches.close_and_forget(m)  # proofs under its previous key: settled under it
        self.pools.forget(m)
        return self._opening(i)

    def _opening(self, i: int) -> list[Outgoing]:
        """Our c_A to partner ``i``: byte for byte as sent, or — after our own restart, when
        the round was restored from the checkpoint (:meth:`restore`) — our share encrypted
        afresh under our present key (the partner redoing the round holds no earlier c_A)."""
        m = self.partners[i]
        key = self.keys.keypair.public_key
        if i not in self._c_own:
            own = None if self._own_share is None else self._own_share[i]
            if own is None:
                return []  # the round never began here
            started = time.perf_counter()
            self._c_own[i] = self.keys.keypair.encrypt_int(own, self.pools.own.take_rn())
            self._timed("encrypt", started)
        c_a = pl.ciphertext_to_bytes(key, self._c_own[i])
        return [Outgoing(m, self.round, ShareOwn((self.me, m), c_a))]

    def _round_state(self) -> dict[str, object]:
        own = self._own_share or [None] * len(self.partners)
        return {"own_share": list(own), "peer_share": list(self._peer_share)}

    def _restore_round_state(self, state: Mapping[str, Any]) -> None:
        self._own_share = [None if x is None else int(x) for x in state["own_share"]]
        self._peer_share = [int(x) for x in state["peer_share"]]
        if {len(self._own_share), len(self._peer_share)} != {len(self.partners)}:
            raise ValueError("the exchange's checkpoint is of another set of partners")
        self._c_own, self._c_theirs = {}, {}
        self.prepared.clear()

    # -- the protocol ---------------------------------------------------------------------------
    def begin(self, round_: int, own: np.ndarray, peer: np.ndarray) -> list[Outgoing]:
        self._reset(round_)
        self.prepared.clear()  # results for last round's messages are of no more use
        if not self._started:
            self._started = True
            self.pools.opening = round_ - 1  # a day's interval opens after the last one's
            if self.pools.rounds:  # the end of the offline phase: top the pools up first
                filled = self.pools.fill_at_start(self.round, self._active())
                self.counters.add_time("offline_start", filled)
        self._peer_share = [int(x) for x in peer]
        self._own_share = [int(x) for x in own]
        self._c_own, self._c_theirs = {}, {}
        started = time.perf_counter()
        me, key = self.me, self.keys.keypair.public_key
        out = []
        for i, m in self.active():
            c_a = self.keys.keypair.encrypt_int(int(own[i]), self.pools.own.take_rn())
            self._c_own[i] = c_a
            out.append(Outgoing(m, round_, ShareOwn((me, m), pl.ciphertext_to_bytes(key, c_a))))
        self._timed("encrypt", started)
        return out

    def handle(self, message: Message) -> list[Outgoing]:
        match message.body:
            case ShareOwn() as body:
                return self._answer(message, body)
            case SharePeer() as body:
                return self._decrypt_and_prove(message, body)
            case PriceProof() as body:
                return self._verify(message, body)
        raise Rejected(f"unexpected {message.kind}", message.sender)

    def _answer(self, message: Message, body: ShareOwn) -> list[Outgoing]:
        """Peer step: the owner committed to c_A; now send c_B = E_owner(B)."""
        owner = message.sender
        i = self._direction(message, body.pair, owner, self.me)
        if i in self._c_theirs:
            raise Rejected(f"second share_own from {owner} in round {self.round}", owner)
        key = self.keys.public(owner)
        try:
            c_a = pl.ciphertext_from_bytes(key, body.c, "c_A")
        except CryptoError as exc:
            raise Violation(owner, exc.reason, [message.raw]) from None
        started = time.perf_counter()
        c_b = pl.encrypt_int(key, self._peer_share[i], self.pools.partner(owner).take_rn())
        self._timed("encrypt", started)
        self._c_theirs[i] = (c_a, c_b, message.raw)
        answer = SharePeer((owner, self.me), pl.ciphertext_to_bytes(key, c_b))
        return [Outgoing(owner, self.round, answer)]

    def _decrypt_and_prove(self, message: Message, body: SharePeer) -> list[Outgoing]:
        """Owner step: run the contract, decrypt with CRT, prove, send x and the proof sealed."""
        peer = message.sender
        i = self._direction(message, body.pair, self.me, peer)
        if self._own[i] is not None:
            raise Rejected(f"second share_peer from {peer} in round {self.round}", peer)
        keypair = self.keys.keypair
        try:
            c = self._contract_of(body, i)
        except CryptoError as exc:
            raise Violation(peer, exc.reason, [message.raw]) from None
        context = self._context(self.me, peer)
        x, proof = self.prepared.proved(message.raw, keypair, c, context, self.pools.own)
        self.counters.count("proofs_made")
        try:  # X = A + B: our A is in range, so a sum beyond int64 is the peer's B
            self._set_own(i, _in_fixed_range(decode_residue(x, keypair.n)))
        except CryptoError as exc:
            raise Violation(peer, exc.reason, [message.raw]) from None
        size = pl.modulus_length(keypair.public_key)
        claim = PriceProof(
            pair=(self.me, peer),
            x=int_to_fixed(x, size),
            a=int_to_fixed(proof.a, 2 * size),
            z=int_to_fixed(proof.z, size),
        )
        return [Outgoing(peer, self.round, claim)]

    def _verify(self, message: Message, body: PriceProof) -> list[Outgoing]:
        """Peer step: recompute c, check the decryption proof, record the owner's price.

        With ``verify = "batch"`` only the cheap checks run here; the equation waits in the
        owner's batch and x is used optimistically until then.
        """
        owner = message.sender
        i = self._direction(message, body.pair, owner, self.me)
        if i not in self._c_theirs:
            raise Violation(owner, "price_proof before the shares were exchanged", [message.raw])
        if self._peer[i] is not None or i in self._failed:
            raise Rejected(f"second price_proof from {owner} in round {self.round}", owner)
        share_own = self._c_theirs[i][2]
        key = self.keys.public(owner)
        started = time.perf_counter()
        try:
            c, x, proof, context = self._claim_of(owner, body, i)
            if self.verify == "batch":
                pending = check_decryption(key, c, x, proof, context)
                evidence = DeferredProof(self.round, owner, (share_own, message.raw))
                self.batches.add(owner, key, pending, evidence)
                value = pending.fixed
            else:
                value = self.prepared.verified(message.raw, key, c, x, proof, context)
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
        elif self.batches.full(owner):
            self.batches.close(owner)  # a failure is reported with the next idle work (tick)
        self._set_peer(i, value)
        return []
