"""Pair keys, sealed fields and LM masks from X25519 (protocol.md §6.1 and §6.2).

Why sealing: the ZKP reveals x to anyone who can guess it (§5.4), and the broker is untrusted,
so message 3 and every plaintext price or trade travel encrypted to the one peer allowed to
read them. Each process makes a fresh X25519 agreement key per run (announced with its
Paillier key); two participants n, m derive the same symmetric keys without further messages.

Encodings (the spec gives the fields; ``lp`` makes them unambiguous):
- pair key  ``k_nm = HKDF-SHA256(ikm = X25519(sk_n, pk_m), salt = UTF-8(run),
  info = lp("privgrid/pair/v1") ‖ lp(min(n, m)) ‖ lp(max(n, m)))``, 32 bytes. min/max compare
  the UTF-8 bytes of the ids (same order as code points), so ``k_nm = k_mn``;
- mask key  the same with label ``"privgrid/mask/v1"`` (an independent key from the same secret);
- sealed    ``nonce (12 random bytes) ‖ ChaCha20-Poly1305(k, nonce, msgpack(fields), AD)``;
- AD        ``lp(run) ‖ lp(str(k)) ‖ lp(sender) ‖ lp(recipient) ‖ lp(kind)``, binding the
  ciphertext to its envelope so it cannot be replayed in another round, direction or kind;
- mask      ``M = int(HMAC-SHA256(k_mask, lp(run) ‖ lp(str(k)) ‖ lp(str(line)))[:8])``, an
  unsigned 64-bit integer (big-endian).

Random 96-bit nonces are safe here: a pair key lives for one run and seals a few messages per
round, far below the ~2^32 messages where nonce collisions become a concern.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privgrid.crypto.errors import SealError
from privgrid.crypto.framing import lp, lp_all

PAIR_KEY_LABEL = b"privgrid/pair/v1"
MASK_KEY_LABEL = b"privgrid/mask/v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
X25519_PUBLIC_BYTES = 32
MASK_MODULUS = 1 << 64


class AgreementKey:
    """A process's X25519 key for one run (never reused across runs; stored only sealed in
    the participant's own checkpoint, so that a restart rejoins the same run with it)."""

    __slots__ = ("_key",)

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> AgreementKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> AgreementKey:
        if not isinstance(raw, bytes | bytearray) or len(raw) != 32:
            raise SealError("X25519 private key must be 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(bytes(raw)))

    def private_bytes(self) -> bytes:
        """The 32 raw private-key bytes (for the sealed checkpoint only)."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_bytes(self) -> bytes:
        """The 32 raw public-key bytes (the announcement's ``x25519_pub``)."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def exchange(self, peer_public: bytes) -> bytes:
        """Raw X25519 shared secret with a peer's 32-byte public key."""
        if not isinstance(peer_public, bytes | bytearray) or len(peer_public) != 32:
            raise SealError(f"X25519 public key must be {X25519_PUBLIC_BYTES} bytes")
        try:
            return self._key.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))
        except ValueError as exc:  # all-zero result: a low-order (malicious) public key
            raise SealError("X25519 agreement failed: peer public key is invalid") from exc


def _ordered_ids(a: str, b: str) -> tuple[bytes, bytes]:
    """The two ids as UTF-8, smaller first; a pair needs two distinct ids."""
    if not a or not b:
        raise SealError("participant ids must be non-empty")
    ea, eb = a.encode("utf-8"), b.encode("utf-8")
    if ea == eb:
        raise SealError(f"a pair key needs two different participants, got {a!r} twice")
    return (ea, eb) if ea < eb else (eb, ea)


def _derive(
    label: bytes, agreement: AgreementKey, own_id: str, peer_id: str, peer_public: bytes, run: str
) -> bytes:
    low, high = _ordered_ids(own_id, peer_id)
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=run.encode("utf-8"),
        info=lp_all((label, low, high)),
    )
    return hkdf.derive(agreement.exchange(peer_public))


def pair_key(
    agreement: AgreementKey, own_id: str, peer_id: str, peer_public: bytes, run: str
) -> bytes:
    """``k_nm``: the 32-byte sealing key shared by ``own_id`` and ``peer_id`` in ``run``."""
    return _derive(PAIR_KEY_LABEL, agreement, own_id, peer_id, peer_public, run)


