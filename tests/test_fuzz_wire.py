"""Property: any bytes into the decoding path give a checked Message or a ``Rejected``, never else.

The decoding path is what a participant runs on every MQTT payload before its role code sees
it: topic → envelope (:mod:`privgrid.wire.envelope`) → roster and signature → run, kinds and
roles (:mod:`privgrid.wire.channel`) → sealed body → body schema (:mod:`privgrid.wire.schema`
and the per-kind schemas of :mod:`privgrid.wire.kinds`). Real Ed25519, X25519 and
ChaCha20-Poly1305 keys throughout; the strategies sign and seal correctly where they must, so
that hypothesis reaches the deep checks (body schemas, sealed payloads) and not only the
signature check.

The Paillier part goes one step further, into the agents' and the LM's handlers, with real
1024-bit keys: any ciphertext or proof bytes on a correctly signed, in-round message are
refused as a protocol :class:`~privgrid.privacy.exchange.Violation` (a ``Rejected`` carrying
evidence) — the negative, out-of-range, wrong-length and non-unit ciphertexts the live fuzz
run cannot deliver without indicting the participant whose key signs them.
"""

from __future__ import annotations

import os

import msgpack
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privgrid.contract import pair_contract
from privgrid.crypto import paillier as pl
from privgrid.crypto.framing import int_to_fixed
from privgrid.crypto.identity import Identity
from privgrid.crypto.packing import encrypt_packed
from privgrid.crypto.sealing import associated_data, seal
from privgrid.crypto.zkp import ProofContext, prove_decryption
from privgrid.privacy.exchange import CryptoCounters, Violation
from privgrid.privacy.paillier import PaillierExchange, PaillierKeys, PaillierLeg
from privgrid.wire import kinds, schema, topics
from privgrid.wire.body import Body
from privgrid.wire.channel import Channel, Duplicate, Message
from privgrid.wire.envelope import MAX_ENVELOPE_BYTES, Envelope, Rejected, seal_envelope
from tests.test_fuzz_support import (
    ROLES,
    RUN,
    fuzz_channels,
    invalid_bodies,
    msgpack_values,
)

