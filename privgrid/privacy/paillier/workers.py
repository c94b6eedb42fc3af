"""The exchange's two heavy steps, on a worker thread ahead of time or inline, same result.

With ``privacy.crypto_threads`` the process hands out decrypt + prove (on ``share_peer``) and
a proof's check (on ``price_proof``) as jobs that run on worker threads while it goes on with
other messages. A job reads only what earlier messages settled and writes nothing but its
result, kept here under the message's signed bytes. When the exchange then handles the
message it asks for the step's result: it gets the worker's only if that was computed from
the very inputs it would use, else the step runs inline — so every check happens as without
threads, and a stale or planted result cannot decide a message.

Apart from the exchange because it is about *where* a step runs, not what the protocol does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from privgrid.crypto import paillier as pl
from privgrid.crypto.errors import CryptoError
from privgrid.crypto.zkp import DecryptionProof, ProofContext, prove_decryption, verify_decryption
from privgrid.privacy.exchange import CryptoCounters


@dataclass(frozen=True)
class Prepared:
    """A worker thread's result for one message: the inputs it was computed from, what came
    out (``(x, proof)`` of a decryption proof; the verified fixed-point price or the
    :class:`CryptoError` of a check) and its time."""

    inputs: tuple[Any, ...]
    result: Any
    seconds: float


def _prove(
    keypair: pl.PaillierKeyPair,
    c: int,
    context: ProofContext,
    commitment: Callable[[], pl.Obfuscator | None],
) -> Prepared:
    """Decrypt ``c`` and prove it, timed from taking the commitment on."""
    started = time.perf_counter()
    result = prove_decryption(keypair, c, context, commitment())
    return Prepared((c, context), result, time.perf_counter() - started)


def _check(
    key: pl.PublicKey, c: int, x: int, proof: DecryptionProof, context: ProofContext
) -> Prepared:
    """Check the claim ``Dec(c) = x``: the verified value, or the :class:`CryptoError`."""
    started = time.perf_counter()
    result: int | CryptoError
    try:
        result = verify_decryption(key, c, x, proof, context)
    except CryptoError as exc:
        result = exc
    return Prepared((key.n, c, x, proof, context), result, time.perf_counter() - started)


class WorkerResults:
    """Jobs for the heavy steps, and their results by message bytes until they are used."""

    def __init__(self, counters: CryptoCounters) -> None:
        self.counters = counters
        self._results: dict[bytes, Prepared] = {}

    def __len__(self) -> int:
        return len(self._results)

    def put(self, raw: bytes, prepared: Prepared) -> None:
        """Keep a result for the message whose signed bytes are ``raw``."""
        self._results[raw] = prepared

    def clear(self) -> None:
        """Forget every result (those for last round's messages are of no more use)."""
        self._results.clear()

    def proof_job(
        self,
        raw: bytes,
        keypair: pl.PaillierKeyPair,
        c: int,
        context: ProofContext,
        pool: pl.ObfuscatorPool,
    ) -> Callable[[], None]:
        """A job that decrypts ``c`` and proves it. Call on the event loop: the commitment
        is taken from ``pool`` here, as pools are not thread-safe."""
        taken = pool.take() if len(pool) else None

        def job() -> None:
            self.put(raw, _prove(keypair, c, context, lambda: taken))

        return job

    def check_job(
        self,
        raw: bytes,
        key: pl.PublicKey,
        c: int,
        x: int,
        proof: DecryptionProof,
        context: ProofContext,
    ) -> Callable[[], None]:
        """A job that checks the claim ``Dec(c) = x`` with its proof."""

        def job() -> None:
            self.put(raw, _check(key, c, x, proof, context))

        return job

    def take(self, raw: bytes, inputs: tuple[Any, ...]) -> Prepared | None:
        """The worker's result for the message ``raw`` if it was computed from ``inputs``."""
        prepared = self._results.pop(raw, None)
        if prepared is None or prepared.inputs != inputs:
            return None
        self.counters.count("worker_jobs")
        return prepared

    def proved(
        self,
        raw: bytes,
        keypair: pl.PaillierKeyPair,
        c: int,
        context: ProofContext,
        pool: pl.ObfuscatorPool,
    ) -> tuple[int, DecryptionProof]:
        """``prove_decryption``, or the worker's result on the same inputs; timed as
        ``decrypt_prove`` either way."""
        prepared = self.take(raw, (c, context)) or _prove(keypair, c, context, pool.take)
        self.counters.add_time("decrypt_prove", prepared.seconds)
        x, proof = prepared.result
        return x, proof

    def verified(
        self,
        raw: bytes,
        key: pl.PublicKey,
        c: int,
        x: int,
        proof: DecryptionProof,
        context: ProofContext,
    ) -> int:
        """``verify_decryption``, or the worker's verdict on the same inputs.

        A worker's time is counted as ``verify`` here; the caller times the inline check.

        Raises:
            CryptoError: the proof fails (inline, or as the worker found).
        """
        prepared = self.take(raw, (key.n, c, x, proof, context))
        if prepared is None:
            prepared = _check(key, c, x, proof, context)
        else:
            self.counters.add_time("verify", prepared.seconds)
        if isinstance(prepared.result, CryptoError):
            raise prepared.result
        return int(prepared.result)
