"""Paillier encryption for the pair computation: a thin layer over ``phe`` with ``gmpy2``.

Why a wrapper at all: phe provides key generation, the key objects and CRT decryption
(``raw_decrypt``), but its defaults are wrong for this protocol (protocol.md §3, §10):
- its float encoding leaks magnitudes through the exponent, so plaintexts here are fixed-point
  residues (:mod:`privgrid.crypto.codec`) and ciphertexts are plain ``int`` values;
- it offers no way to use a precomputed obfuscator ``r^N mod N²``, which is what takes the
  encryption cost off the critical path (:class:`ObfuscatorPool`); so encryption here is
  ``(1 + m·N) · r^N mod N²`` computed directly (g = N + 1), which is exactly phe's formula;
- the key owner knows p and q, so it computes ``r^N mod N²`` by CRT mod p² and q² with the
  exponent reduced mod p(p−1) and q(q−1) (the orders of the two unit groups), ~1.8× faster;
- it has no wire format; here N travels as ``|N|/8`` big-endian bytes and a ciphertext as
  ``2|N|/8`` bytes, and parsing checks the length, ``0 < c < N²`` and ``gcd(c, N) = 1``.

``gmpy2`` is imported unconditionally: without it phe silently falls back to Python's ``pow``
and everything is 8–10× slower (§10), so a missing gmpy2 must fail loudly at import.

Interop with phe's ``EncryptedNumber``: :func:`to_encrypted_number` wraps a ciphertext with the
fixed exponent −8 (base 16, i.e. scale 2^-32); :func:`from_encrypted_number` rejects any other
exponent and calls ``ciphertext(be_secure=True)`` before the value may leave the process.
The exponent itself never travels.

Peer keys are loaded with ``phe.PaillierPublicKey(n)`` (:func:`public_key_from_n`); the checks
that make a peer's N acceptable are in :mod:`privgrid.crypto.keyproof`.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from typing import NamedTuple

import gmpy2
import phe

from privgrid.crypto.codec import (
    MAX_ABS_PLAINTEXT,
    decode_real,
    decode_residue,
    encode_real,
    to_residue,
)
from privgrid.crypto.errors import CiphertextError, CryptoError, KeyCheckError, PlaintextError
from privgrid.crypto.framing import int_to_fixed

#: phe exponent of every encoded number in this protocol: 16^-8 = 2^-32. Never sent.
FIXED_EXPONENT = -8

_MAX_KEYGEN_ATTEMPTS = 64

PublicKey = phe.PaillierPublicKey


class Obfuscator(NamedTuple):
    """A random unit ``r`` mod N and ``rn = r^N mod N²``.

    Encryption needs only ``rn``; the ZKP commitment needs both (``a = rn``, ``z = r·v^e``).
    An entry must be used once, for one purpose: reusing ``rn`` for a ciphertext and a
    commitment would let anyone divide one by the other and read the plaintext.
    """

    r: int
    rn: int


# --------------------------------------------------------------------------- sizes


def modulus_length(public_key: PublicKey) -> int:
    """Bytes of N on the wire: ``|N|/8``."""
    return (public_key.n.bit_length() + 7) // 8


def ciphertext_length(public_key: PublicKey) -> int:
    """Bytes of a ciphertext on the wire: ``2|N|/8``."""
    return 2 * modulus_length(public_key)


# --------------------------------------------------------------------------- keys


def public_key_from_n(n: int) -> PublicKey:
    """Load a peer's key from its modulus (phe's own constructor, g = N + 1)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 3 or n % 2 == 0:
        raise KeyCheckError("Paillier modulus must be an odd integer > 2")
    return phe.PaillierPublicKey(n)


def public_key_to_bytes(public_key: PublicKey) -> bytes:
    """N as fixed-length big-endian bytes (``|N|/8``)."""
    return int_to_fixed(public_key.n, modulus_length(public_key))


def public_key_from_bytes(data: bytes, bits: int | None = None) -> PublicKey:
    """Parse N from ``|N|/8`` bytes; N must fill them exactly (top byte non-zero).

    ``bits``, if given, is the announced ``paillier_bits`` and must match the length. The full
    acceptance checks of protocol.md §2 are :func:`privgrid.crypto.keyproof.check_modulus`.
    """
    if bits is not None and len(data) * 8 != bits:
        raise KeyCheckError(f"Paillier key is {len(data)} bytes, announced {bits} bits")
    if not data or data[0] == 0:
        raise KeyCheckError("Paillier modulus bytes are empty or not minimal (leading zero)")
    return public_key_from_n(int.from_bytes(data, "big"))


