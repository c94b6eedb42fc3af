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

import gmpy2

from privgrid.crypto.codec import MAX_ABS_PLAINTEXT, decode_residue
from privgrid.crypto.errors import CiphertextError, PlaintextError, ProofError
from privgrid.crypto.framing import int_to_bytes, int_to_fixed, lp, lp_all
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


def verify_transcript(
    public_key: PublicKey, ciphertext: int, x: int, a: int, e: int, z: int, t: int
) -> None:
    """Check one transcript ``(a, e, z)`` for ``Dec(c) = x`` with t-bit challenges.

    Raises :class:`ProofError` naming the first failed check.
    """
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
    u = gmpy2.mpz(ciphertext) * (1 - (x % n) * n) % n2
    if gmpy2.powmod(z, n, n2) != a * gmpy2.powmod(u, e, n2) % n2:
        raise ProofError("verification equation z^N ≡ a·u^e (mod N²) fails")


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
    verify_transcript(public_key, ciphertext, x, proof.a, e, proof.z, FS_CHALLENGE_BITS)
    return fixed


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
