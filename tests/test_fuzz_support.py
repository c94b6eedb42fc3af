"""The fuzzer of tests/test_fuzz_*.py (no tests here): malformed envelopes and how to count them.

Kept in a ``test_fuzz*`` module, like ``test_ledger_support.py``: pytest collects it and finds
nothing to run.

A :class:`Fuzzer` builds :class:`Case` objects — an MQTT topic, a payload, who receives it,
and where it must be stopped:

- ``wire``: the receiver's channel rejects it (bad bytes, envelope, signature, run, kind, role,
  seal or body schema). The runtime logs ``dropped message from <sender> on <topic>: <reason>``
  and counts it in the channel's ``rejected`` statistic.
- ``round``: it is a correctly signed message of a round that is not the current one (a replay
  of an old round, or a ciphertext case dated in the far future). It passes the wire, and the
  role's round rule drops it with a log line (or, replayed twice, the channel ignores the
  duplicate with a log line).

Most ``wire`` cases carry a unique tag (``fz00042``) in their topic or kind, which the rejection
line quotes: the live test checks every tagged message's line one by one, and counts the rest.

Which keys sign what: an *outsider* (the broker, or anyone on it) has no roster key, so its
envelopes die at the signature; to reach the deeper checks the fuzzer also signs with the
participants' own keys, as a participant whose key leaked would. Such messages are kept out of
the current round and never form a *well-formed* message of a live (round, kind, sender,
recipient), because that is not malformed input but equivocation, which the protocol rightly
answers with a violation report (protocol.md §4.3).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import strategies as st

from privgrid.crypto.identity import Identity, Roster
from privgrid.wire import kinds, schema, topics
from privgrid.wire.channel import Channel
from privgrid.wire.envelope import MAX_ROUND, VERSION, Envelope, seal_envelope
from privgrid.wire.kinds import AGENT, LM, MO

RUN = "fuzz-run"
ROLES = {"S1": AGENT, "S2": AGENT, "B1": AGENT, "B2": AGENT, "LM": LM, "MO": MO}
FIELDS = ("v", "kind", "run", "round", "sender", "recipient", "body", "sig")
#: Rounds the fuzzer dates its signed, synthetic messages in: far beyond any real run, so they
#: can never meet a real message of the same (round, kind, sender, recipient).
FAR_ROUNDS = (10**6, MAX_ROUND)


def fuzz_channels(identities: Mapping[str, Identity]) -> dict[str, Channel]:
    """One channel per participant of :data:`ROLES`, every agreement key known to everyone."""
    roster = Roster({pid: ident.public_b64 for pid, ident in identities.items()})
    chans = {pid: Channel(pid, RUN, identities[pid], roster, ROLES) for pid in ROLES}
    for a in chans.values():
        for b in chans.values():
            if a is not b:
                a.learn_agreement_key(b.me, b.x25519_public)
    return chans


def msgpack_values(*, leaves_only: bool = False) -> st.SearchStrategy[Any]:
    """Anything msgpack can carry: nil, bools, 64-bit ints at both ends, floats (NaN, ±inf),
    text, bytes, and lists and maps of them."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.sampled_from([0, -1, 2**31, 2**63, 2**64 - 1, -(2**63)]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.binary(max_size=64),
    )
    if leaves_only:
        return leaves
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
        ),
        max_leaves=12,
    )


# --- bodies: valid ones per kind, and values each field's check refuses -----------------------
_VALID_CANDIDATES: tuple[Any, ...] = (
    0,
    1,
    1.0,
    True,
    "A",
    b"\x09" + bytes(31),  # the X25519 base point: a valid agreement key
    bytes(32),
    b"\x01" * 64,
    [],
    [0],
    ["A", "B"],
    {},
    [{}],
    {"a": 1.0},
)
#: Wrong values for any field: wrong types, 64-bit extremes, wrong lengths, nesting.
WRONG_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    1.5,
    float("nan"),
    float("-inf"),
    -1,
    -(2**63),
    2**63,
    2**64 - 1,
    "",
    "x" * 1001,
    b"",
    b"\x00" * 31,
    b"\x00" * 4097,
    [],
    [None],
    [1.5],
    [-1],
    [2**64 - 1],
    [[1, 2, 3]],
    ["A", "B", "C"],
    [b"x" * 5000],
    {},
    {"k": "v"},
    [{"k": 1}, 3],
    [b"\x00"] * 4097,
)


