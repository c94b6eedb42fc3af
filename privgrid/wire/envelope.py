"""The signed msgpack envelope every message travels in (architecture.md §3, protocol.md §6.1).

Wire form: a msgpack map ``{v, kind, run, round, sender, recipient, body, sig}``. ``body`` is
bytes — a msgpack map for public bodies, a sealed blob for private ones — so the signature
covers exactly the bytes that travel. The signature is Ed25519 over the canonical msgpack
array ``[v, kind, run, round, sender, recipient, body]`` (an array, so no key order matters).

Decoding is strict and bounded: sizes are capped before anything is allocated, every field's
type is checked, and the signature is verified against the pinned roster *before* the body is
looked at. Any failure raises :class:`Rejected` with a reason and, when known, the claimed
sender — never anything else — so a receiver logs one line and carries on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from privgrid.crypto.errors import SignatureError
from privgrid.crypto.identity import Identity, verify_signature

VERSION = 1
MAX_ENVELOPE_BYTES = 1 << 20  # 1 MiB: far above any legitimate message
MAX_ROUND = (1 << 31) - 1
_FIELDS = ("v", "kind", "run", "round", "sender", "recipient", "body", "sig")


class Rejected(ValueError):  # noqa: N818 — a verdict on a message, not a program error
    """A message was dropped. ``reason`` says why; ``sender`` is who it claimed to be from."""

    def __init__(self, reason: str, sender: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sender = sender


@dataclass(frozen=True)
class Envelope:
    v: int
    kind: str
    run: str
    round: int
    sender: str
    recipient: str
    body: bytes
    sig: bytes = b""

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers."""
        return msgpack.packb(
            [self.v, self.kind, self.run, self.round, self.sender, self.recipient, self.body],
            use_bin_type=True,
        )

    def to_wire(self) -> bytes:
        return msgpack.packb({name: getattr(self, name) for name in _FIELDS}, use_bin_type=True)


def seal_envelope(
    identity: Identity,
    *,
    kind: str,
    run: str,
    round: int,
    sender: str,
    recipient: str,
    body: bytes,
) -> bytes:
    """Build, sign and encode an envelope."""
    env = Envelope(VERSION, kind, run, round, sender, recipient, body)
    signature = identity.sign(env.signed_bytes())
    return Envelope(VERSION, kind, run, round, sender, recipient, body, signature).to_wire()


def _unpack(raw: bytes) -> dict[str, object]:
    if not isinstance(raw, bytes | bytearray):
        raise Rejected("payload is not bytes")
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise Rejected(f"envelope of {len(raw)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    try:
        data = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_ENVELOPE_BYTES,
            max_str_len=1024,
            max_array_len=16,
            max_map_len=16,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise Rejected(f"not a msgpack envelope ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise Rejected("envelope is not a msgpack map")
    return data


def open_envelope(raw: bytes, keys: Mapping[str, Ed25519PublicKey]) -> Envelope:
    """Parse and authenticate an envelope against the roster's public keys.

    Checks, in order: structure and types; the sender is in the roster; the signature. What the
    message means (run, recipient, round, body) is the caller's next step.
    """
    data = _unpack(raw)
    sender = data.get("sender")
    claimed = sender if isinstance(sender, str) else None
    if set(data) != set(_FIELDS):
        raise Rejected(f"envelope fields {sorted(data)} differ from {list(_FIELDS)}", claimed)
    types = {
        "v": int,
        "kind": str,
        "run": str,
        "round": int,
        "sender": str,
        "recipient": str,
        "body": bytes,
        "sig": bytes,
    }
    for name, expected in types.items():
        value = data[name]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise Rejected(f"field {name!r} is not {expected.__name__}", claimed)
    if data["v"] != VERSION:
        raise Rejected(f"unsupported envelope version {data['v']}", claimed)
    round_ = data["round"]
    if not isinstance(round_, int) or not 0 <= round_ <= MAX_ROUND:  # an int: checked above
        raise Rejected(f"round {round_} out of range", claimed)
    env = Envelope(**data)  # type: ignore[arg-type]
    key = keys.get(env.sender)
    if key is None:
        raise Rejected("sender is not in the roster", claimed)
    try:
        verify_signature(key, env.signed_bytes(), env.sig)
    except SignatureError as exc:
        raise Rejected(f"bad signature: {exc.reason}", claimed) from None
    return env