#: Examples per property; raise it for a deeper local hunt (PRIVGRID_FUZZ_EXAMPLES=20000).
EXAMPLES = int(os.environ.get("PRIVGRID_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
IDS = sorted(ROLES)
KIND_NAMES = sorted(kinds.KINDS)


@pytest.fixture(scope="module")
def identities() -> dict[str, Identity]:
    return {pid: Identity.generate() for pid in ROLES}


@pytest.fixture(scope="module")
def channels(identities):
    return fuzz_channels(identities)


def decode_or_reject(channel: Channel, topic: str, payload: bytes) -> Message | Rejected:
    """The property under test: ``decode`` returns a Message or raises ``Rejected``."""
    try:
        return channel.decode(topic, payload)
    except Rejected as exc:
        assert exc.reason and isinstance(exc.reason, str)
        return exc


def assert_checked(result: Message | Rejected) -> None:
    """A Message that got through is exactly what its kind's schema allows."""
    if isinstance(result, Message):
        spec = kinds.KINDS[result.kind]
        schema.check(result.body.to_body(), spec.body, kind=result.kind, sender=result.sender)
        assert result.sender in ROLES and 0 <= result.round <= 2**31 - 1


topic_text = st.one_of(
    st.sampled_from(
        [
            topics.direct(RUN, "S1", "B1", "share"),
            topics.direct(RUN, "S1", "LM", "charges"),
            topics.direct(RUN, "S1", "B1", "share_own"),
            topics.broadcast(RUN, "MO", "round"),
            topics.keys(RUN, "B1"),
            topics.collusion(RUN, "coalition"),
            topics.direct("other", "S1", "B1", "share"),
        ]
    ),
    st.text(max_size=80),
)


@SETTINGS
@given(topic=topic_text, payload=st.binary(max_size=4096))
def test_any_bytes_on_any_topic_are_a_message_or_a_rejection(channels, topic, payload):
    assert_checked(decode_or_reject(channels["S1"], topic, payload))


@SETTINGS
@given(value=msgpack_values(), cut=st.integers(0, 64))
def test_any_msgpack_value_or_truncation_of_it_is_rejected(channels, value, cut):
    payload = msgpack.packb(value, use_bin_type=True)
    topic = topics.direct(RUN, "S1", "B1", "share")
    assert isinstance(decode_or_reject(channels["S1"], topic, payload), Rejected)
    assert isinstance(decode_or_reject(channels["S1"], topic, payload[: -1 - cut]), Rejected)


@st.composite
def envelopes(draw: st.DrawFn, identities: dict[str, Identity]) -> tuple[str, bytes]:
    """Envelope maps whose every field may be wrong; correctly signed when the sender is real."""
    sender = draw(st.one_of(st.sampled_from(IDS), st.text(max_size=8)))
    recipient = draw(st.one_of(st.sampled_from(["S1", topics.BROADCAST]), st.text(max_size=8)))
    kind = draw(st.one_of(st.sampled_from(KIND_NAMES), st.text(max_size=12)))
    fields = {
        "v": draw(st.one_of(st.just(1), msgpack_values(leaves_only=True))),
        "kind": kind,
        "run": draw(st.sampled_from([RUN, RUN, "other", ""])),
        "round": draw(st.one_of(st.integers(0, 50), msgpack_values(leaves_only=True))),
        "sender": sender,
        "recipient": recipient,
        "body": draw(st.one_of(st.binary(max_size=300), msgpack_values())),
        "sig": b"",
    }
    if draw(st.booleans()):  # drop or add a field
        if draw(st.booleans()):
            del fields[draw(st.sampled_from(sorted(fields)))]
        else:
            fields[draw(st.text(max_size=6))] = draw(msgpack_values(leaves_only=True))
    if sender in identities and {"v", "kind", "run", "round", "recipient", "body"} <= set(fields):
        try:
            signed = Envelope(**{**fields, "sig": b""}).signed_bytes()
            fields["sig"] = identities[sender].sign(signed)
        except (TypeError, ValueError, OverflowError):
            pass
    topic_kind = kind if isinstance(kind, str) and kind and "/" not in kind else "x"
    if recipient == topics.BROADCAST:
        topic = topics.broadcast(RUN, str(sender) or "x", topic_kind)
    else:
        topic = topics.direct(RUN, "S1", str(sender) or "x", topic_kind)
    return topic, msgpack.packb(fields, use_bin_type=True)


@SETTINGS
@given(data=st.data())
def test_signed_envelopes_with_any_field_values_are_checked_or_rejected(channels, identities, data):
    topic, payload = data.draw(envelopes(identities))
    assert_checked(decode_or_reject(channels["S1"], topic, payload))


@SETTINGS
@given(data=st.data())
def test_any_body_of_any_kind_signed_and_sealed_correctly_is_checked_or_rejected(
    channels, identities, data
):
    """Bodies built from each kind's own field names with any values: the schema decides."""
    kind = data.draw(st.sampled_from(KIND_NAMES))
    spec = kinds.KINDS[kind]
    names = [*spec.body, "extra"]
    body = data.draw(st.dictionaries(st.sampled_from(names), msgpack_values(), max_size=len(names)))
    sender = data.draw(st.sampled_from([p for p in IDS if p != "S1"]))
    recipient = topics.BROADCAST if spec.is_broadcast else "S1"
    channel = channels["S1"]
    rnd = data.draw(st.integers(1, 10**6))
    if spec.sealed:
        ad = associated_data(RUN, rnd, sender, recipient, kind)
        raw_body = seal(channels[sender]._pair_key("S1"), body, ad)
    else:
        raw_body = msgpack.packb(body, use_bin_type=True)
    payload = seal_envelope(
        identities[sender],
        kind=kind,
        run=RUN,
        round=rnd,
        sender=sender,
        recipient=recipient,
        body=raw_body,
    )
    if spec.coalition:
        topic = topics.collusion(RUN, "coalition")
    elif kind == "key":
        topic = topics.keys(RUN, sender)
    elif spec.is_broadcast:
        topic = topics.broadcast(RUN, sender, kind)
    else:
        topic = topics.direct(RUN, "S1", sender, kind)
    try:
        result = channel.decode(topic, payload)
    except Duplicate:
        return  # the same bytes twice (hypothesis may repeat an example): quietly ignored
    except Rejected:
        return
    assert_checked(result)


@SETTINGS
@given(plaintext=st.binary(max_size=600), kind=st.sampled_from(["share", "price_proof", "trades"]))
def test_any_plaintext_inside_a_valid_seal_is_checked_or_rejected(
    channels, identities, plaintext, kind
):
    """The AEAD opens (right key, right context), and what is inside is garbage."""
    rnd = int.from_bytes(os.urandom(3), "big") + 1
    key = channels["B1"]._pair_key("S1")
    nonce = os.urandom(12)
    ad = associated_data(RUN, rnd, "B1", "S1", kind)
    body = nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, ad)
    payload = seal_envelope(
        identities["B1"], kind=kind, run=RUN, round=rnd, sender="B1", recipient="S1", body=body
    )
    assert_checked(decode_or_reject(channels["S1"], topics.direct(RUN, "S1", "B1", kind), payload))


@pytest.mark.parametrize(
    ("kind", "field"), [(k, f) for k in KIND_NAMES for f in kinds.KINDS[k].body]
)
def test_every_field_of_every_kind_has_invalid_values_the_schema_rejects(kind, field):
    """The generator behind the live fuzz run really produces bodies each schema refuses."""
    cases = invalid_bodies(kind, field)
    assert cases, f"no invalid value for {kind}.{field}"
    for body in cases:
        with pytest.raises(Rejected):
            schema.check(body, kinds.KINDS[kind].body, kind=kind, sender="B1")


def test_an_oversized_envelope_is_refused_before_it_is_parsed(channels):
    payload = b"\x81" + b"\xa1v" + b"\x00" * MAX_ENVELOPE_BYTES
    result = decode_or_reject(channels["S1"], topics.direct(RUN, "S1", "B1", "share"), payload)
    assert isinstance(result, Rejected) and "exceeds" in result.reason


def test_a_low_order_x25519_key_in_an_announcement_is_rejected(channels, identities):
    """A peer announcing a low-order X25519 point would make every later seal to it fail."""
    for point in (bytes(32), b"\x01" + bytes(31)):
        body = msgpack.packb({"x25519": point, "created": 1.0}, use_bin_type=True)
        payload = seal_envelope(
            identities["B2"], kind="key", run=RUN, round=0, sender="B2", recipient="*", body=body
        )
        result = decode_or_reject(channels["S1"], topics.keys(RUN, "B2"), payload)
        assert isinstance(result, Rejected) and "key.x25519" in result.reason


def test_a_rejection_is_counted_in_the_channel_stats(channels):
    channel = channels["LM"]
    before = dict(channel.stats)
    decode_or_reject(channel, topics.direct(RUN, "LM", "B1", "trades"), b"\xc1")
    assert channel.stats["rejected"] == before["rejected"] + 1
    assert channel.stats["received"] == before["received"] + 1


# --- Paillier: ciphertext and proof contents, past the wire layer, real 1024-bit keys ---------
BITS = 1024
NBYTES = BITS // 8
#: What the channel checks of an announcement (the agreement key): not what is fuzzed here.
ANNOUNCED = kinds.KeyAnnouncement(x25519=bytes(32), created=0.0)


@pytest.fixture(scope="module")
def paillier():
    """S1 (owner of direction S1→B1) and B1, each with its key pair and the other's key."""
    keys = {pid: PaillierKeys(pid, RUN, BITS, BITS) for pid in ("S1", "B1", "LM")}
    for me, mine in keys.items():
        for other, theirs in keys.items():
            if other != me:
                mine.accept(other, theirs.announcement(ANNOUNCED))
    return keys


def ciphertext_bytes() -> st.SearchStrategy[bytes]:
    """Every ciphertext the body schema lets through (bytes, at most 4096): any value, any
    length. Numbers where bytes belong (a "negative ciphertext") never get this far: the
    schema refuses them (``test_every_field_of_every_kind_has_invalid_values_...``)."""
    return st.one_of(
        st.binary(min_size=2 * NBYTES, max_size=2 * NBYTES),  # right length, any value
        st.binary(max_size=4 * NBYTES),  # any length
        st.sampled_from([bytes(2 * NBYTES), b"\xff" * (2 * NBYTES), b"", b"\x01"]),
    )


def message(kind: str, sender: str, recipient: str, rnd: int, body: dict | Body) -> Message:
    """A message as the channel hands it on: a map is checked against ``kind``'s schema."""
    typed = body if isinstance(body, Body) else kinds.body_of(kind, body, sender=sender)
    assert typed.KIND == kind
    return Message(rnd, sender, recipient, typed, b"evidence")


def exchanges(paillier, rnd: int) -> tuple[PaillierExchange, PaillierExchange]:
    s1 = PaillierExchange("S1", ["B1"], paillier["S1"])
    b1 = PaillierExchange("B1", ["S1"], paillier["B1"])
    s1.begin(rnd, np.array([5 << 32]), np.array([7 << 32]))
    b1.begin(rnd, np.array([-(3 << 32)]), np.array([2 << 32]))
    return s1, b1


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=ciphertext_bytes(), which=st.sampled_from(["share_own", "share_peer"]))
def test_any_ciphertext_bytes_are_a_violation_or_a_valid_ciphertext(paillier, c, which):
    s1, b1 = exchanges(paillier, 3)
    if which == "share_own":  # B1 answers S1's c_A; garbage c_A is S1's violation
        handler, sender, pair = b1, "S1", ["S1", "B1"]
    else:  # S1 decrypts c_A·c_B; garbage c_B is B1's violation
        handler, sender, pair = s1, "B1", ["S1", "B1"]
    msg = message(which, sender, handler.me, 3, {"pair": pair, "c": c})
    schema.check(msg.body.to_body(), kinds.KINDS[which].body, kind=which, sender=sender)
    n = paillier[pair[0]].public("S1" if pair[0] == "S1" else "B1").n
    try:
        handler.handle(msg)
    except Violation as exc:
        assert exc.offender == sender and exc.evidence == [b"evidence"]
        return
    except Rejected as exc:
        pytest.fail(f"a signed in-round bad ciphertext must be a violation, got {exc.reason}")
    value = int.from_bytes(c, "big")  # accepted: it must have been a valid ciphertext
    assert len(c) == 2 * NBYTES and 0 < value < n * n


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=st.binary(max_size=2 * NBYTES),
    a=st.one_of(st.binary(max_size=3 * NBYTES), st.just(b"\x00" * 2 * NBYTES)),
    z=st.one_of(st.binary(max_size=2 * NBYTES), st.just(b"\xff" * NBYTES)),
    keep=st.sampled_from(["none", "x", "a", "z"]),
)
def test_any_price_proof_that_is_not_the_real_one_is_a_violation(paillier, x, a, z, keep):
    """B1 verifies S1's decryption proof; anything but S1's own proof is refused as a violation.
    ``keep`` keeps one of the three honest values and fuzzes the other two."""
    s1, b1 = exchanges(paillier, 4)
    (share_own,) = s1.begin(4, np.array([5 << 32]), np.array([7 << 32]))
    (share_peer,) = b1.handle(message("share_own", "S1", "B1", 4, share_own.body))
    (proof,) = s1.handle(message("share_peer", "B1", "S1", 4, share_peer.body))
    honest = proof.body.to_body()
    body = {"pair": ["S1", "B1"], "x": x, "a": a, "z": z}
    schema.check(body, kinds.KINDS["price_proof"].body, kind="price_proof", sender="S1")
    if keep != "none":
        body[keep] = honest[keep]
    if all(body[k] == honest[k] for k in ("x", "a", "z")):
        return  # hypothesis drew the honest proof itself
    with pytest.raises(Violation) as info:
        b1.handle(message("price_proof", "S1", "B1", 4, body))
    assert info.value.offender == "S1"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cts=st.lists(ciphertext_bytes(), max_size=4), count=st.integers(1, 12))