class PaillierKeyPair:
    """A Paillier key pair with the CRT helpers the protocol needs.

    Holds phe's key objects (so phe's CRT decryption is used as is) plus precomputed values:
    p², q², the reduced exponents ``N mod p(p−1)``, ``N mod q(q−1)``, the CRT coefficients and
    ``d_p = N^-1 mod (p−1)``, ``d_q = N^-1 mod (q−1)`` (the unique N-th root, §5.2). The latter
    exist only if ``gcd(N, φ(N)) = 1``; for a key without that property (tests build one) the
    root operations raise :class:`KeyCheckError`.
    """

    __slots__ = (
        "_d_p",
        "_d_q",
        "_e_p",
        "_e_q",
        "_n",
        "_n2",
        "_p",
        "_p2",
        "_p2_inv",
        "_p_inv",
        "_q",
        "_q2",
        "private_key",
        "public_key",
    )

    def __init__(self, public_key: PublicKey, private_key: phe.PaillierPrivateKey) -> None:
        if private_key.public_key != public_key:
            raise KeyCheckError("private key does not belong to the public key")
        self.public_key = public_key
        self.private_key = private_key
        p, q = gmpy2.mpz(private_key.p), gmpy2.mpz(private_key.q)
        self._p, self._q = p, q
        self._n = gmpy2.mpz(public_key.n)
        self._n2 = self._n * self._n
        self._p2, self._q2 = p * p, q * q
        self._e_p = self._n % (p * (p - 1))
        self._e_q = self._n % (q * (q - 1))
        self._p_inv = gmpy2.invert(p, q)
        self._p2_inv = gmpy2.invert(self._p2, self._q2)
        if gmpy2.gcd(self._n, p - 1) == 1 and gmpy2.gcd(self._n, q - 1) == 1:
            self._d_p = gmpy2.invert(self._n, p - 1)
            self._d_q = gmpy2.invert(self._n, q - 1)
        else:
            self._d_p = self._d_q = None

    # -- public values
    @property
    def n(self) -> int:
        return self.public_key.n

    @property
    def nsquare(self) -> int:
        return self.public_key.nsquare

    @property
    def p(self) -> int:
        return int(self._p)

    @property
    def q(self) -> int:
        return int(self._q)

    @property
    def bits(self) -> int:
        return self.public_key.n.bit_length()

    # -- CRT helpers
    def crt_mod_n(self, x_p: int, x_q: int) -> int:
        """The x mod N with ``x ≡ x_p (mod p)`` and ``x ≡ x_q (mod q)``."""
        x_p = gmpy2.mpz(x_p) % self._p
        h = ((gmpy2.mpz(x_q) - x_p) * self._p_inv) % self._q
        return int(x_p + h * self._p)

    def crt_mod_nsquare(self, x_p2: int, x_q2: int) -> int:
        """The x mod N² with ``x ≡ x_p2 (mod p²)`` and ``x ≡ x_q2 (mod q²)``."""
        x_p2 = gmpy2.mpz(x_p2) % self._p2
        h = ((gmpy2.mpz(x_q2) - x_p2) * self._p2_inv) % self._q2
        return int(x_p2 + h * self._p2)

    def pow_n(self, r: int) -> int:
        """``r^N mod N²`` by CRT: exponent reduced mod the group orders p(p−1) and q(q−1).

        ``r`` must be a unit mod N (the exponent reduction is only valid in the unit group).
        """
        r = gmpy2.mpz(r)
        if not 0 < r < self._n or gmpy2.gcd(r, self._n) != 1:
            raise CryptoError("r must be a unit in [1, N)")
        return self.crt_mod_nsquare(
            gmpy2.powmod(r, self._e_p, self._p2), gmpy2.powmod(r, self._e_q, self._q2)
        )

    def nth_root(self, y: int, power: int = 1) -> int:
        """The unique v mod N with ``v^N ≡ y (mod N)``, raised to ``power``, by CRT.

        ``v = y^(N^-1 mod λ(N))``: the randomness recovery of the ZKP (§5.2) and the σ of the
        key proof (§2). ``power`` folds the ZKP's ``v^e`` into the same two half-size
        exponentiations (exponent ``d_p·e mod (p−1)``), so the response costs no extra powmod.
        ``y`` must be a unit mod N, since the exponent reduction holds only in the unit group.
        """
        if self._d_p is None or self._d_q is None:
            raise KeyCheckError("gcd(N, φ(N)) ≠ 1: N-th roots are not unique for this key")
        if power < 0:
            raise CryptoError("power must be non-negative")
        y = gmpy2.mpz(y)
        if gmpy2.gcd(y, self._n) != 1:
            raise CryptoError("N-th root of a non-unit requested: gcd(y, N) ≠ 1")
        return self.crt_mod_n(
            gmpy2.powmod(y % self._p, self._d_p * power % (self._p - 1), self._p),
            gmpy2.powmod(y % self._q, self._d_q * power % (self._q - 1), self._q),
        )

    def new_obfuscator(self) -> Obfuscator:
        """A fresh ``(r, r^N mod N²)`` computed by the owner with CRT."""
        r = random_unit(self.n)
        return Obfuscator(r, self.pow_n(r))

    # -- encryption by the owner (CRT obfuscator)
    def encrypt_residue(self, residue: int, obfuscator: int | None = None) -> int:
        """Encrypt ``0 ≤ m < N``; ``obfuscator`` is a precomputed r^N (else made with CRT)."""
        rn = self.new_obfuscator().rn if obfuscator is None else obfuscator
        return encrypt_residue(self.public_key, residue, rn)

    def encrypt_int(self, fixed: int, obfuscator: int | None = None) -> int:
        """Encrypt a signed fixed-point integer X (plaintext ``X mod N``)."""
        return self.encrypt_residue(to_residue(fixed, self.n), obfuscator)

    def encrypt(self, value: float, obfuscator: int | None = None) -> int:
        """Encrypt a real ``|v| < 2^31`` as ``round(v·2^32) mod N``."""
        return self.encrypt_int(encode_real(value), obfuscator)

    # -- decryption
    def decrypt_residue(self, ciphertext: int) -> int:
        """CRT decryption (phe's ``raw_decrypt``) of a checked ciphertext → residue in [0, N)."""
        check_ciphertext(self.public_key, ciphertext)
        return int(self.private_key.raw_decrypt(int(ciphertext)))

    def decrypt_int(self, ciphertext: int, max_abs: int = MAX_ABS_PLAINTEXT) -> int:
        """Decrypt to a signed X, rejecting ``|X| ≥ max_abs`` (default 2^128)."""
        return decode_residue(self.decrypt_residue(ciphertext), self.n, max_abs)

    def decrypt(self, ciphertext: int) -> float:
        """Decrypt to a real value (``X · 2^-32``), with the 2^128 range check."""
        return decode_real(self.decrypt_int(ciphertext))

    def __repr__(self) -> str:
        return f"<PaillierKeyPair {self.bits} bits>"


