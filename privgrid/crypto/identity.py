"""Ed25519 identities and the pinned roster (protocol.md §2, "Authenticity").

Every participant has one long-lived Ed25519 key that signs its envelopes and its key
announcements. Public keys are pinned: the scenario names a roster (id → public key) and a
process starts only if its own private key matches its roster entry. Trust-on-first-use is
not allowed, so there is deliberately no "learn a key from the network" function here.

Formats (the spec fixes only the public-key encoding):
- public key: standard base64 (with padding) of the 32 raw bytes;
- private key file: unencrypted PKCS#8 PEM (readable by OpenSSL), created with mode 0600 via
  ``os.open(..., 0o600)`` so it is never readable by others, not even between create and
  chmod. Loading refuses a file that group or others can access (like ssh does), unless the
  caller opts out for an environment that cannot keep modes (``require_private_mode=False``);
- roster file: JSON ``{"version": 1, "participants": {"<id>": "<base64 public key>", ...}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError, CryptoError

from privgrid.crypto.errors import IdentityError, SignatureError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
ROSTER_VERSION = 1
PRIVATE_FILE_MODE = 0o600


def public_key_to_b64(public_key: Ed25519PublicKey) -> str:
    """Base64 of the 32 raw public-key bytes (the roster's encoding)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Parse a roster public key; strict base64 of exactly 32 bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise SignatureError(f"public key is not valid base64: {exc}") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise SignatureError(f"public key must be {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_signature(public_key: Ed25519PublicKey | str, message: bytes, signature: bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is valid for ``message``.

    Keys are ``cryptography`` objects (files, roster, TLS); the check itself is libsodium's
    (PyNaCl), which takes half the CPU of OpenSSL's on every message a participant receives
    (105 → 50 µs, docs/performance.md "The wire path"). It accepts every signature an honest
    signer makes and is stricter than RFC 8032 requires (it also refuses small-order keys and
    non-canonical points), so nothing OpenSSL would refuse gets through.
    """
    key = public_key_from_b64(public_key) if isinstance(public_key, str) else public_key
    if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"signature must be {SIGNATURE_BYTES} bytes")
    try:
        crypto_sign_open(bytes(signature) + bytes(message), _raw(key))
    except (BadSignatureError, CryptoError) as exc:
        raise SignatureError("signature does not verify under the given public key") from exc


class Identity:
    """One participant's Ed25519 signing key."""

    __slots__ = ("_key", "_secret")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        seed = private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        #: libsodium's form of the same key (seed ‖ public key), for :meth:`sign`.
        self._secret = crypto_sign_seed_keypair(seed)[1]

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    @property
    def public_b64(self) -> str:
        return public_key_to_b64(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """64-byte Ed25519 signature of ``message`` (libsodium's: deterministic, so the same
        bytes as OpenSSL's for the same key, at two thirds of its CPU)."""
        return crypto_sign(bytes(message), self._secret)[:SIGNATURE_BYTES]

    def derive_key(self, label: bytes, context: bytes = b"") -> bytes:
        """A 32-byte symmetric key bound to this identity (HKDF-SHA256 of the private key).

        Used to seal what a participant must keep across a restart (its checkpoint): only the
        holder of the identity key file can open it, so the key file stays the only secret
        on disk in the clear. ``label`` separates uses; ``context`` binds run and id.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        raw = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return HKDF(hashes.SHA256(), 32, salt=label, info=context).derive(raw)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the private key as PKCS#8 PEM to a file created with mode 0600.

        The file is created by ``os.open`` with mode 0o600 (``O_EXCL``: never an existing
        file whose mode we do not control). With ``overwrite`` a temporary sibling is written
        the same way and renamed over the target.
        """
        target = Path(path)
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        if target.exists() and not overwrite:
            raise IdentityError(f"identity file {target} already exists")
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}") if overwrite else target
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(tmp, flags, PRIVATE_FILE_MODE)
        except FileExistsError as exc:
            raise IdentityError(f"identity file {tmp} already exists") from exc
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # umask may only clear bits; make it exact
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if overwrite:
            os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, require_private_mode: bool = True) -> Identity:
        """Read a private key written by :meth:`save`; refuse a group/world-accessible file."""
        target = Path(path)
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
            data = target.read_bytes()
        except OSError as exc:
            raise IdentityError(f"cannot read identity file {target}: {exc}") from exc
        if require_private_mode and mode & 0o077:
            raise IdentityError(
                f"identity file {target} has mode {mode:04o}; it must not be accessible "
                "to group or others (chmod 600)"
            )
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"identity file {target} is not a PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"identity file {target} does not hold an Ed25519 key")
        return cls(key)


class Roster(Mapping[str, str]):
    """The pinned map participant id → Ed25519 public key (base64), read from the scenario."""

    def __init__(self, entries: Mapping[str, str] | None = None) -> None:
        self._entries: dict[str, str] = {}
        for participant, public in (entries or {}).items():
            self.add(participant, public)

    def add(self, participant: str, public_key: str | Ed25519PublicKey) -> None:
        """Pin a participant's key; a different key for a pinned id is an error."""
        if not isinstance(participant, str) or not participant:
            raise IdentityError("participant id must be a non-empty string")
        text = public_key if isinstance(public_key, str) else public_key_to_b64(public_key)
        try:
            public_key_from_b64(text)
        except SignatureError as exc:
            raise IdentityError(f"roster entry {participant!r}: {exc.reason}") from exc
        if self._entries.get(participant, text) != text:
            raise IdentityError(f"roster already pins a different key for {participant!r}")
        self._entries[participant] = text

    def __getitem__(self, participant: str) -> str:
        return self._entries[participant]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def public_key(self, participant: str) -> Ed25519PublicKey:
        """The pinned key of ``participant``; unknown ids are an error (no TOFU)."""
        if participant not in self._entries:
            raise IdentityError(f"participant {participant!r} is not in the roster")
        return public_key_from_b64(self._entries[participant])

    def verify(self, participant: str, message: bytes, signature: bytes) -> None:
        """Verify a signature by ``participant`` against its pinned key."""
        verify_signature(self.public_key(participant), message, signature)

    def check_identity(self, participant: str, identity: Identity) -> None:
        """Refuse to start unless our private key matches our roster entry (§2)."""
        if public_key_to_b64(self.public_key(participant)) != identity.public_b64:
            raise IdentityError(f"private key does not match the roster entry of {participant!r}")

    # -- JSON
    def to_json(self) -> str:
        return json.dumps(
            {"version": ROSTER_VERSION, "participants": dict(sorted(self._entries.items()))},
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Roster:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IdentityError(f"roster is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != ROSTER_VERSION:
            raise IdentityError(f"roster must be an object with version {ROSTER_VERSION}")
        participants = data.get("participants")
        if not isinstance(participants, dict) or not all(
            isinstance(v, str) for v in participants.values()
        ):
            raise IdentityError("roster 'participants' must map ids to base64 strings")
        return cls(participants)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Roster:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise IdentityError(f"cannot read roster {path}: {exc}") from exc
        return cls.from_json(text)