def test_any_packed_charges_or_trades_are_a_violation_or_values(paillier, cts, count):
    leg = PaillierLeg(paillier["S1"], CryptoCounters())
    msg = message("charges_enc", "LM", "S1", 2, {"c": cts})
    try:
        values = leg.agent_charges(msg, count)
    except Violation as exc:
        assert exc.offender == "LM"
        return
    assert len(values) == count and np.all(np.isfinite(values))


def test_the_honest_exchange_passes_the_same_handlers(paillier):
    """The other side of the coin: the handlers above do not refuse everything."""
    s1, b1 = exchanges(paillier, 5)
    (share_own,) = s1.begin(5, np.array([5 << 32]), np.array([7 << 32]))
    (share_peer,) = b1.handle(message("share_own", "S1", "B1", 5, share_own.body))
    (proof,) = s1.handle(message("share_peer", "B1", "S1", 5, share_peer.body))
    assert b1.handle(message("price_proof", "S1", "B1", 5, proof.body)) == []
    assert b1._peer[0] == s1._own[0] == (5 << 32) + (2 << 32)


# Values are int64 fixed point: a *valid* ciphertext of a value beyond that range must be
# refused as the sender's violation too (found by the fuzzer: it used to escape as a
# PlaintextError / OverflowError and end the process).
BEYOND = st.one_of(st.integers(-(2**200), 2**200), st.sampled_from([2**63, -(2**63), 2**62]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=BEYOND)
def test_a_peer_share_that_decrypts_beyond_the_fixed_point_range_is_a_violation(paillier, value):
    s1, _ = exchanges(paillier, 6)
    s1.begin(6, np.array([5 << 32]), np.array([7 << 32]))
    c_b = pl.encrypt_int(paillier["S1"].keypair.public_key, value)
    body = {
        "pair": ["S1", "B1"],
        "c": pl.ciphertext_to_bytes(paillier["S1"].keypair.public_key, c_b),
    }
    msg = message("share_peer", "B1", "S1", 6, body)
    if abs(value + (5 << 32)) < 2**63:
        assert [o.kind for o in s1.handle(msg)] == ["price_proof"]
    else:
        with pytest.raises(Violation) as info:
            s1.handle(msg)
        assert info.value.offender == "B1"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=BEYOND)