def keypair_from_primes(p: int, q: int) -> PaillierKeyPair:
    """Build a key pair from two primes (loading a stored key; tests building bad keys)."""
    if p == q:
        raise KeyCheckError("p and q must differ")
    public_key = phe.PaillierPublicKey(int(p) * int(q))
    return PaillierKeyPair(public_key, phe.PaillierPrivateKey(public_key, int(p), int(q)))


def generate_keypair(bits: int = 2048) -> PaillierKeyPair:
    """A fresh key with N of exactly ``bits`` bits and ``gcd(N, φ(N)) = 1``.

    phe already loops until the length is exact; the loop here re-checks both properties so
    that a change in phe cannot hand out a short modulus (lightphe does, §10).
    """
    if bits % 8 != 0 or bits < 256:
        raise KeyCheckError(f"key size must be a multiple of 8 and ≥ 256 bits, got {bits}")
    for _ in range(_MAX_KEYGEN_ATTEMPTS):
        public_key, private_key = phe.generate_paillier_keypair(n_length=bits)
        n, p, q = public_key.n, private_key.p, private_key.q
        if n.bit_length() == bits and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1:
            return PaillierKeyPair(public_key, private_key)
    raise KeyCheckError(f"could not generate a {bits}-bit key")  # pragma: no cover


# --------------------------------------------------------------------------- randomness


def random_unit(n: int) -> int:
    """A uniform unit in ``[1, N)``."""
    while True:
        r = secrets.randbelow(n - 1) + 1
        if gmpy2.gcd(r, n) == 1:
            return r


def new_obfuscator(public_key: PublicKey) -> Obfuscator:
    """``(r, r^N mod N²)`` with the public key only: one full powmod."""
    r = random_unit(public_key.n)
    return Obfuscator(r, int(gmpy2.powmod(r, public_key.n, public_key.nsquare)))