def valid_value(spec: schema.Spec) -> Any:
    """The first candidate value ``spec`` accepts (a base for one-field mutations)."""
    for value in _VALID_CANDIDATES:
        if spec.check(value) is None:
            return value
    raise LookupError("no valid candidate value for this spec")


def valid_body(kind: str) -> dict[str, Any]:
    """A body of ``kind`` its schema accepts, optional fields included."""
    return {name: valid_value(spec) for name, spec in kinds.KINDS[kind].body.items()}


def invalid_bodies(kind: str, field_name: str) -> list[Any]:
    """Bodies of ``kind`` that break exactly ``field_name`` (wrong value, or missing)."""
    spec = kinds.KINDS[kind].body
    base = valid_body(kind)
    out: list[Any] = [
        {**base, field_name: wrong}
        for wrong in WRONG_VALUES
        if spec[field_name].check(wrong) is not None
    ]
    if not spec[field_name].optional:
        out.append({k: v for k, v in base.items() if k != field_name})
    return out


def any_invalid_body(kind: str, rng: random.Random) -> Any:
    """A body ``kind``'s schema refuses: a broken field, an unknown one, or not a map at all."""
    choice = rng.random()
    spec = kinds.KINDS[kind].body
    if choice < 0.1 or not spec:
        return rng.choice([[1, 2], "body", 7, None, {**valid_body(kind), "zz": 1}])
    name = rng.choice(sorted(spec))
    return rng.choice(invalid_bodies(kind, name))


_NOT_INT = (1.5, True, None, "text", b"bytes", [1], {"a": 1})
_NOT_STR = (1.5, True, None, 7, b"bytes", [1], {"a": 1})
_NOT_BYTES = (1.5, True, None, 7, "text", [1], {"a": 1})
_WRONG_TYPES = {
    "v": _NOT_INT,
    "round": _NOT_INT,
    "kind": _NOT_STR,
    "run": _NOT_STR,
    "sender": _NOT_STR,
    "recipient": _NOT_STR,
    "body": _NOT_BYTES,
    "sig": _NOT_BYTES,
}


# --- cases ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    category: str
    topic: str
    payload: bytes
    receivers: tuple[str, ...]
    stage: str  # "wire" | "round"
    tag: str | None = None


@dataclass(frozen=True)
class Recorded:
    """A genuine message seen on the wire (for replays)."""

    topic: str
    payload: bytes
    kind: str
    round: int
    sender: str
    recipient: str


def read_envelope(topic: str, payload: bytes) -> Recorded | None:
    """The header fields of a genuine envelope (no checks: the fuzzer only replays it)."""
    try:
        data = msgpack.unpackb(payload, raw=False)
        return Recorded(
            topic, payload, data["kind"], data["round"], data["sender"], data["recipient"]
        )
    except Exception:  # whatever it is, it is not something to replay
        return None


