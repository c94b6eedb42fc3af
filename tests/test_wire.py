"""Envelope, channel and topics: pure tests with real keys (no broker)."""

import msgpack
import pytest

from privgrid.crypto.identity import Identity, Roster
from privgrid.crypto.sealing import associated_data, seal
from privgrid.wire import topics
from privgrid.wire.channel import Channel, Duplicate, Outgoing, UnknownPeer
from privgrid.wire.envelope import Envelope, Rejected, open_envelope, seal_envelope
from privgrid.wire.kinds import AGENT, LM, MO, Charges, LmResiduals, Round, Share, ViolationReport

RUN = "r1"
ROLES = {"S1": AGENT, "B1": AGENT, "B2": AGENT, "LM": LM, "MO": MO}


@pytest.fixture(scope="module")
def identities():
    return {pid: Identity.generate() for pid in ROLES}


@pytest.fixture
def channels(identities):
    roster = Roster({pid: ident.public_b64 for pid, ident in identities.items()})
    chans = {pid: Channel(pid, RUN, identities[pid], roster, ROLES) for pid in ROLES}
    for a in chans.values():
        for b in chans.values():
            if a is not b:
                a.learn_agreement_key(b.me, b.x25519_public)
    return chans


def send(chans, sender, out):
    return chans[sender].encode(out)


def test_sealed_message_round_trip(channels):
    topic, payload = send(channels, "S1", Outgoing("B1", 3, Share(-12345, 0)))
    assert topic == "privgrid/r1/to/B1/S1/share"
    message = channels["B1"].decode(topic, payload)
    assert (message.kind, message.round, message.sender, message.body.to_body()) == (
        "share",
        3,
        "S1",
        {"x": -12345, "own": 0},
    )
    assert message.body == Share(-12345, 0)
    assert msgpack.packb(-12345) not in payload  # the value does not travel in clear


def test_sealed_body_cannot_be_opened_by_a_third_party(channels):
    topic, payload = send(channels, "S1", Outgoing("B1", 3, Share(7, 0)))
    with pytest.raises(Rejected, match="addressed to B1"):
        channels["B2"].decode(topic, payload)
    moved = topic.replace("/to/B1/", "/to/B2/")
    with pytest.raises(Rejected, match="differ from the topic"):
        channels["B2"].decode(moved, payload)


def test_a_message_sent_again_is_the_same_bytes_and_reads_as_a_duplicate(channels):
    """A node re-sending its last report (to a peer that resynced after our restart) must not
    look like a conflicting replay: sealing is randomised, so the bytes are kept, not redone.
    (A restarted LM once sent its fresh round report, then the same report again on the MO's
    resync: two sealings, and the MO stopped the run for a replay.)"""
    report = Outgoing("MO", 26, LmResiduals(r_L=5))
    first = send(channels, "LM", report)
    again = send(channels, "LM", report)
    assert again == first
    channels["MO"].decode(*first)
    with pytest.raises(Duplicate):
        channels["MO"].decode(*again)
    same_content = Outgoing("MO", 26, LmResiduals(r_L=5))  # another message object
    assert send(channels, "LM", same_content)[1] != first[1]  # fresh randomness


def test_duplicate_is_recognised_and_conflicting_replay_rejected(channels):
    topic, payload = send(channels, "S1", Outgoing("B1", 4, Share(1, 0)))
    channels["B1"].decode(topic, payload)
    with pytest.raises(Duplicate):
        channels["B1"].decode(topic, payload)
    topic2, other = send(channels, "S1", Outgoing("B1", 4, Share(2, 0)))
    with pytest.raises(Rejected, match="replayed or conflicting share for round 4"):
        channels["B1"].decode(topic2, other)


def test_forged_signature_is_rejected(channels, identities):
    env = Envelope(1, "share", RUN, 5, "S1", "B1", b"\x00" * 40)
    forged = Identity.generate().sign(env.signed_bytes())
    payload = Envelope(1, "share", RUN, 5, "S1", "B1", env.body, forged).to_wire()
    with pytest.raises(Rejected, match="bad signature") as info:
        channels["B1"].decode("privgrid/r1/to/B1/S1/share", payload)
    assert info.value.sender == "S1"


def test_sender_outside_the_roster_is_rejected(channels):
    intruder = Identity.generate()
    payload = seal_envelope(
        intruder, kind="share", run=RUN, round=1, sender="X9", recipient="B1", body=b""
    )
    with pytest.raises(Rejected, match="not in the roster"):
        channels["B1"].decode("privgrid/r1/to/B1/X9/share", payload)


def test_wrong_run_is_rejected(channels, identities):
    payload = seal_envelope(
        identities["S1"],
        kind="round",
        run="other",
        round=1,
        sender="MO",
        recipient="*",
        body=msgpack.packb({}),
    )
    with pytest.raises(Rejected, match="not for run r1"):
        channels["B1"].decode("privgrid/other/bcast/MO/round", payload)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1garbage", "not a msgpack envelope"),
        (msgpack.packb([1, 2, 3]), "not a msgpack map"),
        (msgpack.packb({"v": 1}), "envelope fields"),
        (b"\x00" * (2 << 20), "exceeds"),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "kind": "share",
                    "run": RUN,
                    "round": -1,
                    "sender": "S1",
                    "recipient": "B1",
                    "body": b"",
                    "sig": b"",
                }
            ),
            "round -1 out of range",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "kind": "share",
                    "run": RUN,
                    "round": 1.5,
                    "sender": "S1",
                    "recipient": "B1",
                    "body": b"",
                    "sig": b"",
                }
            ),
            "'round' is not int",
        ),
        (
            msgpack.packb(
                {
                    "v": 2,
                    "kind": "share",
                    "run": RUN,
                    "round": 1,
                    "sender": "S1",
                    "recipient": "B1",
                    "body": b"",
                    "sig": b"",
                }
            ),
            "unsupported envelope",
        ),
    ],
)
def test_malformed_envelopes_are_rejected_with_a_reason(channels, payload, reason):
    with pytest.raises(Rejected, match=reason):
        channels["B1"].decode("privgrid/r1/to/B1/S1/share", payload)


