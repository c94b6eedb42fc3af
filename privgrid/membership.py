"""Who is in the run, in which incarnation, and what a message may do before the node sees it:
a participant's membership and restart rules as a state machine, apart from the event loop.

Inputs: checked messages (from the channel) and the clock; outputs: what to send
(:data:`~privgrid.node.Action`), plus the channel's per-peer state it keeps current (the
agreement keys it learns, the duplicate-detection state it forgets). No asyncio, no MQTT: the
asyncio loop (:mod:`privgrid.runtime`) only feeds it and publishes what it returns; every rule
here is tested directly (tests/test_membership.py).

- **Start.** The node starts once the key announcements of all its peers are accepted
  (:meth:`Node.peers`); what arrives before waits in a buffer and is handed over in order
  right after the start — except a ``stop`` (the MO could not start the run), which ends the
  node at once.
- **Announcements.** A peer's first announcement is checked by the node's privacy mode and
  teaches the channel the peer's agreement key. The same one again is nothing; a second,
  *different* key in the same incarnation is a violation, reported with both signed
  announcements; a peer that announces other keys than before our own restart, without
  restarting itself, likewise (with that announcement). Our own announcements and
  broadcasts, echoed by the broker, are nothing.
- **A peer's restart** (docs/reliability.md): a higher incarnation with the same agreement key
  is a rejoin from its checkpoint: its duplicate-detection state starts over, it gets a
  ``resync``, and the node redoes or re-sends what it lost (:meth:`Node.peer_restarted`; before
  our own start, once we start). A rejoin with another agreement key is refused (it did not
  resume from its checkpoint). The last will of an earlier incarnation is ignored.
- **Our own restart.** After resuming from our checkpoint we ignore a peer's direct messages
  until its ``resync`` for our incarnation (they were sent before it knew of the restart —
  by a peer that restarted with us, also from its new incarnation: it re-sends those when it
  sees our rejoin, :meth:`Node.peer_restarted`, so no stale message is ever used and none is
  missing); announcements, departures and broadcasts always pass. Its ``resync`` lets the node
  re-send what the peer may have lost (:meth:`Node.peer_resynced`; before our start, once we
  start).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from privgrid.node import EXIT_FAILURE, Action, Node
from privgrid.wire import topics
from privgrid.wire.channel import Channel, Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import Gone, KeyAnnouncement, Kind, Resync, Stop

#: Kinds a restarted participant accepts from a peer before that peer's ``resync``.
_BEFORE_RESYNC = frozenset({Kind.KEY, Kind.RESYNC, Kind.GONE})


@dataclass(frozen=True)
class PeerState:
    """A peer as last accepted: its incarnation and its announced keys (checkpointed)."""

    incarnation: int
    x25519: bytes
    paillier_n: bytes | None

    @property
    def keys(self) -> tuple[bytes, bytes | None]:
        return (self.x25519, self.paillier_n)


class Admission(Enum):
    """What a checked message may do next (:meth:`Membership.admit`)."""

    PASS = "pass"  # on to the node (after its crypto job, if any)
    DROP = "drop"  # sent before the peer knew of our restart: stale
    RESYNC = "resync"  # the peer's answer to our restart: :meth:`Membership.resynced`


class Membership:
    """The membership and restart state of one participant (see the module docstring)."""

    def __init__(self, node: Node, channel: Channel) -> None:
        self.node = node
        self.channel = channel
        self.log = node.log
        self.incarnation = 0  # ours: +1 at each restart from the checkpoint
        self.started = False
        self.buffer: list[Message] = []  # what came before the start, in order
        #: Per peer: the keys of its accepted announcement in this incarnation of ours, and
        #: the signed announcement (evidence if it announces other keys).
        self.announcements: dict[str, tuple[tuple[bytes, bytes | None], bytes]] = {}
        self.peers: dict[str, PeerState] = {}  # as last accepted; checkpointed
        self.restarted_peers: dict[str, tuple[int, bool]] = {}  # seen before we started
        self.awaiting_resync: set[str] = set()  # after our restart: who has not resynced
        self.resynced_early: list[str] = []  # peers that resynced before we started

    # -- our own restart ----------------------------------------------------------------------
    def resume(self, incarnation: int, peers: Mapping[str, PeerState]) -> None:
        """We resumed from our checkpoint, taken in ``incarnation`` − 1."""
        self.incarnation = incarnation
        self.peers = dict(peers)
        self.awaiting_resync = set(self.node.peers())

    def checkpoint(self) -> dict[str, Any]:
        """What our checkpoint keeps of the membership (msgpack-able)."""
        return {
            "incarnation": self.incarnation,
            "peers": {p: [s.incarnation, s.x25519, s.paillier_n] for p, s in self.peers.items()},
        }

    @staticmethod
    def peers_of(content: Mapping[str, Any]) -> dict[str, PeerState]:
        """The peers of :meth:`checkpoint`'s content (``ValueError``/``TypeError`` if bad)."""
        return {
            str(peer): PeerState(int(inc), bytes(x), None if n is None else bytes(n))
            for peer, (inc, x, n) in content["peers"].items()
        }

    # -- what we announce -----------------------------------------------------------------------
    def announcement(self, created: float) -> KeyAnnouncement:
        """Our key announcement: the agreement key, the privacy mode's keys, and after a
        restart our incarnation and the last round we completed."""
        body = self.node.announcement(KeyAnnouncement(self.channel.x25519_public, created))
        if not self.incarnation:
            return body
        return replace(body, incarnation=self.incarnation, completed=self.node.resume_point())

    def last_will(self) -> Gone:
        """Our departure, published by the broker if we vanish (with our incarnation, so that
        a peer tells a late will of an earlier run of ours from a departure now)."""
        return Gone(self.incarnation or None)

    def missing(self) -> list[str]:
        """Peers whose announcement is not in yet (the start waits for them)."""
        return sorted(self.node.peers() - set(self.announcements))

    # -- messages -------------------------------------------------------------------------------
    def admit(self, message: Message) -> Admission:
        """After our restart, may ``message`` pass before its sender's ``resync``?"""
        if message.sender not in self.awaiting_resync:
            return Admission.PASS
        if isinstance(message.body, Resync):
            return Admission.RESYNC
        if message.kind in _BEFORE_RESYNC or message.recipient == topics.BROADCAST:
            return Admission.PASS  # announcements, departures and broadcasts are never stale
        self.log.info(
            "ignored %s of round %d from %s: sent before it saw our restart",
            message.kind,
            message.round,
            message.sender,
        )
        return Admission.DROP

    def resynced(self, message: Message) -> list[Action]:
        """A peer's ``resync`` (:attr:`Admission.RESYNC`) answered our restart: from now on its
        messages are current again."""
        sender, body = message.sender, message.body
        if not isinstance(body, Resync) or body.incarnation != self.incarnation:
            return []  # an answer to an earlier restart of ours
        self.awaiting_resync.discard(sender)
        # What it sent before (ignored above) must not count as seen: its resent messages
        # carry the same round/kind with other bytes (fresh randomness).
        self.channel.forget_sender(sender)
        self.log.info("%s resynced with us", sender)
        if not self.started:
            self.resynced_early.append(sender)
            return []
        return self.node.peer_resynced(sender)

    def dispatch(self, message: Message, now: float) -> list[Action]:
        """A checked, admitted message: membership's own, or the node's (buffered before the
        start)."""
        if message.sender == self.node.me:
            return []  # our own broadcast or announcement, echoed by the broker
        body = message.body
        match body:
            case KeyAnnouncement():
                return self._announced(message, body, now)
            case Resync():
                return []  # a late one (we resumed earlier): nothing to do
            case Gone(incarnation=incarnation):
                known = self.peers.get(message.sender)
                if (incarnation or 0) < (known.incarnation if known else 0):
                    self.log.info("ignored the last will of an earlier run of %s", message.sender)
                    return []
        if not self.started:
            if isinstance(body, Stop):
                self.log.error("the run was stopped before it started: %s", body.reason)
                self.node.finish(EXIT_FAILURE)
                return []
            self.buffer.append(message)
            return []
        return self.node.handle(message, now)

    def expected_unknown(self, sender: str) -> bool:
        """A sealed message from a peer whose announcement is not in: expected after our
        restart from a peer we knew (the broker queued it for us while we were away; the peer
        sends again after its resync), unexpected from anyone else."""
        return bool(self.incarnation) and sender in self.peers

    # -- announcements ---------------------------------------------------------------------------
    def _announced(self, message: Message, body: KeyAnnouncement, now: float) -> list[Action]:
        sender = message.sender
        keys = (body.x25519, body.paillier_n)
        incarnation = body.incarnation or 0
        before = self.peers.get(sender)
        if incarnation > (before.incarnation if before else 0):
            return self._rejoined(message, body, now)
        known = self.announcements.get(sender)
        if known is None and before is not None and before.keys != keys:
            reason = "announced other keys than before our restart, without restarting itself"
            return self.node.report_violation(sender, reason, [message.raw], 0)
        if known is not None:
            if known[0] != keys:
                reason = (
                    f"announced a second, different key in run {self.channel.run}; "
                    "the first is kept"
                )
                return self.node.report_violation(sender, reason, [known[1], message.raw], 0)
            return []
        try:
            self.node.accept_announcement(sender, body)
        except Rejected as exc:
            self.log.warning("rejected the key announcement of %s: %s", sender, exc.reason)
            return []
        self._learn(message, body, incarnation)
        self.log.info("accepted the key announcement of %s", sender)
        return self._maybe_start(now)

    def _learn(self, message: Message, body: KeyAnnouncement, incarnation: int) -> None:
        sender = message.sender
        self.announcements[sender] = ((body.x25519, body.paillier_n), message.raw)
        self.peers[sender] = PeerState(incarnation, body.x25519, body.paillier_n)
        self.channel.learn_agreement_key(sender, body.x25519)

    def _maybe_start(self, now: float) -> list[Action]:
        if self.started or not self.node.peers() <= set(self.announcements):
            return []
        self.started = True
        self.log.info("all %d peers announced; starting", len(self.node.peers()))
        outgoing: list[Action] = self.node.start(now)
        for peer, (completed, new_keys) in self.restarted_peers.items():
            outgoing += self.node.peer_restarted(peer, completed, new_keys, now)
        self.restarted_peers = {}
        for peer in self.resynced_early:
            outgoing += self.node.peer_resynced(peer)
        self.resynced_early = []
        buffered, self.buffer = self.buffer, []
        for early in buffered:
            outgoing += self.node.handle(early, now)
        return outgoing

    def _rejoined(self, message: Message, body: KeyAnnouncement, now: float) -> list[Action]:
        """A peer rejoined from its checkpoint (a higher incarnation than we knew)."""
        sender = message.sender
        incarnation, completed = body.incarnation or 0, body.completed or 0
        before = self.peers.get(sender)
        if before is not None and before.x25519 != body.x25519:
            self.log.error(
                "refused the rejoin of %s: it lost its checkpointed agreement key (a restart "
                "must resume from its checkpoint)",
                sender,
            )
            return []
        new_keys = before is not None and before.paillier_n != body.paillier_n
        try:
            self.node.accept_announcement(sender, body)
        except Rejected as exc:
            self.log.warning("rejected the rejoin of %s: %s", sender, exc.reason)
            return []
        self._learn(message, body, incarnation)
        self.channel.forget_sender(sender)
        self.log.warning(
            "%s rejoined (incarnation %d, last completed round %d%s)",
            sender,
            incarnation,
            completed,
            ", new Paillier key" if new_keys else "",
        )
        outgoing: list[Action] = [Outgoing(sender, 0, Resync(incarnation))]
        if self.started:
            outgoing += self.node.peer_restarted(sender, completed, new_keys, now)
        else:
            self.restarted_peers[sender] = (completed, new_keys)
            outgoing += self._maybe_start(now)
        return outgoing
