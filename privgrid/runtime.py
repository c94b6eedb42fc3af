"""The event loop every participant runs: MQTT session ↔ secure channel ↔ role node.

A role is a :class:`Node`: plain synchronous code that turns checked messages (and clock
ticks) into messages to send. This module does everything around it, the same way for the
agents, the LM and the MO:

1. connect (persistent session, signed last will announcing our departure);
2. subscribe to our inbox, the broadcasts and the key announcements;
3. publish our retained, signed key announcement;
4. once the announcements of every participant we talk to are in, start the node; anything
   that arrived earlier waits in a buffer;
5. hand each message to the node; drop bad ones with one log line naming sender and reason;
6. stop when the node has an exit code; clear our retained announcement on the way out.

Restarts (docs/reliability.md): with a :class:`~privgrid.state.CheckpointStore` the runtime
saves a sealed checkpoint wherever the node puts :data:`CHECKPOINT` in its outgoing messages
(after everything before it is published, before anything after it), and at start-up resumes
from the checkpoint if there is one: same session keys, incarnation + 1, announced with the
last completed round. A peer that sees a higher incarnation forgets the peer's duplicate
state, answers ``resync`` and lets its node redo what the restarted peer lost; the restarted
participant ignores a peer's direct messages until that peer's ``resync`` (anything earlier
was sent before the peer knew of the restart).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privgrid.crypto.identity import Identity, Roster
from privgrid.crypto.sealing import AgreementKey
from privgrid.crypto.workers import crypto_pool
from privgrid.logs import ParticipantLog
from privgrid.scenario import MO_ID
from privgrid.wire import topics
from privgrid.wire.channel import (
    Channel,
    Conflict,
    Duplicate,
    Message,
    NotForMe,
    Outgoing,
    UnknownPeer,
)
from privgrid.wire.envelope import Rejected
from privgrid.wire.session import BrokerRefusedError, BrokerUrl, MqttSession, client_id

if TYPE_CHECKING:
    from privgrid.state import CheckpointStore

#: Process exit codes, shared by every role and the launcher; 130: stopped by SIGINT/SIGTERM.
EXIT_OK, EXIT_NOT_CONVERGED, EXIT_BAD_INPUT, EXIT_FAILURE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130

TICK_SECONDS = 0.2
#: Most messages with crypto jobs started before the oldest is handled.
MAX_PREPARED = 64

#: Put in a node's outgoing list: save the checkpoint once everything before it is published.
CHECKPOINT = Outgoing("checkpoint", "", 0)
#: Kinds a restarted participant accepts from a peer before that peer's ``resync``.
_BEFORE_RESYNC = frozenset({"key", "resync", "gone"})
#: Figures of :meth:`Participant.stats` that describe the present process, not a running
#: total: never added up across incarnations.
_NOT_CUMULATIVE = frozenset({"pid", "pool_left", "restarts", "wait_s"})


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
    mode: Any = None

    def announcement(self) -> dict[str, Any]:
        """Extra fields of our key announcement (the privacy mode adds its public key)."""
        return {} if self.mode is None else self.mode.announcement()

    def accept_announcement(self, sender: str, body: Mapping[str, Any]) -> None:
        """Check a peer's announcement beyond the signature; raise ``Rejected`` to refuse it."""
        if self.mode is not None:
            self.mode.accept_announcement(sender, body)

    @abstractmethod
    def start(self, now: float) -> list[Outgoing]:
        """Every needed announcement is in: begin."""

    @abstractmethod
    def handle(self, message: Message, now: float) -> list[Outgoing]:
        """React to one checked message."""

    def tick(self, now: float) -> list[Outgoing]:
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
        """The role's own figures for :meth:`Participant.stats` (proofs made, pool use …);
        running totals, added up across restarts like the traffic counters."""
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
    ) -> list[Outgoing]:
        """Log a protocol violation with the signed evidence and report it to the MO."""
        encoded = ",".join(base64.b64encode(item).decode() for item in evidence)
        self.log.error(
            "protocol violation by %s: %s; signed evidence (%d messages, base64): %s",
            offender,
            reason,
            len(evidence),
            encoded,
        )
        body = {"offender": offender, "reason": reason, "evidence": list(evidence)}
        return [Outgoing("violation", MO_ID, round_, body)]

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

    def peer_restarted(
        self, peer: str, completed: int, new_keys: bool, now: float
    ) -> list[Outgoing]:
        """``peer`` rejoined from its checkpoint at round ``completed`` (with a new Paillier key
        if ``new_keys``): redo or re-send what it lost. Called only once the node started."""
        return []

    def peer_resynced(self, peer: str) -> list[Outgoing]:
        """After our own restart, ``peer`` has seen it: re-send what it may have lost (what we
        sent it, or broadcast, between our checkpoint and the crash)."""
        return []

    def give_up(self, reason: str) -> list[Outgoing]:
        """The run cannot start (a peer never announced itself): last words before exiting."""
        self.finish(EXIT_FAILURE)
        return []

    def finish(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code


@dataclass
class Settings:
    run: str
    broker: BrokerUrl
    start_timeout: float = 60.0


class Participant:
    """Runs one node against one broker."""

    def __init__(
        self,
        node: Node,
        settings: Settings,
        identity: Identity,
        roster: Roster,
        roles: Mapping[str, str],
        store: CheckpointStore | None = None,
        new_paillier_key: bool = False,
    ) -> None:
        self.node = node
        self.settings = settings
        self.log = node.log
        self.channel = Channel(node.me, settings.run, identity, roster, roles)
        self.announcements: dict[str, tuple[tuple[bytes, bytes | None], bytes]] = {}
        self.started = False
        self.buffer: list[Message] = []
        self.began = time.perf_counter()
        self.store = store
        self.new_paillier_key = new_paillier_key
        self.incarnation = 0  # +1 at each restart from the checkpoint
        #: Running totals of the earlier incarnations (from the checkpoint): added to ours.
        self.earlier: dict[str, float] = {}
        #: Per peer: (incarnation, X25519 key, Paillier N) as last accepted; checkpointed.
        self.peer_state: dict[str, tuple[int, bytes, bytes | None]] = {}
        self.restarted_peers: dict[str, tuple[int, bool]] = {}  # seen before we started
        self.awaiting_resync: set[str] = set()
        self.resynced_early: list[str] = []  # peers that resynced before we started
        #: ``privacy.crypto_threads``: the process's worker threads, and the messages whose
        #: jobs run there, in arrival order, each handled once its job is done.
        self.workers = crypto_pool(node.crypto_threads) if node.crypto_threads else None
        self.prepared: deque[tuple[Message, float, asyncio.Future[None]]] = deque()
        node.stats = self.stats
        node.bind(self.channel)

    def stats(self) -> dict[str, float]:
        """Messages and bytes in/out, time in crypto, in the maths, and the rest (waiting),
        plus the role's own :meth:`Node.counters`: totals over every incarnation of this
        participant (a restarted one adds its checkpoint's totals; what happened between that
        checkpoint and the crash is not counted), except ``pid``, ``pool_left`` and
        ``restarts``, which describe this process."""
        current = {
            **{k: float(v) for k, v in self.channel.stats.items()},
            **{k: float(v) for k, v in self.node.counters().items()},
            "wall_s": time.perf_counter() - self.began,
            "crypto_s": self.channel.crypto_seconds + self.node.crypto_seconds(),
            "compute_s": self.node.compute_seconds,
        }
        totals = {k: v for k, v in self.earlier.items() if k not in _NOT_CUMULATIVE}
        for key, value in current.items():
            earlier = 0.0 if key in _NOT_CUMULATIVE else totals.get(key, 0.0)
            totals[key] = earlier + value
        totals["wait_s"] = max(0.0, totals["wall_s"] - totals["crypto_s"] - totals["compute_s"])
        totals["pid"] = float(os.getpid())
        totals["restarts"] = float(self.incarnation)
        return totals

    def _will(self) -> tuple[str, bytes]:
        body = {"incarnation": self.incarnation} if self.incarnation else {}
        topic, payload = self.channel.encode(Outgoing("gone", topics.BROADCAST, 0, body))
        self.channel.stats["sent"] -= 1  # the broker sends it, if ever
        self.channel.stats["sent_bytes"] -= len(payload)
        return topic, payload

    # -- checkpoints -------------------------------------------------------------------------
    def _resume(self) -> None:
        """Load the checkpoint, if any: session keys, incarnation, the node's state."""
        from privgrid.state import StateError

        if self.store is None:
            return
        content = self.store.load()
        if content is None:
            return
        try:
            secrets = content["secrets"]
            self.channel.agreement = AgreementKey.from_private_bytes(secrets["x25519"])
            if not self.new_paillier_key:
                self.node.restore_session_secrets(secrets)
            self.node.restore(content["node"])
            self.incarnation = int(content["incarnation"]) + 1
            self.earlier = {k: float(v) for k, v in content.get("stats", {}).items()}
            self.peer_state = {
                peer: (int(inc), bytes(x), None if n is None else bytes(n))
                for peer, (inc, x, n) in content["peers"].items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{self.store.path}: the checkpoint is incomplete ({exc})") from None
        self.node.restored = True
        self.awaiting_resync = set(self.node.peers())
        self.log.warning(
            "resuming from checkpoint %s: incarnation %d, last completed round %d%s",
            self.store.path,
            self.incarnation,
            self.node.resume_point(),
            ", with a new Paillier key" if self.new_paillier_key else "",
        )

    def save_checkpoint(self) -> None:
        if self.store is None:
            return
        snapshot = self.node.snapshot()
        if snapshot is None:
            return
        secrets = {"x25519": self.channel.agreement.private_bytes(), **self.node.session_secrets()}
        totals = {k: v for k, v in self.stats().items() if k not in _NOT_CUMULATIVE}
        self.store.save(
            {
                "incarnation": self.incarnation,
                "peers": {p: list(v) for p, v in self.peer_state.items()},
                "secrets": secrets,
                "node": snapshot,
                "stats": totals,  # running totals, continued by the next incarnation
            }
        )

    async def run(self) -> int:
        me, run = self.node.me, self.settings.run
        from privgrid.state import StateError

        try:
            self._resume()
        except StateError as exc:
            self.log.error("%s", exc)
            self.node.give_up(str(exc))
            return EXIT_BAD_INPUT
        session = MqttSession(
            self.settings.broker,
            client_id(run, me),
            [
                topics.inbox_filter(run, me),
                *self._subscriptions(),
                *self.node.extra_subscriptions(run),
            ],
            self.log,
            will=self._will(),
        )
        try:
            await session.start(self.settings.start_timeout)
        except TimeoutError as exc:
            self.log.error("%s", exc)
            self.node.give_up(f"{me} could not connect to the broker: {exc}")
            return EXIT_FAILURE
        except BrokerRefusedError:  # a certificate problem, logged by the session: bad input
            return EXIT_BAD_INPUT
        self.log.info("connected to %s as %s", self.settings.broker, me)
        try:
            return await self._loop(session)
        finally:
            if self.node.exit_code is not None:
                await session.publish(topics.keys(run, me), b"", retain=True)
            await session.close()

    def _subscriptions(self) -> list[str]:
        """Announcements and broadcasts: of everyone when we listen to (nearly) everyone,
        else only of those we listen to. With 500 agents each pairing with a few, the
        wildcards would deliver every agent's announcement and departure to every agent
        (250,000 messages, each checked) for nothing."""
        run, me = self.settings.run, self.node.me
        wanted = self.node.listens_to() - {me}
        if len(wanted) * 2 >= len(self.channel.roles) - 1:
            return [topics.broadcast_filter(run), topics.keys_filter(run)]
        return [
            *(topics.broadcast_filter(run, p) for p in sorted(wanted)),
            *(topics.keys(run, p) for p in sorted(wanted)),
        ]

    async def _send(self, session: MqttSession, outgoing: list[Outgoing]) -> None:
        """Publish the node's messages in order, pipelined: a batch is in flight at once (one
        round trip for all, not one each); a checkpoint waits for everything before it."""
        batch: list[tuple[str, bytes, bool]] = []
        for out in outgoing:
            if out is CHECKPOINT:  # everything before it is published; nothing after it yet
                await self._publish_all(session, batch)
                batch = []
                self.save_checkpoint()
                continue
            batch.append((*self.channel.encode(out), out.retain))
        await self._publish_all(session, batch)

    @staticmethod
    async def _publish_all(session: MqttSession, batch: list[tuple[str, bytes, bool]]) -> None:
        # The tasks start in order, so the messages leave in order.
        await asyncio.gather(*(session.publish(t, p, retain=r) for t, p, r in batch))

    async def _loop(self, session: MqttSession) -> int:
        self.save_checkpoint()  # the session keys and incarnation, before anyone sees them
        body = {"x25519": self.channel.x25519_public, "created": time.time()}
        body.update(self.node.announcement())
        if self.incarnation:
            body.update(incarnation=self.incarnation, completed=self.node.resume_point())
        await self._send(session, [Outgoing("key", topics.BROADCAST, 0, body, retain=True)])
        deadline = time.monotonic() + self.settings.start_timeout
        while self.node.exit_code is None:
            if self.prepared and (session.inbox.empty() or len(self.prepared) >= MAX_PREPARED):
                await self._handle_prepared(session)
                continue
            try:
                topic, payload = await asyncio.wait_for(session.inbox.get(), TICK_SECONDS)
            except TimeoutError:
                topic = None
            now = time.monotonic()
            if topic is None:
                if self.started:
                    await self._send(session, self.node.tick(now))
                elif now > deadline:
                    missing = sorted(self.node.peers() - set(self.announcements))
                    reason = (
                        f"no key announcement from {', '.join(missing)} within "
                        f"{self.settings.start_timeout:g} s"
                    )
                    self.log.error("%s; giving up", reason)
                    await self._send(session, self.node.give_up(reason))
                    return EXIT_FAILURE
                continue
            if not payload and topic.startswith(f"{topics.PREFIX}/{self.settings.run}/keys/"):
                continue  # a cleared retained announcement
            try:
                message = self.channel.decode(topic, payload)
            except NotForMe:
                continue
            except Duplicate as dup:
                self.log.info("ignored a duplicate from %s on %s", dup.sender, topic)
                continue
            except Conflict as exc:
                if self.started:
                    await self._handle_prepared(session)  # reports keep arrival order
                    await self._send(
                        session,
                        self.node.report_violation(
                            exc.sender or "?", exc.reason, exc.evidence, exc.round
                        ),
                    )
                continue
            except UnknownPeer as exc:
                self._unknown_peer(exc, topic)
                continue
            except Rejected as exc:
                self.log.warning(
                    "dropped message from %s on %s: %s", exc.sender or "?", topic, exc.reason
                )
                continue
            if message.sender in self.awaiting_resync:
                if message.kind == "resync":
                    await self._handle_prepared(session)  # what came before it, first
                    await self._send(session, self._resynced(message))
                    continue
                if not self._before_resync(message):
                    continue
            if self._prepare(message, now):
                continue  # handled when its job is done, after those before it
            await self._handle_prepared(session)
            await self._handle(session, message, now)
        return self.node.exit_code

    def _unknown_peer(self, exc: UnknownPeer, topic: str) -> None:
        """A sealed message from a peer whose announcement is not in: after our restart, one
        the broker queued for our session while we were away (the peer had not seen the
        restart; it will send again after its ``resync``) — expected, logged at INFO; from a
        participant we do not know at all, a WARNING and a rejection like any other."""
        sender = exc.sender or "?"
        if self.incarnation and sender in self.peer_state:
            self.log.info(
                "ignored a message from %s on %s: queued for us before our restart, and its "
                "key announcement is not in yet (it sends again after its resync)",
                sender,
                topic,
            )
            return
        self.channel.stats["rejected"] += 1
        self.log.warning("dropped message from %s on %s: %s", sender, topic, exc.reason)

    async def _handle(self, session: MqttSession, message: Message, now: float) -> None:
        await self._send(session, self._dispatch(message, now))
        # Duplicate detection needs only recent rounds; older replays meet the node's round
        # check instead (and are logged as stale).
        self.channel.forget_rounds_before(self.node.active_round() - 1)

    def _prepare(self, message: Message, now: float) -> bool:
        """Start ``message``'s heavy crypto on a worker thread; False if it has none.

        While it runs, the loop reads the next messages (their jobs run alongside: pairs do
        not wait for each other's crypto) and the process's other agents go on. Messages are
        still handled one at a time and in arrival order (:meth:`_handle_prepared`); a message
        without a job first waits for those before it.
        """
        if self.workers is None or not self.started or message.sender == self.node.me:
            return False
        job = self.node.precompute(message)
        if job is None:
            return False
        future = asyncio.get_running_loop().run_in_executor(self.workers, job)
        self.prepared.append((message, now, future))
        return True

    async def _handle_prepared(self, session: MqttSession) -> None:
        """Handle the messages whose jobs were started, in order, each once its job is done."""
        while self.prepared and self.node.exit_code is None:
            message, now, future = self.prepared.popleft()
            try:
                await future
            except Exception as exc:  # a job must not fail; if one does, handle() works inline
                self.log.warning(
                    "worker job for %s from %s failed: %r", message.kind, message.sender, exc
                )
            await self._handle(session, message, now)

    def _resynced(self, message: Message) -> list[Outgoing]:
        """A peer answered our restart: from now on its messages are current again."""
        if message.body["incarnation"] != self.incarnation:
            return []  # an answer to an earlier restart of ours
        self.awaiting_resync.discard(message.sender)
        # What it sent before (ignored above) must not count as seen: its resent messages
        # carry the same round/kind with other bytes (fresh randomness).
        self.channel.forget_sender(message.sender)
        self.log.info("%s resynced with us", message.sender)
        if not self.started:
            self.resynced_early.append(message.sender)
            return []
        return self.node.peer_resynced(message.sender)

    def _before_resync(self, message: Message) -> bool:
        """After our restart: may this message from a peer that has not resynced pass?"""
        if message.kind in _BEFORE_RESYNC or message.recipient == topics.BROADCAST:
            return True  # announcements, departures and broadcasts are never stale
        self.log.info(
            "ignored %s of round %d from %s: sent before it saw our restart",
            message.kind,
            message.round,
            message.sender,
        )
        return False

    def _dispatch(self, message: Message, now: float) -> list[Outgoing]:
        if message.sender == self.node.me:
            return []  # our own broadcast or announcement, echoed by the broker
        if message.kind == "key":
            return self._on_announcement(message, now)
        if message.kind == "resync":
            return []  # a late one (we resumed earlier): nothing to do
        if message.kind == "gone":
            known = self.peer_state.get(message.sender, (0,))[0]
            if message.body.get("incarnation", 0) < known:
                self.log.info("ignored the last will of an earlier run of %s", message.sender)
                return []
        if not self.started:
            if message.kind == "stop":
                self.log.error(
                    "the run was stopped before it started: %s", message.body.get("reason", "")
                )
                self.node.finish(EXIT_FAILURE)
                return []
            self.buffer.append(message)
            return []
        return self.node.handle(message, now)

    def _on_announcement(self, message: Message, now: float) -> list[Outgoing]:
        sender = message.sender
        material = (message.body["x25519"], message.body.get("paillier_n"))
        incarnation = message.body.get("incarnation", 0)
        before = self.peer_state.get(sender)
        if incarnation > (before[0] if before else 0):
            return self._on_restart(message, now)
        known = self.announcements.get(sender)
        if known is None and before is not None and before[1:] != material:
            reason = "announced other keys than before our restart, without restarting itself"
            return self.node.report_violation(sender, reason, [message.raw], 0)
        if known is not None:
            if known[0] != material:
                reason = (
                    f"announced a second, different key in run {self.settings.run}; "
                    "the first is kept"
                )
                return self.node.report_violation(sender, reason, [known[1], message.raw], 0)
            return []
        try:
            self.node.accept_announcement(sender, message.body)
        except Rejected as exc:
            self.log.warning("rejected the key announcement of %s: %s", sender, exc.reason)
            return []
        self._learn(message, incarnation)
        self.log.info("accepted the key announcement of %s", sender)
        return self._maybe_start(now)

    def _learn(self, message: Message, incarnation: int) -> None:
        sender, body = message.sender, message.body
        material = (body["x25519"], body.get("paillier_n"))
        self.announcements[sender] = (material, message.raw)
        self.peer_state[sender] = (incarnation, *material)
        self.channel.learn_agreement_key(sender, body["x25519"])

    def _maybe_start(self, now: float) -> list[Outgoing]:
        if self.started or not self.node.peers() <= set(self.announcements):
            return []
        self.started = True
        self.log.info("all %d peers announced; starting", len(self.node.peers()))
        outgoing = self.node.start(now)
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

    def _on_restart(self, message: Message, now: float) -> list[Outgoing]:
        """A peer rejoined from its checkpoint (a higher incarnation than we knew)."""
        sender, body = message.sender, message.body
        incarnation, completed = body.get("incarnation", 0), body.get("completed", 0)
        before = self.peer_state.get(sender)
        if before is not None and before[1] != body["x25519"]:
            self.log.error(
                "refused the rejoin of %s: it lost its checkpointed agreement key (a restart "
                "must resume from its checkpoint)",
                sender,
            )
            return []
        new_keys = before is not None and before[2] != body.get("paillier_n")
        try:
            self.node.accept_announcement(sender, body)
        except Rejected as exc:
            self.log.warning("rejected the rejoin of %s: %s", sender, exc.reason)
            return []
        self._learn(message, incarnation)
        self.channel.forget_sender(sender)
        self.log.warning(
            "%s rejoined (incarnation %d, last completed round %d%s)",
            sender,
            incarnation,
            completed,
            ", new Paillier key" if new_keys else "",
        )
        outgoing = [Outgoing("resync", sender, 0, {"incarnation": incarnation})]
        if self.started:
            outgoing += self.node.peer_restarted(sender, completed, new_keys, now)
        else:
            self.restarted_peers[sender] = (completed, new_keys)
            outgoing += self._maybe_start(now)
        return outgoing
