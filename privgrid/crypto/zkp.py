"""Proof of correct Paillier decryption (Damgård–Jurik–Nielsen, s = 1), protocol.md §5.

Statement: public N, c, x; claim ``Dec(c) = x``, i.e. ``u = c·(1 − x·N) mod N²`` is an N-th
power mod N². Protocol (Σ-protocol for N-th powers):

- prover recovers ``v`` with ``v^N ≡ u (mod N²)``: ``v = CRT(c^d_p mod p, c^d_q mod q)``,
  ``d_p = N^-1 mod (p−1)``, ``d_q = N^-1 mod (q−1)`` (``v^N mod N²`` depends only on v mod N,
  and ``c ≡ v^N (mod N)``); for an honest ciphertext v is exactly the encryption randomness r;
- commitment ``a = r^N mod N²`` for a fresh unit r (CRT, or from an obfuscator pool);
- challenge e; response ``z = r · v^e mod N``, with ``v^e`` computed in the same CRT step as
  v (exponents ``d_p·e mod (p−1)``, ``d_q·e mod (q−1)``), so it costs no extra powmod;
- verifier requires ``0 < c < N²``, ``0 < a < N²``, ``0 < z < N``, ``0 ≤ e < 2^t``,
  ``gcd(c·a·z mod N, N) = 1`` and accepts iff ``z^N ≡ a · u^e (mod N²)``.

Fiat–Shamir (used, t = 256): ``e = int(SHA-256(lp("privgrid/zkp-decryption/v1") ‖ lp(N) ‖
lp(c) ‖ lp(x mod N) ‖ lp(a) ‖ lp(ctx)))``, integers as minimal big-endian bytes, and
``ctx = lp(run) ‖ lp(str(k)) ‖ lp(owner) ‖ lp(peer) ‖ lp(kind)`` (:class:`ProofContext`). The
context binds the proof to one run, round, direction and message kind, and the hash binds it
to the exact c, so a re-randomised c or a moved proof fails. The interactive form (t = 128,
verifier-chosen e) and the honest-verifier simulator are kept for tests and reference.

Choices where the spec is silent:
- :func:`verify_decryption` also enforces ``|X| < 2^128`` on the claimed x (signed decoding):
  §5.4 makes that range check part of the soundness argument, so it is not left to callers;
  on success it returns the signed X;
- a serialised proof is ``a ‖ z`` with fixed lengths ``2|N|/8`` and ``|N|/8`` bytes.

Soundness needs gcd(N, φ(N)) = 1 and no small factors of N, which the key announcement
checks establish (:mod:`privgrid.crypto.keyproof`). The proof reveals x to anyone who can guess
it (one exponentiation per guess), so it must travel sealed together with x (§6).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Generic, TypeVar

import gmpy2

from privgrid.crypto.codec import MAX_ABS_PLAINTEXT, decode_residue
from privgrid.crypto.errors import CiphertextError, PlaintextError, ProofError
from privgrid.crypto.framing import int_to_bytes, int_to_fixed, lp, lp_all
from privgrid.crypto.multiexp import multi_powmod
from privgrid.crypto.paillier import (
    Obfuscator,
    PaillierKeyPair,
    PublicKey,
    check_ciphertext,
    ciphertext_length,
    modulus_length,
    random_unit,
)

#: Domain-separation label of the Fiat–Shamir hash.
FS_DOMAIN = b"privgrid/zkp-decryption/v1"
#: Challenge length of the Fiat–Shamir form (SHA-256 output).
FS_CHALLENGE_BITS = 256
#: Challenge length of the interactive form.
INTERACTIVE_CHALLENGE_BITS = 128

T = TypeVar("T")


@dataclass(frozen=True)
class ProofContext:
    """What a proof is bound to: one run, one round k, one direction owner→peer, one kind."""

    run: str
    round: int
    owner: str
    peer: str
    kind: str = "price"

    def __post_init__(self) -> None:
        for name in ("run", "owner", "peer", "kind"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"ProofContext.{name} must be a non-empty string")
        if not isinstance(self.round, int) or isinstance(self.round, bool) or self.round < 0:
            raise ValueError("ProofContext.round must be a non-negative int")

    def to_bytes(self) -> bytes:
        """``lp(run) ‖ lp(str(k)) ‖ lp(owner) ‖ lp(peer) ‖ lp(kind)``."""
        return lp_all((self.run, str(self.round), self.owner, self.peer, self.kind))


@dataclass(frozen=True)
class DecryptionProof:
    """A Fiat–Shamir proof: commitment ``a`` (mod N²) and response ``z`` (mod N)."""

    a: int
    z: int

    def to_bytes(self, public_key: PublicKey) -> bytes:
        """``a ‖ z`` as fixed-length big-endian bytes (``2|N|/8 + |N|/8``)."""
        try:
            return int_to_fixed(self.a, ciphertext_length(public_key)) + int_to_fixed(
                self.z, modulus_length(public_key)
            )
        except ValueError as exc:
            raise ProofError(f"proof values do not fit the key size: {exc}") from exc

    @classmethod
    def from_bytes(cls, public_key: PublicKey, data: bytes) -> DecryptionProof:
        """Split ``a ‖ z``; the ranges are checked by :func:`verify_decryption`."""
        la, lz = ciphertext_length(public_key), modulus_length(public_key)
        if len(data) != la + lz:
            raise ProofError(f"proof has {len(data)} bytes, expected {la + lz}")
        return cls(int.from_bytes(data[:la], "big"), int.from_bytes(data[la:], "big"))


# --------------------------------------------------------------------------- prover


def recover_randomness(keypair: PaillierKeyPair, ciphertext: int) -> int:
    """The v mod N with ``v^N ≡ c (mod N)``; for an honest ciphertext, its randomness r."""
    return keypair.nth_root(ciphertext)


def fiat_shamir_challenge(n: int, c: int, x: int, a: int, context: ProofContext) -> int:
    """``e = int(SHA-256(lp(label) ‖ lp(N) ‖ lp(c) ‖ lp(x mod N) ‖ lp(a) ‖ lp(ctx)))``."""
    transcript = (
        lp(FS_DOMAIN)
        + lp(int_to_bytes(n))
        + lp(int_to_bytes(c))
        + lp(int_to_bytes(x % n))
        + lp(int_to_bytes(a))
        + lp(context.to_bytes())
    )
    return int.from_bytes(hashlib.sha256(transcript).digest(), "big")


def commit(keypair: PaillierKeyPair, commitment: Obfuscator | None = None) -> Obfuscator:
    """The commitment ``(r, a = r^N mod N²)``: given (from a pool) or fresh by CRT."""
    return keypair.new_obfuscator() if commitment is None else commitment


def respond(keypair: PaillierKeyPair, ciphertext: int, r: int, e: int) -> int:
    """The response ``z = r · v^e mod N``; ``v^e`` comes straight from the CRT root."""
    n = gmpy2.mpz(keypair.n)
    return int(gmpy2.mpz(r) * keypair.nth_root(ciphertext, e) % n)


def prove_decryption(
    keypair: PaillierKeyPair,
    ciphertext: int,
    context: ProofContext,
    commitment: Obfuscator | None = None,
) -> tuple[int, DecryptionProof]:
    """Decrypt c and prove it: returns ``(x, proof)`` with x the residue in ``[0, N)``.

    ``commitment`` is an unused pool entry (taken with ``ObfuscatorPool.take()``); without
    it a fresh one is computed (the "FS prove total" cost of §5.5).
    """
    x = keypair.decrypt_residue(ciphertext)
    r, a = commit(keypair, commitment)
    e = fiat_shamir_challenge(keypair.n, ciphertext, x, a, context)
    return x, DecryptionProof(a, respond(keypair, ciphertext, r, e))


# --------------------------------------------------------------------------- verifier


def _check_transcript_ranges(
    public_key: PublicKey, ciphertext: int, x: int, a: int, e: int, z: int, t: int
) -> None:
    """Every check of a transcript except the exponentiation equation (microseconds)."""
    n, n2 = gmpy2.mpz(public_key.n), gmpy2.mpz(public_key.nsquare)
    for name, value in (("c", ciphertext), ("a", a), ("z", z), ("e", e), ("x", x)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProofError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 < ciphertext < n2:
        raise ProofError("ciphertext out of range: need 0 < c < N²")
    if not 0 < a < n2:
        raise ProofError("commitment out of range: need 0 < a < N²")
    if not 0 < z < n:
        raise ProofError("response out of range: need 0 < z < N")
    if not 0 <= e < (1 << t):
        raise ProofError(f"challenge out of range: need 0 ≤ e < 2^{t}")
    if gmpy2.gcd(gmpy2.mpz(ciphertext) * a * z % n, n) != 1:
        raise ProofError("non-unit: gcd(c·a·z mod N, N) ≠ 1")


def _u(public_key: PublicKey, ciphertext: int, x: int) -> gmpy2.mpz:
    """``u = c · g^(−x) = c · (1 − x·N) mod N²``: an N-th power iff ``Dec(c) = x``."""
    n, n2 = gmpy2.mpz(public_key.n), gmpy2.mpz(public_key.nsquare)
    return gmpy2.mpz(ciphertext) * (1 - (x % n) * n) % n2


def _equation_holds(public_key: PublicKey, ciphertext: int, x: int, a: int, e: int, z: int) -> bool:
    """``z^N ≡ a · u^e (mod N²)``: one full exponentiation (the floor) plus a t-bit one."""
    n, n2 = gmpy2.mpz(public_key.n), gmpy2.mpz(public_key.nsquare)
    u = _u(public_key, ciphertext, x)
    return bool(gmpy2.powmod(z, n, n2) == a * gmpy2.powmod(u, e, n2) % n2)


def verify_transcript(
    public_key: PublicKey, ciphertext: int, x: int, a: int, e: int, z: int, t: int
) -> None:
    """Check one transcript ``(a, e, z)`` for ``Dec(c) = x`` with t-bit challenges.

    Raises :class:`ProofError` naming the first failed check.
    """
    _check_transcript_ranges(public_key, ciphertext, x, a, e, z, t)
    if not _equation_holds(public_key, ciphertext, x, a, e, z):
        raise ProofError("verification equation z^N ≡ a·u^e (mod N²) fails")


@dataclass(frozen=True)
class PendingProof:
    """A Fiat–Shamir proof whose cheap checks passed; only its equation is left to check.

    ``fixed`` is the signed X the verifier may use optimistically (batch verification) until
    the batch containing this proof is verified.
    """

    ciphertext: int
    x: int  # residue mod N
    a: int
    z: int
    e: int
    fixed: int


def check_decryption(
    public_key: PublicKey,
    ciphertext: int,
    x: int,
    proof: DecryptionProof,
    context: ProofContext,
    max_abs: int = MAX_ABS_PLAINTEXT,
) -> PendingProof:
    """Every check of :func:`verify_decryption` except the exponentiation equation.

    Why split: batch verification accepts x optimistically once these cheap checks (ranges,
    units, the 2^128 range of X, the Fiat–Shamir challenge) pass, and checks the equations
    of many proofs at once later (:class:`DecryptionBatch`). Raises :class:`ProofError`.
    """
    try:
        check_ciphertext(public_key, ciphertext)
    except CiphertextError as exc:
        raise ProofError(exc.reason) from exc
    if not isinstance(x, int) or isinstance(x, bool):
        raise ProofError(f"x must be an int, got {type(x).__name__}")
    try:
        fixed = decode_residue(x % public_key.n, public_key.n, max_abs)
    except PlaintextError as exc:
        raise ProofError(f"claimed plaintext rejected: {exc.reason}") from exc
    if not isinstance(proof.a, int) or not 0 < proof.a < public_key.nsquare:
        raise ProofError("commitment out of range: need 0 < a < N²")
    e = fiat_shamir_challenge(public_key.n, ciphertext, x, proof.a, context)
    _check_transcript_ranges(public_key, ciphertext, x, proof.a, e, proof.z, FS_CHALLENGE_BITS)
    return PendingProof(ciphertext, x % public_key.n, proof.a, proof.z, e, fixed)


def verify_decryption(
    public_key: PublicKey,
    ciphertext: int,
    x: int,
    proof: DecryptionProof,
    context: ProofContext,
    max_abs: int = MAX_ABS_PLAINTEXT,
) -> int:
    """Verify a Fiat–Shamir proof that ``Dec(c) = x`` in ``context``; return the signed X.

    ``x`` may be given as the residue or as the signed integer (it is reduced mod N). The
    decoded X must satisfy ``|X| < max_abs`` (2^128, §5.4). Raises :class:`ProofError`.
    """
    pending = check_decryption(public_key, ciphertext, x, proof, context, max_abs)
    if not _equation_holds(public_key, ciphertext, x, proof.a, pending.e, proof.z):
        raise ProofError("verification equation z^N ≡ a·u^e (mod N²) fails")
    return pending.fixed


# --------------------------------------------------------------------------- batch


#: Bits of the verifier's random batch exponents t_i (odd, so 63 random bits): the soundness
#: error of one batch is at most 2^-63 per false statement (see :class:`DecryptionBatch`).
BATCH_EXPONENT_BITS = 64


def batch_exponent() -> int:
    """A secret, uniform, **odd** 64-bit exponent t (why odd: :class:`DecryptionBatch`)."""
    return (secrets.randbits(BATCH_EXPONENT_BITS - 1) << 1) | 1


class DecryptionBatch(Generic[T]):
    """Batch verification of one owner's decryption proofs (all under the same N).

    Each proof i claims ``z_i^N ≡ a_i · u_i^(e_i) (mod N²)``. The verifier draws a secret odd
    64-bit ``t_i`` per proof and checks the single equation

        ``(Π z_i^(t_i) mod N)^N ≡ Π a_i^(t_i) · u_i^(e_i·t_i)  (mod N²)``

    (``w^N mod N²`` depends only on ``w mod N``, so the left side needs one full
    exponentiation for the whole batch; the right side is one Straus multi-exponentiation,
    :func:`~privgrid.crypto.multiexp.multi_powmod`). Proofs are *absorbed* into the two
    accumulators in chunks (idle time), and the batch is *closed* with that one full
    exponentiation. If the batch equation fails, every absorbed proof is verified on its own
    (the fallback) to name the offending one(s): a batch fails only if some single proof
    does, so the fallback always finds the culprit.

    **Soundness** (why a false x cannot hide in a batch). ``Z*_{N²} = G × H`` with ``G =
    ⟨1+N⟩`` of order N and ``H`` = the N-th powers, of order φ(N) (the key proof gives
    gcd(N, φ(N)) = 1, hence N square-free). "``x = Dec(c)``" says exactly that the
    G-component of ``u = c·(1+N)^(−x)`` is trivial. Write proof i's error
    ``w_i = z_i^N / (a_i u_i^(e_i))`` as (δ_i in G ≅ Z_N) · (η_i in H); per-proof verification
    checks w_i = 1, the batch checks Π w_i^(t_i) = 1, whose G-part is Σ t_i δ_i ≡ 0 (mod N).
    For a false statement δ_j must be non-zero modulo some primes of N: zeroing it modulo a
    prime s where x_j is wrong means hitting the Fiat–Shamir challenge mod s. Let S be the
    product of the primes where δ_j ≢ 0. Fixing the other t's, the odd t_j < 2^64 with
    ``t_j·δ_j ≡ −Σ_{i≠j} t_i δ_i (mod S)`` are one residue class mod S, so the batch passes with
    probability ≤ 1/S + 2^-63 (the t's are secret, drawn after the proof arrived, and the
    prover only ever learns accept/reject). A prover who grinds the hash to zero δ_j modulo
    some primes pays their product in hash trials and gambles 1/S on the rest; the two
    products multiply to N / gcd(x_j − Dec(c_j), N), which the 2^128 range check keeps
    ≥ 2^1919 at 2048 bits (protocol.md §5.4) — as infeasible as cheating a single proof. For
    an honestly generated key (two primes of |N|/2 bits) S ≥ min(p, q) and the error is
    2^-63 per false proof.

    **Small-order elements.** Z*_{N²} has elements of small order (−1, and whatever small
    factors p−1 and q−1 have), and random-exponent batch tests are classically fooled by them
    (Boyd–Pavlovski 1998). Here every element of order below 2^16 lies in H (G has order N,
    whose prime factors the key checks put above 2^16; larger ones are covered above), and H
    is what the *statement* does not constrain: tampering a proof with such an element
    changes only η_i, never δ_i, so it can never make a false x pass. It can make a
    malformed transcript of a *true* statement pass with probability ≤ 1/d for an element
    of order d; with **odd** t_i a single order-2 tampering
    (``a`` or ``z`` multiplied by −1 ≡ N²−1) is always caught, since ``(−1)^(t_i) = −1``.
    Squaring both sides (the textbook fix) would be equally sound for the statement —
    squaring is an automorphism of G, N being odd — but would make the batch accept every
    order-2 tampering; odd exponents keep the batch's verdict closer to per-proof
    verification at no cost.
    """

    def __init__(self, public_key: PublicKey) -> None:
        self.public_key = public_key
        self._n = gmpy2.mpz(public_key.n)
        self._n2 = gmpy2.mpz(public_key.nsquare)
        self._queued: list[tuple[PendingProof, T]] = []
        self._absorbed: list[tuple[PendingProof, T]] = []
        self._lhs = gmpy2.mpz(1)  # Π z_i^(t_i) mod N
        self._rhs = gmpy2.mpz(1)  # Π a_i^(t_i) · u_i^(e_i·t_i) mod N²
        self.verified = 0  # proofs that passed in closed batches
        self.failed = 0  # proofs that failed (found by the fallback)
        self.batches = 0  # batches closed

    def add(self, proof: PendingProof, tag: T) -> None:
        """Queue a proof (its cheap checks already passed); ``tag`` names it in failures."""
        self._queued.append((proof, tag))

    @property
    def queued(self) -> int:
        """Proofs waiting to be absorbed."""
        return len(self._queued)

    @property
    def absorbed(self) -> int:
        """Proofs folded into the accumulators, waiting for :meth:`close`."""
        return len(self._absorbed)

    def __len__(self) -> int:
        return len(self._queued) + len(self._absorbed)

    def absorb(self, limit: int | None = None) -> int:
        """Fold up to ``limit`` queued proofs (all if None) into the accumulators."""
        count = len(self._queued) if limit is None else min(limit, len(self._queued))
        if count == 0:
            return 0
        chunk, self._queued = self._queued[:count], self._queued[count:]
        bases: list[int] = []
        exponents: list[int] = []
        lhs = self._lhs
        for proof, _ in chunk:
            t = batch_exponent()
            bases += [proof.a, _u(self.public_key, proof.ciphertext, proof.x)]
            exponents += [t, proof.e * t]
            lhs = lhs * gmpy2.powmod(proof.z, t, self._n) % self._n
        self._lhs = lhs
        self._rhs = self._rhs * multi_powmod(bases, exponents, self.public_key.nsquare) % self._n2
        self._absorbed += chunk
        return count

    def close(self) -> list[T]:
        """Absorb what is queued, check the batch, reset; return the tags of failed proofs.

        An empty list means every proof of the batch verified.
        """
        self.absorb()
        batch, self._absorbed = self._absorbed, []
        lhs, rhs = self._lhs, self._rhs
        self._lhs, self._rhs = gmpy2.mpz(1), gmpy2.mpz(1)
        if not batch:
            return []
        self.batches += 1
        if gmpy2.powmod(lhs, self._n, self._n2) == rhs:
            self.verified += len(batch)
            return []
        failed = [
            tag
            for proof, tag in batch
            if not _equation_holds(
                self.public_key, proof.ciphertext, proof.x, proof.a, proof.e, proof.z
            )
        ]
        self.failed += len(failed)
        self.verified += len(batch) - len(failed)
        return failed


# --------------------------------------------------------------------------- interactive


def random_challenge(t: int = INTERACTIVE_CHALLENGE_BITS) -> int:
    """A verifier's uniform t-bit challenge (interactive form)."""
    return secrets.randbits(t)


def simulate_transcript(public_key: PublicKey, ciphertext: int, x: int, e: int) -> DecryptionProof:
    """Honest-verifier simulator: pick a unit z, set ``a = z^N · u^-e mod N²``.

    The transcript ``(a, e, z)`` verifies for its own e although it was made without the key,
    which is why the interactive proof reveals nothing beyond the statement to an honest
    verifier (§5.4); it fails for any other e.
    """
    n, n2 = gmpy2.mpz(public_key.n), gmpy2.mpz(public_key.nsquare)
    z = random_unit(public_key.n)
    u = gmpy2.mpz(ciphertext) * (1 - (x % n) * n) % n2
    a = gmpy2.powmod(z, n, n2) * gmpy2.invert(gmpy2.powmod(u, e, n2), n2) % n2
    return DecryptionProof(int(a), z)