def mask_key(
    agreement: AgreementKey, own_id: str, peer_id: str, peer_public: bytes, run: str
) -> bytes:
    """``k_mask_nm``: the 32-byte key of the LM masks between two agents (§6.2)."""
    return _derive(MASK_KEY_LABEL, agreement, own_id, peer_id, peer_public, run)


def associated_data(run: str, round: int, sender: str, recipient: str, kind: str) -> bytes:
    """``lp(run) ‖ lp(str(k)) ‖ lp(sender) ‖ lp(recipient) ‖ lp(kind)``."""
    return lp_all((run, str(round), sender, recipient, kind))


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise SealError(f"sealing key must be {KEY_BYTES} bytes")


def seal(key: bytes, fields: Mapping[str, Any], ad: bytes) -> bytes:
    """``nonce ‖ ChaCha20-Poly1305(key, nonce, msgpack(fields), ad)``.

    Big integers must be given as bytes (msgpack has no integers above 64 bits).
    """
    _check_key(key)
    try:
        payload = msgpack.packb(dict(fields), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SealError(f"fields cannot be encoded with msgpack: {exc}") from exc
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(bytes(key)).encrypt(nonce, payload, bytes(ad))


def unseal(key: bytes, sealed: bytes, ad: bytes) -> dict[str, Any]:
    """Authenticate and decrypt a sealed field; any failure raises :class:`SealError`."""
    _check_key(key)
    if not isinstance(sealed, bytes | bytearray) or len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise SealError("sealed value is too short to hold a nonce and a tag")
    nonce, body = bytes(sealed[:NONCE_BYTES]), bytes(sealed[NONCE_BYTES:])
    try:
        payload = ChaCha20Poly1305(bytes(key)).decrypt(nonce, body, bytes(ad))
    except InvalidTag as exc:
        raise SealError(
            "authentication failed: wrong key, wrong associated data or tampered ciphertext"
        ) from exc
    try:
        fields = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise SealError(f"sealed payload is not valid msgpack: {exc}") from exc
    if not isinstance(fields, dict):
        raise SealError("sealed payload is not a map")
    return fields


def masks(k_mask: bytes, run: str, round: int, lines: Sequence[str]) -> list[int]:
    """Every line's mask ``M_l`` of one agent pair in one round, from one PRF call.

    ``seed = HMAC-SHA256(k_mask, lp(run) ‖ lp(str(k)) ‖ lp(l_1) ‖ … ‖ lp(l_L))``, then
    ``SHAKE-256(seed)`` read as L big-endian uint64 values, one per line in the given order.
    The seed binds the run, the round and the very list of lines, so no two (round, line set)
    share a stream. Why not one HMAC per line: with every agent masking for every other agent
    on every limited line, that was ~4 ms of an agent's CPU a round on a 28-household feeder
    with 40 lines — most of a plain day's round over the wire (docs/performance.md).
    """
    return [int(x) for x in _mask_stream(k_mask, lp(run) + lp(str(round)) + lp_all(lines), lines)]


def _mask_stream(k_mask: bytes, framed: bytes, lines: Sequence[str]) -> np.ndarray:
    _check_key(k_mask)
    seed = hmac.digest(bytes(k_mask), framed, "sha256")
    return np.frombuffer(hashlib.shake_256(seed).digest(8 * len(lines)), dtype=">u8")


def net_masks(
    own_id: str, mask_keys: Mapping[str, bytes], run: str, round: int, lines: Sequence[str]
) -> list[int]:
    """Per line, ``Σ_{m>n} M_nm − Σ_{m<n} M_mn mod 2^64``: what agent n adds to its value.

    ``mask_keys`` maps every *other* agent m to ``k_mask_nm``; the order is the UTF-8 byte
    order of the ids, as for the pair keys. Over all agents the net masks sum to 0 mod 2^64
    on every line (every agent must pass the same lines in the same order).
    """
    own = own_id.encode("utf-8")
    framed = lp(run) + lp(str(round)) + lp_all(lines)
    totals = np.zeros(len(lines), dtype=np.uint64)  # uint64 arithmetic wraps: mod 2^64
    for peer_id, k_mask in mask_keys.items():
        peer = peer_id.encode("utf-8")
        if peer == own:
            raise SealError("mask_keys must not contain the agent itself")
        stream = _mask_stream(k_mask, framed, lines).astype(np.uint64)
        if peer > own:
            totals += stream
        else:
            totals -= stream
    return [int(x) for x in totals]
