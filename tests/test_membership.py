"""The membership and restart rules of a participant (privgrid/membership.py), driven directly:
checked messages and the clock in, what to send out — no event loop, no broker. The whole-run
behaviour of the same rules is tests/test_grid_restart.py's and tests/test_broker_restart.py's
(real processes and brokers killed and restarted) and tests/test_bus.py's (the runtime's
Participant on the in-process bus)."""

from __future__ import annotations

import logging

import pytest

from privgrid.crypto.identity import Identity, Roster
from privgrid.logs import ParticipantLog
from privgrid.membership import Admission, Membership, PeerState
from privgrid.node import EXIT_FAILURE, Action, Node
from privgrid.wire import topics
from privgrid.wire.body import Body
from privgrid.wire.channel import Channel, Conflict, Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import (
    AGENT,
    MO,
    Gone,
    KeyAnnouncement,
    Resync,
    Round,
    Share,
    Stop,
    ViolationReport,
)

ROLES = {"S1": AGENT, "B1": AGENT, "MO": MO}
X = {pid: bytes([i + 9]) + bytes(31) for i, pid in enumerate(ROLES)}  # distinct valid keys
RUN = "membership-test"


class Recorder(Node):
    """A node that records what membership hands it, and refuses announcements on request."""

    def __init__(self) -> None:
        super().__init__("S1", ParticipantLog(logging.getLogger("test.membership"), "S1"))
        self.calls: list[tuple[object, ...]] = []
        self.refuse: set[str] = set()

    def peers(self) -> set[str]:
        return {"B1", "MO"}

    def accept_announcement(self, sender: str, body: KeyAnnouncement) -> None:
        if sender in self.refuse:
            raise Rejected("not a key we like", sender)

    def start(self, now: float) -> list[Action]:
        self.calls.append(("start",))
        return []

    def handle(self, message: Message, now: float) -> list[Action]:
        self.calls.append(("handle", message.kind, message.sender, message.round))
        return []

    def peer_restarted(
        self, peer: str, completed: int, new_keys: bool, now: float
    ) -> list[Action]:
        self.calls.append(("restarted", peer, completed, new_keys))
        return []

    def peer_resynced(self, peer: str) -> list[Action]:
        self.calls.append(("resynced", peer))
        return []

    def resume_point(self) -> int:
        return 41


@pytest.fixture(scope="module")
def identities() -> dict[str, Identity]:
    return {pid: Identity.generate() for pid in ROLES}


@pytest.fixture
def member(identities) -> Membership:
    roster = Roster({pid: ident.public_b64 for pid, ident in identities.items()})
    channel = Channel("S1", RUN, identities["S1"], roster, ROLES)
    return Membership(Recorder(), channel)


def msg(sender: str, body: Body, round_: int = 0, recipient: str = "S1") -> Message:
    return Message(round_, sender, recipient, body, raw=f"{sender}:{body!r}".encode())


def key(sender: str, x25519: bytes | None = None, **fields: object) -> Message:
    body = KeyAnnouncement(x25519 or X[sender], 1.0, **fields)  # type: ignore[arg-type]
    return msg(sender, body, recipient=topics.BROADCAST)


def start(member: Membership) -> None:
    for peer in ("B1", "MO"):
        member.dispatch(key(peer), 0.0)
    assert member.started


def test_the_node_starts_once_every_peer_announced_and_gets_what_came_before_in_order(member):
    node = member.node
    assert member.dispatch(msg("MO", Round(), 1, topics.BROADCAST), 0.0) == []
    assert member.dispatch(msg("B1", Share(5, 0), 1), 0.0) == []
    assert member.dispatch(key("B1"), 0.0) == [] and not member.started
    assert member.missing() == ["MO"]
    member.dispatch(key("MO"), 0.0)
    assert member.started and member.missing() == []
    assert node.calls == [("start",), ("handle", "round", "MO", 1), ("handle", "share", "B1", 1)]
    member.dispatch(msg("B1", Share(6, 0), 2), 0.0)
    assert node.calls[-1] == ("handle", "share", "B1", 2)


def test_a_stop_before_the_start_ends_the_participant_with_a_failure(member):
    member.dispatch(msg("MO", Stop(converged=False, reason="no B3"), 0, topics.BROADCAST), 0.0)
    assert member.node.exit_code == EXIT_FAILURE and member.buffer == []


def test_an_announcement_the_mode_refuses_teaches_no_key(member):
    member.node.refuse.add("B1")
    member.dispatch(key("B1"), 0.0)
    assert "B1" not in member.announcements and member.missing() == ["B1", "MO"]


def test_the_same_announcement_again_is_nothing_and_another_key_is_a_violation(member):
    start(member)
    assert member.dispatch(key("B1"), 0.0) == []
    (report,) = member.dispatch(key("B1", X["MO"]), 0.0)
    assert isinstance(report, Outgoing) and isinstance(report.body, ViolationReport)
    assert report.body.offender == "B1" and len(report.body.evidence) == 2
    assert member.peers["B1"].x25519 == X["B1"]  # the first is kept


def test_our_own_echo_is_ignored(member):
    assert member.dispatch(msg("S1", key("S1").body, recipient=topics.BROADCAST), 0.0) == []
    assert member.node.calls == []


def test_a_peers_rejoin_gets_a_resync_and_the_node_redoes_what_it_lost(member):
    start(member)
    out = member.dispatch(key("B1", incarnation=1, completed=7), 0.0)
    assert out[0] == Outgoing("B1", 0, Resync(1))
    assert member.node.calls[-1] == ("restarted", "B1", 7, False)
    assert member.peers["B1"] == PeerState(1, X["B1"], None)
    out = member.dispatch(key("B1", incarnation=2, completed=8, paillier_n=b"N"), 0.0)
    assert out[0] == Outgoing("B1", 0, Resync(2))
    assert member.node.calls[-1] == ("restarted", "B1", 8, True)  # a new Paillier key