def test_an_honestly_proven_price_beyond_the_fixed_point_range_is_a_violation(paillier, value):
    """A key owner may pick any own share A; the proof is then honest, the price absurd."""
    _, b1 = exchanges(paillier, 7)
    keypair = paillier["S1"].keypair
    c_a = pl.encrypt_int(keypair.public_key, value)
    share = {"pair": ["S1", "B1"], "c": pl.ciphertext_to_bytes(keypair.public_key, c_a)}
    (share_peer,) = b1.handle(message("share_own", "S1", "B1", 7, share))
    c_b = pl.ciphertext_from_bytes(keypair.public_key, share_peer.body.to_body()["c"])
    c = pair_contract(keypair.public_key, c_a, c_b)
    x, proof = prove_decryption(keypair, c, ProofContext(RUN, 7, "S1", "B1", "price"))
    body = {
        "pair": ["S1", "B1"],
        "x": int_to_fixed(x, NBYTES),
        "a": int_to_fixed(proof.a, 2 * NBYTES),
        "z": int_to_fixed(proof.z, NBYTES),
    }
    msg = message("price_proof", "S1", "B1", 7, body)
    if abs(value + (2 << 32)) < 2**63:
        assert b1.handle(msg) == []
    else:
        with pytest.raises(Violation) as info:
            b1.handle(msg)
        assert info.value.offender == "S1"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(st.integers(-(2**86), 2**86), min_size=1, max_size=3))
def test_packed_values_beyond_the_fixed_point_range_are_a_violation(paillier, values):
    leg = PaillierLeg(paillier["S1"], CryptoCounters())
    key = paillier["LM"].public("S1")
    cts = [pl.ciphertext_to_bytes(key, c) for c in encrypt_packed(key, values)]
    msg = message("charges_enc", "LM", "S1", 2, {"c": cts})
    if all(abs(v) < 2**63 for v in values):
        assert len(leg.agent_charges(msg, len(values))) == len(values)
    else:
        with pytest.raises(Violation) as info:
            leg.agent_charges(msg, len(values))
        assert info.value.offender == "LM"
