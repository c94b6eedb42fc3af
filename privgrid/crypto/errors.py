"""Exceptions raised by the crypto package.

Why a hierarchy: a message from the network must never crash a process (protocol.md §4.3). A
caller that handles untrusted input catches :class:`CryptoError` once, logs ``reason`` and
reports a protocol violation; a caller that wants to tell failures apart catches a subclass.
Every error carries a human-readable ``reason`` naming the check that failed.

``CryptoError`` derives from ``ValueError`` because every failure here is a bad value (a
ciphertext out of range, a proof that does not verify, a key of the wrong size), never an
environment problem.
"""

from __future__ import annotations


class CryptoError(ValueError):
    """Base class: a value failed a cryptographic check. ``reason`` says which one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PlaintextError(CryptoError):
    """A plaintext is outside the fixed-point range (protocol.md §3)."""


class CiphertextError(CryptoError):
    """A Paillier ciphertext is malformed: wrong length, out of range or not a unit."""


class ContractError(CiphertextError):
    """An input of the pair contract (protocol.md §4.2) failed its checks."""


class PackingError(CryptoError):
    """Values do not fit the packing layout, or a packed plaintext does not unpack cleanly."""


class ProofError(CryptoError):
    """A proof of correct decryption (protocol.md §5) does not verify."""


class KeyCheckError(CryptoError):
    """A Paillier key announcement fails a check of protocol.md §2 (size, factors, key proof)."""


class SealError(CryptoError):
    """Sealing or unsealing a private field failed (protocol.md §6.1)."""


class SignatureError(CryptoError):
    """An Ed25519 signature does not verify, or a public key / signature is malformed."""


class IdentityError(CryptoError):
    """An identity key file or roster is unusable (missing, malformed, wrong mode, mismatch)."""
