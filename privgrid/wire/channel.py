"""A participant's secure channel: from MQTT payloads to checked messages, and back.

Inbound, in this order (a failure anywhere raises :class:`Rejected` with the reason):
1. the topic is one of ours, for this run, addressed to us (or a broadcast);
2. the envelope parses, its sender is in the pinned roster and the signature verifies;
3. the envelope agrees with the topic (sender, recipient, kind) and names this run;
4. the kind is registered and the sender's and recipient's roles may use it;
5. duplicates (QoS 1 redelivery: same bytes) are dropped quietly; a *different* message under
   the same (round, kind, sender, recipient) is a replay or an equivocation and is rejected —
   except for the kinds a sender may repeat in a round (``repeatable``: violation reports,
   one per offender), where only the same bytes are a duplicate;
6. sealed bodies are opened with the pair key (X25519 + HKDF, ChaCha20-Poly1305 with the
   envelope's context as associated data), then the body is checked against its schema.

Outbound: seal the body if the kind is sealed, sign the envelope, pick the topic.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from privgrid.crypto.errors import CryptoError
from privgrid.crypto.identity import Identity, Roster
from privgrid.crypto.sealing import (
    AgreementKey,
    associated_data,
    mask_key,
    pair_key,
    seal,
    unseal,
)
from privgrid.wire import kinds, topics
from privgrid.wire.body import Body
from privgrid.wire.envelope import Rejected, open_envelope, seal_envelope
from privgrid.wire.kinds import Kind, body_of

B = TypeVar("B", bound=Body)


class Duplicate(Rejected):
    """The same message again (QoS 1 may deliver twice): ignored without noise."""


class UnknownPeer(Rejected):
    """A sealed message from a participant whose key announcement we have not accepted (yet):
    it cannot be opened. Expected for messages the broker queued for a restarted participant
    before the peers' announcements reach it; the runtime decides how loud to be. Not
    counted as ``rejected`` here (the runtime counts the unexpected ones)."""


class NotForMe(Duplicate):
    """A message on a shared topic (the coalition's) addressed to someone else: ignored."""


class Conflict(Rejected):
    """Two different signed messages under one (round, kind, sender, recipient): the sender
    equivocated or someone replays; both envelopes are the evidence."""

    def __init__(self, reason: str, sender: str, round_: int, evidence: list[bytes]) -> None:
        super().__init__(reason, sender)
        self.round = round_
        self.evidence = evidence


@dataclass(frozen=True)
class Message:
    """A verified, opened, schema-checked message; its kind follows from its body's type."""

    round: int
    sender: str
    recipient: str
    body: Body
    raw: bytes  # the signed envelope, kept as evidence for violation reports

    @property
    def kind(self) -> Kind:
        return self.body.KIND

    def expect(self, body_type: type[B]) -> B:
        """The body, if it is a ``body_type``; else :class:`Rejected` (an unexpected kind)."""
        if not isinstance(self.body, body_type):
            raise Rejected(f"unexpected {self.kind}", self.sender)
        return self.body


@dataclass(frozen=True)
class Outgoing:
    """A message a node wants sent; the channel seals, signs and addresses it.

    Sealing takes fresh randomness, so the same message encoded twice would differ in its
    bytes — and a receiver takes a second, different message of the same round, kind and pair
    for a replay (a violation). A node that sends a message again (its last report to a peer
    that lost it) therefore sends the very bytes of the first time: ``wire`` keeps them.
    """

    recipient: str  # a participant id, or topics.BROADCAST
    round: int
    body: Body
    retain: bool = False
    #: (sender, run, topic, payload) once encoded; filled by :meth:`Channel.encode`.
    wire: list[tuple[str, str, str, bytes]] = field(default_factory=list, compare=False, repr=False)

    @property
    def kind(self) -> Kind:
        return self.body.KIND

    def to_state(self) -> list[Any]:
        """For a checkpoint: ``[kind, recipient, round, body map]`` (msgpack-able)."""
        return [str(self.kind), self.recipient, self.round, self.body.to_body()]

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> Outgoing:
        """The message :meth:`to_state` saved (its body checked against its kind's schema);
        it will be sealed afresh when sent."""
        kind, recipient, round_, fields = state
        return cls(str(recipient), int(round_), body_of(str(kind), fields))


def pack_body(body: Mapping[str, Any]) -> bytes:
    return msgpack.packb(dict(body), use_bin_type=True)


def unpack_body(raw: bytes, sender: str, kind: str) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as exc:  # garbage raises many types
        raise Rejected(f"{kind} body is not msgpack ({type(exc).__name__})", sender) from None


class Channel:
    """Sealing, signing and checking for one participant in one run."""

    def __init__(
        self,
        me: str,
        run: str,
        identity: Identity,
        roster: Roster,
        roles: Mapping[str, str],
        agreement: AgreementKey | None = None,
    ) -> None:
        self.me = me
        self.run = run
        self.identity = identity
        self.roles = dict(roles)
        self.keys = {pid: roster.public_key(pid) for pid in roster}
        self.agreement = agreement or AgreementKey.generate()
        self.coalition: str | None = None  # set for colluders (the attack experiment)
        self._peer_x25519: dict[str, bytes] = {}
        self._pair_keys: dict[str, bytes] = {}
        self._mask_keys: dict[str, bytes] = {}
        #: (round, kind, sender, recipient[, digest of a repeatable kind]) → accepted payload
        self._seen: dict[tuple[Any, ...], bytes] = {}
        self._pruned = 0
        self.stats = {"sent": 0, "sent_bytes": 0, "received": 0, "received_bytes": 0, "rejected": 0}
        self.crypto_seconds = 0.0

    # -- keys ---------------------------------------------------------------------------
    @property
    def x25519_public(self) -> bytes:
        return self.agreement.public_bytes()

    def learn_agreement_key(self, participant: str, public: bytes) -> None:
        """Record a peer's X25519 key from its accepted announcement."""
        self._peer_x25519[participant] = public
        self._pair_keys.pop(participant, None)
        self._mask_keys.pop(participant, None)

    def mask_key(self, peer: str) -> bytes:
        """``k_mask`` with ``peer`` for the LM's masked aggregation (protocol.md §6.2).

        Kept until the peer announces a new agreement key: every agent needs one per other
        agent every round, and an X25519 exchange with HKDF each time was most of a plain
        round's crypto on a 40-agent grid (docs/performance.md, the wire profile)."""
        key = self._mask_keys.get(peer)
        if key is None:
            public = self._peer_x25519.get(peer)
            if public is None:
                raise UnknownPeer(f"no key announcement from {peer} yet", peer)
            key = self._mask_keys[peer] = mask_key(self.agreement, self.me, peer, public, self.run)
        return key

    def _pair_key(self, peer: str) -> bytes:
        key = self._pair_keys.get(peer)
        if key is None:
            public = self._peer_x25519.get(peer)
            if public is None:
                raise UnknownPeer(f"no key announcement from {peer} yet", peer)
            key = pair_key(self.agreement, self.me, peer, public, self.run)
            self._pair_keys[peer] = key
        return key

    # -- outbound -------------------------------------------------------------------------
    def encode(self, out: Outgoing) -> tuple[str, bytes]:
        """Topic and signed envelope of ``out``; the same bytes again when it is re-sent."""
        for sender, run, topic, payload in out.wire:
            if (sender, run) == (self.me, self.run):
                self.stats["sent"] += 1
                self.stats["sent_bytes"] += len(payload)
                return topic, payload
        topic, payload = self._encode(out)
        out.wire.append((self.me, self.run, topic, payload))
        return topic, payload

    def _encode(self, out: Outgoing) -> tuple[str, bytes]:
        spec = kinds.KINDS[out.kind]
        started = time.perf_counter()
        if spec.sealed:
            ad = associated_data(self.run, out.round, self.me, out.recipient, out.kind)
            body = seal(self._pair_key(out.recipient), out.body.to_body(), ad)
        else:
            body = pack_body(out.body.to_body())
        payload = seal_envelope(
            self.identity,
            kind=out.kind,
            run=self.run,
            round=out.round,
            sender=self.me,
            recipient=out.recipient,
            body=body,
        )
        self.crypto_seconds += time.perf_counter() - started
        if out.kind == Kind.KEY:
            topic = topics.keys(self.run, self.me)
        elif spec.coalition:
            if self.coalition is None:
                raise ValueError(f"{self.me} is not in a coalition")
            topic = topics.collusion(self.run, self.coalition)
        elif spec.is_broadcast:
            topic = topics.broadcast(self.run, self.me, out.kind)
        else:
            topic = topics.direct(self.run, out.recipient, self.me, out.kind)
        self.stats["sent"] += 1
        self.stats["sent_bytes"] += len(payload)
        return topic, payload

    # -- inbound --------------------------------------------------------------------------
    def decode(self, topic: str, payload: bytes) -> Message:
        self.stats["received"] += 1
        self.stats["received_bytes"] += len(payload)
        try:
            return self._decode(topic, payload)
        except (Duplicate, UnknownPeer):
            raise
        except Rejected:
            self.stats["rejected"] += 1
            raise

    def _decode(self, topic: str, payload: bytes) -> Message:
        where = topics.parse(topic)
        if where is None or where.run != self.run:
            raise Rejected(f"topic {topic!r} is not for run {self.run}")
        shared = where.kind == "collusion"  # one topic for the coalition: sender in envelope
        if where.recipient not in (self.me, topics.BROADCAST):
            raise Rejected(f"topic {topic!r} is addressed to {where.recipient}", where.sender)
        started = time.perf_counter()
        try:
            env = open_envelope(payload, self.keys)
        except Rejected as exc:  # unparseable: name the sender the topic claims
            raise Rejected(exc.reason, exc.sender or where.sender) from None
        finally:
            self.crypto_seconds += time.perf_counter() - started
        if env.run != self.run:
            raise Rejected(f"envelope is for run {env.run!r}", env.sender)
        spec = kinds.KINDS.get(env.kind)
        if shared:
            if spec is None or not spec.coalition:
                raise Rejected(f"{env.kind} does not belong on the coalition topic", env.sender)
            if env.recipient != self.me:
                raise NotForMe(f"coalition message for {env.recipient}", env.sender)
        elif (env.sender, env.recipient, env.kind) != (where.sender, where.recipient, where.kind):
            raise Rejected("envelope sender/recipient/kind differ from the topic", env.sender)
        if spec is None:
            raise Rejected(f"unknown message kind {env.kind!r}", env.sender)
        role = self.roles.get(env.sender)
        if role not in spec.senders:
            raise Rejected(f"{env.sender} (role {role}) may not send {env.kind}", env.sender)
        if spec.is_broadcast != (env.recipient == topics.BROADCAST) or (
            not spec.is_broadcast and self.roles.get(env.recipient) not in spec.recipients
        ):
            raise Rejected(f"{env.kind} may not be sent to {env.recipient}", env.sender)
        key: tuple[Any, ...] = (env.round, env.kind, env.sender, env.recipient)
        if spec.repeatable:  # each different message is its own; the same bytes a duplicate
            key += (hashlib.sha256(payload).digest(),)
        seen = self._seen.get(key)
        if seen == payload:
            raise Duplicate("duplicate delivery", env.sender)
        if seen is not None and env.kind != Kind.KEY:
            raise Conflict(
                f"replayed or conflicting {env.kind} for round {env.round} "
                "(same round/kind/pair, different body)",
                env.sender,
                env.round,
                [seen, payload],
            )
        if spec.sealed:
            ad = associated_data(self.run, env.round, env.sender, env.recipient, env.kind)
            started = time.perf_counter()
            try:
                fields = unseal(self._pair_key(env.sender), env.body, ad)
            except CryptoError as exc:
                raise Rejected(f"cannot open sealed {env.kind}: {exc.reason}", env.sender) from None
            finally:
                self.crypto_seconds += time.perf_counter() - started
        else:
            fields = unpack_body(env.body, env.sender, env.kind)
        body = spec.body_type.from_body(fields, sender=env.sender)
        self._seen[key] = payload
        return Message(env.round, env.sender, env.recipient, body, payload)

    def forget_sender(self, sender: str) -> None:
        """A peer restarted from its checkpoint: what it sends now may differ in its bytes
        (fresh randomness) from what it sent before the crash for the same round, so its
        duplicate-detection state starts over. Its announcements are kept."""
        self._seen = {k: v for k, v in self._seen.items() if k[2] != sender or k[1] == Kind.KEY}

    def forget_rounds_before(self, round_: int) -> None:
        """Drop duplicate-detection state of old rounds (bounded memory on long runs)."""
        if round_ <= self._pruned:
            return
        self._pruned = round_
        self._seen = {k: v for k, v in self._seen.items() if k[0] >= round_ or k[1] == Kind.KEY}
