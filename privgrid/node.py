"""What a role is to the runtime: a :class:`Node`, its protocol logic with no I/O.

A node turns checked messages (and clock ticks) into :data:`Action` s — messages to send, in
order, and :data:`CHECKPOINT` where the runtime saves its checkpoint. The asyncio loop around it
is :mod:`privgrid.runtime`; who is in the run and the restart rules are
:mod:`privgrid.membership`. Both import the node's interface from here, so neither depends on
the other's module to know what a node is.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from privgrid.logs import ParticipantLog
from privgrid.scenario import MO_ID
from privgrid.wire.channel import Channel, Message, Outgoing
from privgrid.wire.kinds import KeyAnnouncement, ViolationReport

if TYPE_CHECKING:
    from privgrid.privacy import PrivacyMode

#: Process exit codes, shared by every role and the launcher; 130: stopped by SIGINT/SIGTERM.
EXIT_OK, EXIT_NOT_CONVERGED, EXIT_BAD_INPUT, EXIT_FAILURE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130


class Checkpoint:
    """Not a message: where in a node's outgoing list the runtime saves the checkpoint."""

    def __repr__(self) -> str:
        return "CHECKPOINT"


#: Put in a node's outgoing list: save the checkpoint once everything before it is published.
CHECKPOINT = Checkpoint()
#: What a node returns: messages to send, in order, and where to checkpoint.
Action = Outgoing | Checkpoint


class Node(ABC):
    """A role's protocol logic. No I/O: messages in, messages out."""

    def __init__(self, me: str, log: ParticipantLog) -> None:
        self.me = me
        self.log = log
        self.exit_code: int | None = None
        self.compute_seconds = 0.0  # time in the market maths (set by the role)
        #: Traffic and timing counters of this process, provided by the runtime.
        self.stats: Callable[[], dict[str, float]] = dict
        #: The secure channel (keys learnt from announcements), set by the runtime.
        self.channel: Channel | None = None

    @abstractmethod
    def peers(self) -> set[str]:
        """Participants whose key announcements must be in before :meth:`start`."""

    #: The role's privacy mode (:class:`privgrid.privacy.PrivacyMode`), set by roles that
    #: have one: announcements, peers' key checks, session keys and crypto time go through it.
    mode: PrivacyMode | None = None

    def announcement(self, base: KeyAnnouncement) -> KeyAnnouncement:
        """Our key announcement: ``base`` (the agreement key) plus what the privacy mode adds
        (its public key)."""
        return base if self.mode is None else self.mode.announcement(base)

    def accept_announcement(self, sender: str, body: KeyAnnouncement) -> None:
        """Check a peer's announcement beyond the signature; raise ``Rejected`` to refuse it."""
        if self.mode is not None:
            self.mode.accept_announcement(sender, body)

    @abstractmethod
    def start(self, now: float) -> list[Action]:
        """Every needed announcement is in: begin."""

    @abstractmethod
    def handle(self, message: Message, now: float) -> list[Action]:
        """React to one checked message."""

    def tick(self, now: float) -> list[Action]:
        """Called a few times a second: timeouts live here."""
        return []

    #: Worker threads for :meth:`precompute` jobs (``privacy.crypto_threads``); 0: none.
    crypto_threads = 0

    def precompute(self, message: Message) -> Callable[[], None] | None:
        """A job to run on a worker thread before :meth:`handle` gets ``message`` (its heavy,
        side-effect-free crypto), or None. Only asked when ``crypto_threads`` > 0."""
        return None

    def crypto_seconds(self) -> float:
        """Time spent in the privacy mode's cryptography (beyond signing and sealing)."""
        return 0.0 if self.mode is None else self.mode.counters.total_seconds

    def counters(self) -> dict[str, float]:
        """The role's own figures for :meth:`privgrid.runtime.Participant.stats` (proofs
        made, pool use …); running totals, added up across restarts like the traffic
        counters."""
        return {}

    def bind(self, channel: Channel) -> None:
        """The runtime hands the node its secure channel (keys learnt from announcements)."""
        self.channel = channel

    def extra_subscriptions(self, run: str) -> list[str]:
        """Topic filters beyond inbox, broadcasts and keys (a colluder's coalition topic)."""
        return []

    def listens_to(self) -> set[str]:
        """Participants whose announcements and broadcasts this node reads: its peers, plus
        anyone it talks to without waiting for them (a colluder's coalition)."""
        return self.peers()

    def active_round(self) -> int:
        """The round this participant is in (what its log lines show)."""
        return self.log.round

    def report_violation(
        self, offender: str, reason: str, evidence: Sequence[bytes], round_: int
    ) -> list[Action]:
        """Log a protocol violation with the signed evidence and report it to the MO."""
        encoded = ",".join(base64.b64encode(item).decode() for item in evidence)
        self.log.error(
            "protocol violation by %s: %s; signed evidence (%d messages, base64): %s",
            offender,
            reason,
            len(evidence),
            encoded,
        )
        body = ViolationReport(offender, reason, tuple(evidence))
        return [Outgoing(MO_ID, round_, body)]

    # -- restarts (docs/reliability.md) ---------------------------------------------------------
    #: Set by :meth:`restore`: the node resumes from a checkpoint instead of starting afresh.
    restored = False

    def snapshot(self) -> dict[str, Any] | None:
        """The node's state for the checkpoint (None: this node does not checkpoint)."""
        return None

    def restore(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`snapshot`'s content (called before the announcement)."""
        raise NotImplementedError(f"{type(self).__name__} cannot resume from a checkpoint")

    def session_secrets(self) -> dict[str, bytes]:
        """Session keys beyond the X25519 key (the Paillier primes), for the checkpoint."""
        return {} if self.mode is None else self.mode.session_secrets()

    def restore_session_secrets(self, secrets: Mapping[str, bytes]) -> None:
        """Reuse the checkpointed session keys."""
        if self.mode is not None:
            self.mode.restore_session_secrets(secrets)

    def resume_point(self) -> int:
        """The last round this participant completed (announced after a restart)."""
        return 0

    def last_words(self) -> list[Action]:
        """A node restored from a checkpoint it saved after its end (:meth:`restore` set its
        exit code): what it sends again before it exits. The runtime neither waits for peers
        nor starts it — they may have left, having heard its end (a day's MO killed after
        ``closed``)."""
        return []

    def peer_restarted(
        self, peer: str, completed: int, new_keys: bool, now: float
    ) -> list[Action]:
        """``peer`` rejoined from its checkpoint at round ``completed`` (with a new Paillier key
        if ``new_keys``): redo or re-send what it lost. Called only once the node started."""
        return []

    def peer_resynced(self, peer: str) -> list[Action]:
        """After our own restart, ``peer`` has seen it: re-send what it may have lost (what we
        sent it, or broadcast, between our checkpoint and the crash)."""
        return []

    def give_up(self, reason: str) -> list[Action]:
        """The run cannot start (a peer never announced itself): last words before exiting."""
        self.finish(EXIT_FAILURE)
        return []

    def finish(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code