def test_a_rejoin_before_our_start_is_redone_once_we_start(member):
    member.peers["B1"] = PeerState(0, X["B1"], None)  # known from our checkpoint
    member.incarnation = 1
    out = member.dispatch(key("B1", incarnation=1, completed=3), 0.0)
    assert out == [Outgoing("B1", 0, Resync(1))] and not member.started
    member.dispatch(key("MO"), 0.0)
    assert member.node.calls == [("start",), ("restarted", "B1", 3, False)]


def test_a_rejoin_without_the_checkpointed_agreement_key_is_refused(member):
    start(member)
    assert member.dispatch(key("B1", X["MO"], incarnation=1), 0.0) == []
    assert member.peers["B1"].incarnation == 0
    assert ("restarted", "B1", 0, False) not in member.node.calls


def test_other_keys_than_before_our_restart_without_a_restart_of_the_peer_are_a_violation(
    member,
):
    member.resume(1, {"B1": PeerState(0, X["B1"], None)})
    announcement = key("B1", X["MO"])
    (report,) = member.dispatch(announcement, 0.0)
    assert isinstance(report, Outgoing) and isinstance(report.body, ViolationReport)
    assert report.body.offender == "B1" and report.body.evidence == (announcement.raw,)
    assert "B1" not in member.announcements and member.peers["B1"].x25519 == X["B1"]


def test_a_rejoined_peers_resent_message_is_not_taken_for_a_conflicting_replay(identities):
    """A real restart: the peer resends round 5's share with fresh randomness (other bytes);
    before its rejoin that is a conflicting replay, after it the message is current."""
    roster = Roster({pid: ident.public_b64 for pid, ident in identities.items()})
    mine = Channel("S1", RUN, identities["S1"], roster, ROLES)
    member = Membership(Recorder(), mine)
    peer = Channel("B1", RUN, identities["B1"], roster, ROLES)
    peer.learn_agreement_key("S1", mine.x25519_public)
    member.dispatch(key("B1", peer.x25519_public), 0.0)
    member.dispatch(key("MO"), 0.0)
    first = mine.decode(*peer.encode(Outgoing("S1", 5, Share(7, 0))))
    member.dispatch(first, 0.0)
    resent = peer.encode(Outgoing("S1", 5, Share(7, 0)))
    with pytest.raises(Conflict):
        mine.decode(*resent)
    rejoin = key("B1", peer.x25519_public, incarnation=1, completed=4)
    assert member.dispatch(rejoin, 0.0)[0] == Outgoing("B1", 0, Resync(1))
    assert mine.decode(*resent).body == Share(7, 0)


def test_the_last_will_of_an_earlier_incarnation_is_ignored_the_current_one_passes(member):
    start(member)
    member.dispatch(key("B1", incarnation=2, completed=1), 0.0)
    member.dispatch(msg("B1", Gone(1), recipient=topics.BROADCAST), 0.0)
    assert member.node.calls[-1][0] == "restarted"
    member.dispatch(msg("B1", Gone(2), recipient=topics.BROADCAST), 0.0)
    assert member.node.calls[-1] == ("handle", "gone", "B1", 0)


def test_after_our_restart_a_peers_direct_messages_wait_for_its_resync(member):
    member.resume(1, {"B1": PeerState(0, X["B1"], None), "MO": PeerState(0, X["MO"], None)})
    start(member)
    assert member.admit(msg("B1", Share(5, 0), 42)) is Admission.DROP  # sent before it knew
    assert member.admit(msg("MO", Round(), 42, topics.BROADCAST)) is Admission.PASS
    assert member.admit(key("B1")) is Admission.PASS
    assert member.admit(msg("B1", Gone(), recipient=topics.BROADCAST)) is Admission.PASS
    assert member.admit(msg("B1", Resync(1))) is Admission.RESYNC
    assert member.resynced(msg("B1", Resync(0))) == []  # an answer to an earlier restart of ours
    assert "B1" in member.awaiting_resync
    member.resynced(msg("B1", Resync(1)))
    assert member.node.calls[-1] == ("resynced", "B1")
    assert member.admit(msg("B1", Share(5, 0), 42)) is Admission.PASS


def test_a_resync_before_our_start_is_answered_once_we_start(member):
    member.resume(1, {})
    member.resynced(msg("MO", Resync(1)))
    assert member.node.calls == []
    start(member)
    assert member.node.calls == [("start",), ("resynced", "MO")]


def test_after_a_restart_we_announce_our_incarnation_and_last_completed_round(member):
    assert member.announcement(5.0) == KeyAnnouncement(member.channel.x25519_public, 5.0)
    assert member.last_will() == Gone()
    member.resume(2, {})
    body = member.announcement(5.0)
    assert (body.incarnation, body.completed) == (2, 41)
    assert member.last_will() == Gone(2)


def test_a_sealed_message_from_an_unknown_peer_is_expected_only_after_our_restart(member):
    assert not member.expected_unknown("B1")
    member.resume(1, {"B1": PeerState(0, X["B1"], None)})
    assert member.expected_unknown("B1") and not member.expected_unknown("B2")


def test_the_membership_checkpoint_reads_back(member):
    start(member)
    content = member.checkpoint()
    assert Membership.peers_of(content) == member.peers
