"""Checkpoints: what a participant needs to rejoin a run after a crash (docs/reliability.md).

One file per participant and run, ``<state dir>/<run>/<id>.state``, rewritten at the end of
every round:

- **atomic**: written to a temporary sibling (mode 0600), fsynced, renamed over the old one,
  and the directory fsynced — a crash at any instant leaves the previous or the new checkpoint,
  never a mix;
- **sealed**: the whole content is ChaCha20-Poly1305-encrypted under a key derived from the
  participant's identity key (:meth:`Identity.derive_key`) with run and id as associated data.
  The checkpoint holds the session keys (X25519, Paillier) and the negotiation state (trades,
  prices), so the identity key file stays the only secret on disk in the clear, and a
  checkpoint cannot be moved to another run or participant;
- **checked**: a file that does not open, belongs to another run or scenario, or has an
  unknown version is refused with :class:`StateError` naming the file and the reason.

The content is a msgpack map; numpy arrays travel as lists of floats (exact: float64 →
msgpack float64). Big integers (Paillier primes) are bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from privgrid.crypto.identity import Identity

VERSION = 1
_LABEL = b"privgrid checkpoint v1"
_NONCE = 12


class StateError(ValueError):
    """A checkpoint cannot be used; the message names the file and the reason."""


def scenario_digest(text: bytes) -> str:
    """Fingerprint of the scenario a checkpoint was taken under (a resume needs the same)."""
    return hashlib.sha256(text).hexdigest()[:32]


class CheckpointStore:
    """Save and load one participant's sealed checkpoint for one run."""

    def __init__(
        self, folder: Path, run: str, me: str, identity: Identity, scenario: str = ""
    ) -> None:
        self.path = folder / run / f"{me}.state"
        self.run = run
        self.me = me
        self.scenario = scenario
        self._ad = f"{run}\x00{me}".encode()
        self._key = identity.derive_key(_LABEL, self._ad)

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, content: Mapping[str, Any]) -> None:
        """Replace the checkpoint atomically."""
        record = {"v": VERSION, "run": self.run, "me": self.me, "scenario": self.scenario}
        payload = msgpack.packb({**record, "content": dict(content)}, use_bin_type=True)
        nonce = os.urandom(_NONCE)
        sealed = nonce + ChaCha20Poly1305(self._key).encrypt(nonce, payload, self._ad)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, sealed)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self) -> dict[str, Any] | None:
        """The checkpoint's content, or None if there is none. Refuses anything doubtful."""
        try:
            sealed = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read the checkpoint ({exc})") from None
        if len(sealed) <= _NONCE + 16:
            raise StateError(f"{self.path}: the checkpoint is truncated")
        try:
            payload = ChaCha20Poly1305(self._key).decrypt(
                sealed[:_NONCE], sealed[_NONCE:], self._ad
            )
        except InvalidTag:
            raise StateError(
                f"{self.path}: the checkpoint does not open with {self.me}'s identity key "
                f"for run {self.run} (another participant's or run's file, or damaged)"
            ) from None
        try:
            data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as exc:  # sealed, so only a bug gets here; still report it cleanly
            raise StateError(f"{self.path}: the checkpoint is not msgpack ({exc})") from None
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise StateError(f"{self.path}: unsupported checkpoint version {data.get('v')!r}")
        if self.scenario and data.get("scenario") != self.scenario:
            raise StateError(
                f"{self.path}: the checkpoint was taken under a different scenario file; "
                "a run can only resume with the scenario it started with"
            )
        content = data.get("content")
        if not isinstance(content, dict):
            raise StateError(f"{self.path}: the checkpoint has no content")
        return content
