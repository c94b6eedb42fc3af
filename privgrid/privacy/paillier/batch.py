"""Batch verification of decryption proofs (``privacy.verify = "batch"``).

With batches, the exchange runs only the cheap checks of a proof on arrival (ranges, units,
the 2^128 range, the Fiat–Shamir hash) and takes the decrypted price optimistically; the
verification equation of every proof of one owner is checked together
(:class:`~privgrid.crypto.zkp.DecryptionBatch`, one full exponentiation for the lot): in idle
time, at once when an owner has :data:`BATCH_LIMIT` proofs pending (memory), and all that is
left before the final report. A failed batch names the offending round(s) and yields a
:class:`DeferredViolation` with that round's signed messages, as a per-round failure would.

Apart from the exchange because it is bookkeeping across rounds — what is pending, what was
found, whom it was reported against — while the exchange is one round's protocol.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from privgrid.crypto import paillier as pl
from privgrid.crypto.zkp import DecryptionBatch, PendingProof
from privgrid.privacy.exchange import CryptoCounters, Violation

#: Proofs folded into an owner's batch per idle call. At 2048 bits one proof costs ~0.08 of a
#: powmod floor, so a chunk keeps an idle call near one exponentiation.
ABSORB_CHUNK = 8
#: An owner's batch is closed (one full exponentiation) in idle time once it holds this many
#: proofs; whatever is left is closed before the final report.
BATCH_CLOSE = 32
#: An owner's batch holding this many proofs is closed at once, idle or not. An agent with
#: many partners is rarely idle for a tick, and each pending proof keeps its ciphertexts and
#: signed messages (≈ 3 KB at 1024 bits): without a bound they piled up for the whole session
#: (measured: +85 KB per round in a process of 5 sellers, ieee118-100).
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


class BatchVerifier:
    """One agent's pending proofs, a batch per owner, and the violations they revealed."""

    def __init__(self, counters: CryptoCounters) -> None:
        self.counters = counters
        #: Most pending proofs per owner before its batch is closed at once.
        self.limit = BATCH_LIMIT
        self._batches: dict[str, DecryptionBatch[DeferredProof]] = {}
        self._found: list[DeferredViolation] = []
        self._reported: set[str] = set()  # owners a deferred violation was raised against

    def add(
        self, owner: str, key: pl.PublicKey, pending: PendingProof, evidence: DeferredProof
    ) -> None:
        """Queue a proof of ``owner`` (its cheap checks passed) for its batch."""
        batch = self._batches.get(owner)
        if batch is None:
            batch = self._batches[owner] = DecryptionBatch(key)
        batch.add(pending, evidence)

    def pending(self, owner: str) -> int:
        """Proofs of ``owner`` not verified yet."""
        batch = self._batches.get(owner)
        return 0 if batch is None else len(batch)

    def full(self, owner: str) -> bool:
        """``owner``'s batch holds :attr:`limit` proofs: close it now, idle or not."""
        return self.pending(owner) >= self.limit

    def work(self) -> bool:
        """Spare time: one chunk of a batch, or close a batch that is due. True if it worked."""
        for batch in self._batches.values():
            if batch.queued:
                started = time.perf_counter()
                batch.absorb(ABSORB_CHUNK)
                self._timed(started)
                return True
        for owner, batch in self._batches.items():
            if batch.absorbed >= BATCH_CLOSE:
                self.close(owner)
                return True
        return False

    def close(self, owner: str) -> None:
        """Verify ``owner``'s pending proofs; a failure becomes a :class:`DeferredViolation`."""
        batch = self._batches[owner]
        verified, failed = batch.verified, batch.failed
        started = time.perf_counter()
        bad = batch.close()
        self._timed(started)
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

    def close_all(self) -> None:
        """Verify every pending proof now (before the final report)."""
        for owner in list(self._batches):
            if len(self._batches[owner]):
                self.close(owner)

    def drain(self) -> list[DeferredViolation]:
        """Violations found since the last call (to be reported to the MO)."""
        found, self._found = self._found, []
        return found

    def forget(self, owner: str) -> None:
        """The pair with ``owner`` was dropped: its unverified proofs are of no more use."""
        self._batches.pop(owner, None)

    def close_and_forget(self, owner: str) -> None:
        """``owner`` restarted (its key may be new): settle its proofs under the key they were
        made with, then start afresh."""
        if owner in self._batches:
            if len(self._batches[owner]):
                self.close(owner)
            del self._batches[owner]

    def _timed(self, started: float) -> None:
        self.counters.add_time("batch_verify", time.perf_counter() - started)