class ObfuscatorPool:
    """Precomputed obfuscators, so an online encryption costs one multiplication (§10).

    Why: ``r^N mod N²`` does not depend on the plaintext, so it can be computed before the
    market session (the *offline* phase) and while waiting for peers; the online encryption
    is then ``(1 + m·N) · r^N mod N²``, one multiplication. The same entries serve as ZKP
    commitments ``(r, a = r^N)``.

    Rules:
    - :meth:`take` pops an entry, so each is used **once**, for one purpose (an encryption
      *or* a commitment; see :class:`Obfuscator` for why reuse would be fatal);
    - an empty pool never blocks or fails: :meth:`take` computes an entry on the spot and
      counts it in ``misses`` (a slow round is better than a stuck one);
    - ``target`` is the depth that :meth:`fill_one` (one entry per call, for idle time) and
      :meth:`fill_to_target` keep; ``seconds`` is the time spent computing entries *ahead of
      use* (misses are timed by the caller, inside its online step);
    - entries are handed out oldest first; ``hits`` counts those drawn from the pool, and
      ``ahead_hits`` those of them made by a ``fill(..., ahead=True)`` — a day's fill in the
      idle time between intervals (:mod:`privgrid.privacy.paillier.pools`), so a run shows
      that an interval used what the time before it prepared.

    With a :class:`PaillierKeyPair` entries are computed by CRT (owner side, ~0.56 floor);
    with a public key, by one full powmod (the floor). Not thread-safe (the counters): a
    pool is filled and drawn on one thread, the event loop (workers.py takes a proof's
    commitment there before handing the job to a worker).
    """

    def __init__(self, key: PaillierKeyPair | PublicKey, target: int = 0) -> None:
        self._keypair = key if isinstance(key, PaillierKeyPair) else None
        self.public_key: PublicKey = key.public_key if isinstance(key, PaillierKeyPair) else key
        self._entries: deque[Obfuscator] = deque()
        self.target = target
        self.misses = 0  # entries computed on the spot because the pool was empty
        self.made = 0  # entries computed ahead of use
        self.seconds = 0.0  # time spent computing entries ahead of use
        self.hits = 0  # entries drawn from the pool (made ahead of use)
        self.ahead_hits = 0  # of those, entries made by ``fill(..., ahead=True)``
        self._added = 0  # entries stored so far: the next one's sequence number
        self._ahead: deque[int] = deque()  # the sequence numbers of those not drawn yet

    def _make(self) -> Obfuscator:
        if self._keypair is not None:
            return self._keypair.new_obfuscator()
        return new_obfuscator(self.public_key)

    def _add(self, ahead: bool = False) -> float:
        started = time.perf_counter()
        entry = self._make()
        if ahead:  # by its sequence number: entries are stored and drawn in order
            self._ahead.append(self._added)
        self._entries.append(entry)
        self._added += 1
        spent = time.perf_counter() - started
        self.made += 1
        self.seconds += spent
        return spent

    def fill(self, count: int, ahead: bool = False) -> float:
        """Compute and store ``count`` more entries; return the seconds spent.

        Args:
            count: entries to make.
            ahead: mark them as made ahead of a market (a day's fill between intervals):
                drawing one counts in ``ahead_hits``.
        """
        return sum(self._add(ahead) for _ in range(count))

    def fill_to_target(self) -> float:
        """Fill up to ``target`` entries (the offline phase); return the seconds spent."""
        return self.fill(self.deficit)

    def fill_one(self) -> bool:
        """One entry if below ``target`` (idle-time top-up): True if something was done."""
        if len(self._entries) >= self.target:
            return False
        self._add()
        return True

    @property
    def deficit(self) -> int:
        """Entries missing to reach ``target``."""
        return max(0, self.target - len(self._entries))

    def take(self) -> Obfuscator:
        """Remove and return one ``(r, r^N)`` entry (computed on the spot if none is left)."""
        try:
            entry = self._entries.popleft()
        except IndexError:
            self.misses += 1
            return self._make()
        if self._ahead and self._ahead[0] == self.hits:
            self._ahead.popleft()
            self.ahead_hits += 1
        self.hits += 1
        return entry

    def take_rn(self) -> int:
        """Remove one entry and return only ``r^N mod N²`` (for an encryption)."""
        return self.take().rn

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------- ciphertexts


def check_ciphertext(public_key: PublicKey, ciphertext: int, name: str = "ciphertext") -> int:
    """Return ``c`` if it is an int with ``0 < c < N²`` and ``gcd(c, N) = 1``, else raise."""
    if not isinstance(ciphertext, int) or isinstance(ciphertext, bool):
        raise CiphertextError(f"{name} must be an int, got {type(ciphertext).__name__}")
    if not 0 < ciphertext < public_key.nsquare:
        raise CiphertextError(f"{name} out of range: need 0 < c < N²")
    if gmpy2.gcd(ciphertext, public_key.n) != 1:
        raise CiphertextError(f"{name} is not a unit: gcd(c, N) ≠ 1")
    return ciphertext