@dataclass
class Fuzzer:
    """Builds malformed messages for one run. ``identities``: every roster key (leaked)."""

    run: str
    roles: Mapping[str, str]
    identities: Mapping[str, Identity]
    seed: int = 1
    #: Paillier moduli from the key announcements (secure runs): ciphertext cases use them.
    moduli: dict[str, int] = field(default_factory=dict)
    recorded: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.stranger = Identity.generate()
        self._tags = itertools.count()
        self._far: set[tuple[int, str, str, str]] = set()
        self.everyone = tuple(sorted(self.roles))

    # -- helpers ----------------------------------------------------------------------------
    def tag(self) -> str:
        return f"fz{next(self._tags):05d}"

    def _bytes(self, low: int, high: int) -> bytes:
        return os.urandom(self.rng.randint(low, high))

    def _far_round(self, kind: str, sender: str, recipient: str) -> int:
        while True:
            rnd = self.rng.randint(*FAR_ROUNDS)
            key = (rnd, kind, sender, recipient)
            if key not in self._far:
                self._far.add(key)
                return rnd

    def _envelope(
        self,
        *,
        kind: str,
        sender: str,
        recipient: str,
        body: bytes,
        rnd: int | None = None,
        run: str | None = None,
        signer: Identity | None = None,
    ) -> bytes:
        signer = signer or self.identities[sender]
        rnd = self._far_round(kind, sender, recipient) if rnd is None else rnd
        return seal_envelope(
            signer,
            kind=kind,
            run=run or self.run,
            round=rnd,
            sender=sender,
            recipient=recipient,
            body=body,
        )

    def _raw(self, fields: Mapping[str, Any]) -> bytes:
        return msgpack.packb(dict(fields), use_bin_type=True)

    def _fields(self, target: str, sender: str) -> dict[str, Any]:
        return {
            "v": VERSION,
            "kind": "share",
            "run": self.run,
            "round": self.rng.randint(*FAR_ROUNDS),
            "sender": sender,
            "recipient": target,
            "body": self._bytes(0, 60),
            "sig": self._bytes(64, 64),
        }

    def senders_to(self, target: str) -> list[tuple[str, str]]:
        """(sender, kind) pairs the kind table allows toward ``target`` (direct kinds)."""
        role = self.roles[target]
        return [
            (sender, name)
            for name, spec in sorted(kinds.KINDS.items())
            if not spec.is_broadcast and not spec.coalition and role in spec.recipients
            for sender in self.everyone
            if sender != target and self.roles[sender] in spec.senders
        ]

    # -- outsiders: no roster key (the tag rides in the topic's kind slot) -------------------
    def outsider(self, target: str) -> Case:
        tag = self.tag()
        sender = self.rng.choice([*self.everyone, "X9", "intruder"])
        topic = topics.direct(self.run, target, sender, tag)
        fields = self._fields(target, sender)
        pick = self.rng.randrange(12)
        if pick == 0:
            category, payload = "random bytes", self._bytes(0, 1500)
        elif pick == 1:
            valid = self._envelope(
                kind="share",
                sender=sender,
                recipient=target,
                body=self._bytes(0, 80),
                signer=self.stranger,
            )
            category, payload = "truncated msgpack", valid[: self.rng.randrange(len(valid))]
        elif pick == 2:
            value = self.rng.choice([[1, 2, 3], 42, "envelope", None, b"\x00" * 9, 1.5, True])
            category, payload = "not a map", msgpack.packb(value, use_bin_type=True)
        elif pick == 3:
            name = self.rng.choice(FIELDS)
            if self.rng.random() < 0.5:
                del fields[name]
            else:
                fields[self.rng.choice(["extra", "sig2", "Round", ""])] = 1
            category, payload = "missing or extra field", self._raw(fields)
        elif pick == 4:
            name = self.rng.choice(FIELDS)
            fields[name] = self.rng.choice(_WRONG_TYPES[name])
            category, payload = "wrong field type", self._raw(fields)
        elif pick == 5:
            fields["round"] = self.rng.choice([-1, -(2**63), 2**31, 2**32, 2**63, 2**64 - 1])
            if self.rng.random() < 0.3:
                fields["round"], fields["v"] = 1, self.rng.choice([2**64 - 1, -(2**63), 0, 2])
            category, payload = "huge or negative integer", self._raw(fields)
        elif pick == 6:
            env = Envelope(VERSION, "share", self.run, 5, sender, target, self._bytes(28, 80))
            sig = self.rng.choice(
                [
                    self._bytes(64, 64),
                    self._bytes(0, 63),
                    self._bytes(65, 200),
                    self.stranger.sign(env.signed_bytes()),
                ]
            )
            category, payload = "bad signature", dataclasses.replace(env, sig=sig).to_wire()
        elif pick == 7:
            stranger_id = self.rng.choice(["X9", "intruder", "S99", ""])
            topic = topics.direct(self.run, target, stranger_id or "nobody", tag)
            payload = self._envelope(
                kind="share",
                sender=stranger_id,
                recipient=target,
                body=b"",
                rnd=3,
                signer=self.stranger,
            )
            category = "sender not in the roster"
        elif pick == 8:
            fields["v"] = self.rng.choice([0, 2, 255])
            category, payload = "unsupported version", self._raw(fields)
        elif pick == 9:
            payload = bytearray(
                self._envelope(
                    kind="share",
                    sender=sender,
                    recipient=target,
                    body=b"x" * 40,
                    signer=self.stranger,
                )
            )
            for _ in range(self.rng.randint(1, 8)):
                payload[self.rng.randrange(len(payload))] ^= 1 << self.rng.randrange(8)
            category, payload = "bit flips", bytes(payload)
        elif pick == 10:
            depth = self.rng.randint(200, 20000)
            category, payload = "deep nesting", b"\x91" * depth + b"\xc0"
        else:
            payload = b"\x8f" + b"\xa1a\xc0" * self.rng.randint(1, 4) + self._bytes(0, 8)
            category = "truncated msgpack"
        return Case(category, topic, payload, (target,), "wire", tag)

    def oversized(self, target: str) -> Case:
        tag = self.tag()
        return Case(
            "oversized envelope",
            topics.direct(self.run, target, "B1", tag),
            b"\xc6" + (1 << 20).to_bytes(4, "big") + os.urandom(1 << 20),
            (target,),
            "wire",
            tag,
        )

    # -- a leaked roster key: wrong run, unknown kinds, roles, seals, body schemas ------------
    def wrong_run(self, target: str) -> Case:
        tag = self.tag()
        sender, kind = self.rng.choice(self.senders_to(target))
        run = self.rng.choice(["other-run", self.run + "x", "", self.run.upper()])
        payload = self._envelope(
            kind=kind, sender=sender, recipient=target, body=b"\x80", rnd=5, run=run
        )
        return Case(
            "wrong run",
            topics.direct(self.run, target, sender, tag),
            payload,
            (target,),
            "wire",
            tag,
        )

    def unknown_kind(self, target: str) -> Case:
        tag = self.tag()
        sender = self.rng.choice([p for p in self.everyone if p != target])
        payload = self._envelope(kind=tag, sender=sender, recipient=target, body=b"\x80")
        return Case(
            "unknown kind",
            topics.direct(self.run, target, sender, tag),
            payload,
            (target,),
            "wire",
            tag,
        )

    def topic_mismatch(self, target: str) -> Case:
        tag = self.tag()
        sender, kind = self.rng.choice(self.senders_to(target))
        other = self.rng.choice([p for p in self.everyone if p not in (target, sender)])
        payload = self._envelope(kind=kind, sender=sender, recipient=other, body=b"\x80")
        return Case(
            "envelope differs from its topic",
            topics.direct(self.run, target, sender, tag),
            payload,
            (target,),
            "wire",
            tag,
        )

    def role_violation(self, target: str) -> Case:
        allowed = set(self.senders_to(target))
        options = [
            (sender, name)
            for name, spec in sorted(kinds.KINDS.items())
            if not spec.coalition and name != "key"
            for sender in self.everyone
            if sender != target and (sender, name) not in allowed
        ]
        sender, kind = self.rng.choice(options)
        payload = self._envelope(kind=kind, sender=sender, recipient=target, body=b"\x80")
        return Case(
            "role or recipient not allowed",
            topics.direct(self.run, target, sender, kind),
            payload,
            (target,),
            "wire",
        )

    def bad_body(self, target: str) -> Case:
        """A body its kind's schema refuses (unsealed kinds), or a seal that does not open."""
        sender, kind = self.rng.choice(self.senders_to(target))
        spec = kinds.KINDS[kind]
        if spec.sealed:
            body = self.rng.choice([self._bytes(0, 27), self._bytes(28, 300)])
            category = "sealed body does not open"
        elif self.rng.random() < 0.1:
            body, category = b"\xc1" + self._bytes(0, 20), "body is not msgpack"
        else:
            body = msgpack.packb(any_invalid_body(kind, self.rng), use_bin_type=True)
            category = "body fails its schema"
        payload = self._envelope(kind=kind, sender=sender, recipient=target, body=body)
        return Case(
            category, topics.direct(self.run, target, sender, kind), payload, (target,), "wire"
        )

    # -- replays of genuine messages ---------------------------------------------------------
    def replay_wrong_recipient(self, target: str) -> Case | None:
        options = [r for r in self.recorded if r.recipient not in (target, topics.BROADCAST)]
        if not options:
            return None
        r = self.rng.choice(options)
        if r.sender == target:
            return None
        topic = topics.direct(self.run, target, r.sender, r.kind)
        return Case("replay to the wrong recipient", topic, r.payload, (target,), "wire")

    def replay_old_round(self, target: str, before: int) -> Case | None:
        options = [r for r in self.recorded if r.recipient == target and r.round < before]
        if not options:
            return None
        r = self.rng.choice(options)
        return Case("replay of an old round", r.topic, r.payload, (target,), "round")

    def replay_modified(self, target: str) -> Case | None:
        options = [r for r in self.recorded if r.recipient == target]
        if not options:
            return None
        r = self.rng.choice(options)
        data = msgpack.unpackb(r.payload, raw=False)
        data["round"] = data["round"] + self.rng.randint(1, 1000)
        return Case("replay with its round changed", r.topic, self._raw(data), (target,), "wire")

    # -- broadcasts: every participant receives them ----------------------------------------
    def broadcast(self) -> Case:
        if self.rng.random() < 0.5:
            tag = self.tag()
            sender = self.rng.choice(self.everyone)
            payload = self.rng.choice(
                [self._bytes(1, 400), msgpack.packb([1, "x"]), self._raw(self._fields("*", sender))]
            )
            return Case(
                "garbage broadcast",
                topics.broadcast(self.run, sender, tag),
                payload,
                self.everyone,
                "wire",
                tag,
            )
        options = [
            (sender, name)
            for name, spec in sorted(kinds.KINDS.items())
            if spec.is_broadcast and not spec.coalition
            for sender in self.everyone
            if self.roles[sender] in spec.senders and spec.body
        ]
        sender, kind = self.rng.choice(options)
        body = msgpack.packb(any_invalid_body(kind, self.rng), use_bin_type=True)
        payload = self._envelope(kind=kind, sender=sender, recipient=topics.BROADCAST, body=body)
        topic = (
            topics.keys(self.run, sender)
            if kind == "key"
            else topics.broadcast(self.run, sender, kind)
        )
        return Case(f"{kind} broadcast fails its schema", topic, payload, self.everyone, "wire")

    # -- ciphertexts (secure runs) -----------------------------------------------------------
    def bad_ciphertexts(self, n: int) -> list[bytes]:
        """Wrong length, zero, N, N², all ones, random: none is a unit below N² of length 2|N|."""
        size = 2 * ((n.bit_length() + 7) // 8)
        nn = n * n
        choices = [
            self._bytes(1, size - 1),
            self._bytes(size + 1, 4096),
            bytes(size),
            n.to_bytes(size, "big"),
            nn.to_bytes(size + 1, "big")[-size:] if nn.bit_length() <= 8 * size else b"",
            b"\xff" * size,
            (nn + self.rng.randint(1, 2**64)).to_bytes(size + 1, "big"),
            (n * self.rng.randint(1, 2**60)).to_bytes(size, "big"),
        ]
        return [c for c in choices if c]

    def ciphertext_out_of_round(self, target: str) -> Case | None:
        """A signed message whose ciphertext is wrong, dated outside the current round: it must
        be dropped by the round rule (in round it would be the signer's violation)."""
        options = [
            (s, k)
            for s, k in self.senders_to(target)
            if k in ("share_own", "share_peer", "trades_enc", "charges_enc")
        ]
        if not options or not self.moduli:
            return None
        sender, kind = self.rng.choice(options)
        owner = sender if kind == "share_own" else target
        n = self.moduli.get(owner)
        if n is None:
            return None
        c = self.rng.choice(self.bad_ciphertexts(n))
        if kind in ("share_own", "share_peer"):
            pair = [sender, target] if kind == "share_own" else [target, sender]
            body: dict[str, Any] = {"pair": pair, "c": c}
        else:
            body = {"c": [c] * self.rng.randint(1, 3)}
        payload = self._envelope(
            kind=kind,
            sender=sender,
            recipient=target,
            body=msgpack.packb(body, use_bin_type=True),
        )
        return Case(
            "bad ciphertext outside the round",
            topics.direct(self.run, target, sender, kind),
            payload,
            (target,),
            "round",
        )

    # -- the mix -----------------------------------------------------------------------------
    def cases(
        self, target: str, count: int, *, before: int, secure: bool = False
    ) -> Iterator[Case]:
        """``count`` cases for ``target``; ``before``: replays use rounds below it."""
        makers = [
            (30, self.outsider),
            (4, self.wrong_run),
            (5, self.unknown_kind),
            (5, self.topic_mismatch),
            (6, self.role_violation),
            (20, self.bad_body),
            (5, self.replay_wrong_recipient),
            (5, lambda t: self.replay_old_round(t, before)),
            (4, self.replay_modified),
        ]
        if secure:
            makers.append((20, self.ciphertext_out_of_round))
        weights = [w for w, _ in makers]
        made = 0
        while made < count:
            (maker,) = self.rng.choices([m for _, m in makers], weights)
            case = maker(target)
            if case is not None:
                made += 1
                yield case


def check_cases_in_process(cases: Sequence[Case], channels: Mapping[str, Channel]) -> Counter:
    """Decode each case with the receivers' channels: every ``wire`` case must be rejected."""
    from privgrid.wire.channel import Duplicate
    from privgrid.wire.envelope import Rejected

    outcomes: Counter = Counter()
    for case in cases:
        for receiver in case.receivers:
            try:
                channels[receiver].decode(case.topic, case.payload)
            except Duplicate:
                outcomes["duplicate"] += 1
                continue
            except Rejected as exc:
                assert case.stage == "wire", (case.category, exc.reason)
                if case.tag is not None:
                    assert case.tag in case.topic or case.tag in exc.reason
                outcomes["rejected"] += 1
                continue
            assert case.stage == "round", f"{case.category} got through the channel"
            outcomes["accepted"] += 1
    return outcomes


# --- the live side: logs, memory ----------------------------------------------------------------
WIRE_LINE = re.compile(r" dropped message from \S+ on (\S+): ")
TAG = re.compile(r"\bfz\d{5,}\b")
ROUND_LINE = re.compile(
    r" (?:dropped \S+ from \S+: round \d+ is not the current round"
    r"|dropped \S+ of round \d+ from \S+ \(expected round"
    r"|dropped \S+ from \S+ for round \d+ \(current round"
    r"|ignored a duplicate from )"
)


class LogCounter:
    """Counts rejection lines in the participants' logs as they grow (reads only new bytes)."""

    def __init__(self, logs: Mapping[str, Path]) -> None:
        self.logs = dict(logs)
        self.offsets = dict.fromkeys(self.logs, 0)
        self.partial = dict.fromkeys(self.logs, "")
        self.wire: Counter = Counter()
        self.round: Counter = Counter()
        self.tags: dict[str, Counter] = {pid: Counter() for pid in self.logs}

    def baseline(self) -> None:
        """Start counting from now: what the logs hold already is not the fuzzer's."""
        self.poll()
        self.wire.clear()
        self.round.clear()
        for counter in self.tags.values():
            counter.clear()

    def poll(self) -> None:
        for pid, path in self.logs.items():
            if not path.exists():
                continue
            with path.open("rb") as f:
                f.seek(self.offsets[pid])
                chunk = f.read()
            self.offsets[pid] += len(chunk)
            text = self.partial[pid] + chunk.decode("utf-8", "replace")
            *lines, self.partial[pid] = text.split("\n")
            for line in lines:
                if WIRE_LINE.search(line):
                    self.wire[pid] += 1
                    for tag in set(TAG.findall(line)):
                        self.tags[pid][tag] += 1
                elif ROUND_LINE.search(line):
                    self.round[pid] += 1


def rss_kib(pid: int) -> int:
    """Resident set size of a live process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class Delivery:
    """What was sent to whom, for the assertions."""

    cases: list[Case] = field(default_factory=list)
    expected_wire: Counter = field(default_factory=Counter)
    expected_round: Counter = field(default_factory=Counter)
    expected_tags: dict[str, Counter] = field(default_factory=dict)
    categories: Counter = field(default_factory=Counter)

    def add(self, case: Case) -> None:
        self.cases.append(case)
        self.categories[case.category] += 1
        for receiver in case.receivers:
            target = self.expected_wire if case.stage == "wire" else self.expected_round
            target[receiver] += 1
            if case.tag is not None:
                self.expected_tags.setdefault(receiver, Counter())[case.tag] += 1


async def publish_all(client: Any, cases: Sequence[Case], chunk: int = 100) -> None:
    """Publish at QoS 1 (the broker queues for slow receivers; nothing is lost)."""
    for start in range(0, len(cases), chunk):
        await asyncio.gather(
            *(client.publish(c.topic, c.payload, qos=1) for c in cases[start : start + chunk])
        )