def test_roles_and_recipients_are_enforced(channels, identities):
    # An agent may not send "round"; charges must come from the LM.
    topic, payload = send(channels, "S1", Outgoing(topics.BROADCAST, 2, Round()))
    with pytest.raises(Rejected, match="S1 \\(role agent\\) may not send round"):
        channels["B1"].decode(topic, payload)
    topic, payload = send(channels, "B2", Outgoing("B1", 2, Charges((1,))))
    with pytest.raises(Rejected, match="may not send charges"):
        channels["B1"].decode(topic, payload)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"x": 1.5, "own": 0}, "share.x must be an integer"),
        ({"x": True, "own": 0}, "share.x must be an integer"),
        ({"x": 1, "own": 0, "y": 2}, "unknown \\['y'\\]"),
        ({"own": 0}, "missing \\['x'\\]"),
    ],
)
def test_body_schema_is_strict(channels, identities, body, reason):
    # A typed body cannot be malformed, so the bad map is sealed and signed by hand.
    ad = associated_data(RUN, 6, "S1", "B1", "share")
    sealed = seal(channels["S1"]._pair_key("B1"), body, ad)
    payload = seal_envelope(
        identities["S1"], kind="share", run=RUN, round=6, sender="S1", recipient="B1", body=sealed
    )
    topic = topics.direct(RUN, "B1", "S1", "share")
    with pytest.raises(Rejected, match=reason):
        channels["B1"].decode(topic, payload)


def test_tampered_sealed_body_fails_authentication(channels, identities):
    topic, payload = send(channels, "S1", Outgoing("B1", 7, Share(1, 0)))
    env = msgpack.unpackb(payload)
    body = bytearray(env["body"])
    body[-1] ^= 1
    resigned = seal_envelope(
        identities["S1"],
        kind="share",
        run=RUN,
        round=7,
        sender="S1",
        recipient="B1",
        body=bytes(body),
    )
    with pytest.raises(Rejected, match="cannot open sealed share"):
        channels["B1"].decode(topic, resigned)


def test_unknown_kind_is_rejected(channels, identities):
    payload = seal_envelope(
        identities["S1"], kind="bogus", run=RUN, round=1, sender="S1", recipient="B1", body=b""
    )
    with pytest.raises(Rejected, match="unknown message kind 'bogus'"):
        channels["B1"].decode("privgrid/r1/to/B1/S1/bogus", payload)


def test_envelope_signature_covers_every_field(identities):
    keys = {"S1": identities["S1"].public_key}
    payload = seal_envelope(
        identities["S1"], kind="share", run=RUN, round=1, sender="S1", recipient="B1", body=b"abc"
    )
    assert open_envelope(payload, keys).body == b"abc"
    data = msgpack.unpackb(payload)
    for field, value in (("round", 2), ("recipient", "B2"), ("kind", "price"), ("body", b"abd")):
        changed = msgpack.packb({**data, field: value})
        with pytest.raises(Rejected, match="bad signature"):
            open_envelope(changed, keys)


def test_topics_parse_and_build():
    assert topics.parse(topics.direct("r", "B1", "S1", "share")) == topics.Topic(
        "r", "S1", "B1", "share"
    )
    assert topics.parse(topics.broadcast("r", "MO", "round")).recipient == topics.BROADCAST
    assert topics.parse(topics.keys("r", "S1")).kind == "key"
    assert topics.parse("other/r/to/B1/S1/share") is None
    assert topics.parse("privgrid/r/to/B1/share") is None


def test_several_violation_reports_in_one_round_are_all_accepted_and_a_resent_one_is_a_duplicate(
    channels,
):
    """One reporter may accuse several offenders in one round (S1 catching three colluding
    buyers): each report is its own message, not a conflicting replay of the first."""
    reports = [
        Outgoing("MO", 20, ViolationReport(offender=b, reason="pair check", evidence=()))
        for b in ("B1", "B2", "LM")
    ]
    sent = [send(channels, "S1", report) for report in reports]
    received = [channels["MO"].decode(*wire) for wire in sent]
    assert [m.expect(ViolationReport).offender for m in received] == ["B1", "B2", "LM"]
    with pytest.raises(Duplicate):
        channels["MO"].decode(*sent[1])


def test_a_sealed_message_from_a_peer_without_an_announcement_is_an_unknown_peer(identities):
    """Not a rejection the channel counts: the runtime decides whether it was expected (a
    message queued for a restarted participant) or not."""
    roster = Roster({pid: ident.public_b64 for pid, ident in identities.items()})
    s1 = Channel("S1", RUN, identities["S1"], roster, ROLES)
    b1 = Channel("B1", RUN, identities["B1"], roster, ROLES)
    s1.learn_agreement_key("B1", b1.x25519_public)
    topic, payload = s1.encode(Outgoing("B1", 3, Share(1, 0)))
    with pytest.raises(UnknownPeer, match="no key announcement from S1 yet"):
        b1.decode(topic, payload)
    assert b1.stats["rejected"] == 0