def ciphertext_to_bytes(public_key: PublicKey, ciphertext: int) -> bytes:
    """A checked ciphertext as fixed-length ``2|N|/8`` big-endian bytes."""
    check_ciphertext(public_key, ciphertext)
    return int_to_fixed(ciphertext, ciphertext_length(public_key))


def ciphertext_from_bytes(public_key: PublicKey, data: bytes, name: str = "ciphertext") -> int:
    """Parse and check a ciphertext: exact length ``2|N|/8``, ``0 < c < N²``, unit mod N."""
    expected = ciphertext_length(public_key)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CiphertextError(f"{name} must be bytes, got {type(data).__name__}")
    if len(data) != expected:
        raise CiphertextError(f"{name} has {len(data)} bytes, expected {expected}")
    return check_ciphertext(public_key, int.from_bytes(data, "big"), name)


def encrypt_residue(public_key: PublicKey, residue: int, obfuscator: int | None = None) -> int:
    """``(1 + m·N) · r^N mod N²`` for ``0 ≤ m < N``; ``obfuscator`` is r^N (else fresh)."""
    n, n2 = public_key.n, public_key.nsquare
    if not isinstance(residue, int) or not 0 <= residue < n:
        raise PlaintextError("plaintext residue must be an int with 0 ≤ m < N")
    rn = new_obfuscator(public_key).rn if obfuscator is None else obfuscator
    if not 0 < rn < n2:
        raise CiphertextError("obfuscator out of range: need 0 < r^N < N²")
    return int(gmpy2.mul(1 + residue * n, rn) % n2)


def encrypt_int(public_key: PublicKey, fixed: int, obfuscator: int | None = None) -> int:
    """Encrypt a signed fixed-point integer X as ``X mod N``."""
    return encrypt_residue(public_key, to_residue(fixed, public_key.n), obfuscator)


def encrypt(public_key: PublicKey, value: float, obfuscator: int | None = None) -> int:
    """Encrypt a real ``|v| < 2^31`` as ``round(v·2^32) mod N`` under a (peer's) public key."""
    return encrypt_int(public_key, encode_real(value), obfuscator)


def add(public_key: PublicKey, *ciphertexts: int) -> int:
    """Homomorphic sum: the product of checked ciphertexts mod N²."""
    if not ciphertexts:
        raise CiphertextError("add needs at least one ciphertext")
    n2 = public_key.nsquare
    acc = gmpy2.mpz(1)
    for i, c in enumerate(ciphertexts):
        acc = acc * check_ciphertext(public_key, c, f"ciphertext {i}") % n2
    return int(acc)


def rerandomise(public_key: PublicKey, ciphertext: int, obfuscator: int | None = None) -> int:
    """Another encryption of the same plaintext: ``c · r^N mod N²``."""
    check_ciphertext(public_key, ciphertext)
    rn = new_obfuscator(public_key).rn if obfuscator is None else obfuscator
    return int(gmpy2.mul(ciphertext, rn) % public_key.nsquare)


# --------------------------------------------------------------------------- phe interop


def encoded_number(public_key: PublicKey, fixed: int) -> phe.EncodedNumber:
    """phe ``EncodedNumber`` of X with the fixed exponent −8 (never phe's float encoding)."""
    return phe.EncodedNumber(public_key, to_residue(fixed, public_key.n), FIXED_EXPONENT)


def to_encrypted_number(public_key: PublicKey, ciphertext: int) -> phe.EncryptedNumber:
    """Wrap a checked ciphertext for phe arithmetic, with the fixed exponent −8.

    phe marks a wrapped ciphertext as not yet obfuscated, so :func:`from_encrypted_number`
    (``be_secure=True``) re-randomises it once more: one extra encryption cost. The protocol's
    hot path uses plain ints and :func:`add` instead.
    """
    check_ciphertext(public_key, ciphertext)
    return phe.EncryptedNumber(public_key, ciphertext, FIXED_EXPONENT)


def from_encrypted_number(number: phe.EncryptedNumber) -> int:
    """The ciphertext of a phe ``EncryptedNumber``, made safe to send.

    Rejects any exponent other than −8 (phe changes it when mixing encodings, and an exponent
    that varies with the value would leak it) and obfuscates before returning.
    """
    if number.exponent != FIXED_EXPONENT:
        raise CiphertextError(
            f"phe exponent {number.exponent} is not the protocol's fixed {FIXED_EXPONENT}"
        )
    return check_ciphertext(number.public_key, int(number.ciphertext(be_secure=True)))
