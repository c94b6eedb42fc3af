"""The event loop every participant runs: MQTT session ↔ secure channel ↔ membership ↔ node.

A role is a :class:`~privgrid.node.Node` (:mod:`privgrid.node`, re-exported here): plain
synchronous code that turns checked messages (and clock ticks) into messages to send. Who is
in the run, in which incarnation, and the restart rules are a state machine of their own,
equally free of I/O (:mod:`privgrid.membership`). This module is the thin asyncio loop around
both — it feeds them and publishes what they return — the same way for the agents, the LM and
the MO:

1. connect (persistent session, signed last will announcing our departure);
2. subscribe to our inbox, the broadcasts and the key announcements;
3. publish our retained, signed key announcement;
4. once the announcements of every participant we talk to are in, start the node; anything
   that arrived earlier waits in a buffer (both: :class:`~privgrid.membership.Membership`);
5. hand each message to the membership, which passes it on to the node; drop bad ones with
   one log line naming sender and reason;
6. stop when the node has an exit code; clear our retained announcement on the way out.

Restarts (docs/reliability.md): with a :class:`~privgrid.state.CheckpointStore` the runtime
saves a sealed checkpoint wherever the node puts :data:`CHECKPOINT` in its outgoing messages
(after everything before it is published, before anything after it), and at start-up resumes
from the checkpoint if there is one: same session keys, incarnation + 1, announced with the
last completed round. A peer that sees a higher incarnation forgets the peer's duplicate
state, answers ``resync`` and lets its node redo what the restarted peer lost; the restarted
participant ignores a peer's direct messages until that peer's ``resync`` (anything earlier
was sent before the peer knew of the restart). Those rules are :mod:`privgrid.membership`'s;
this module loads and saves the checkpoint around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from privgrid.crypto.identity import Identity, Roster
from privgrid.crypto.sealing import AgreementKey
from privgrid.crypto.workers import crypto_pool
from privgrid.membership import Admission, Membership
from privgrid.node import (
    CHECKPOINT,
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_CONVERGED,
    EXIT_OK,
    Action,
    Checkpoint,
    Node,
)
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

#: The node's interface lives in :mod:`privgrid.node`; roles and tools import it from here too.
__all__ = [
    "CHECKPOINT",
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_CONVERGED",
    "EXIT_OK",
    "MAX_PREPARED",
    "TICK_SECONDS",
    "Action",
    "Checkpoint",
    "Node",
    "Participant",
    "Settings",
]

TICK_SECONDS = 0.2
#: Most messages with crypto jobs started before the oldest is handled.
MAX_PREPARED = 64
#: Figures of :meth:`Participant.stats` that describe the present process, not a running
#: total: never added up across incarnations.
_NOT_CUMULATIVE = frozenset({"pid", "pool_left", "restarts", "wait_s"})


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
        #: Who is in the run, in which incarnation, and the restart rules (pure logic).
        self.membership = Membership(node, self.channel)
        self.began = time.perf_counter()
        self.store = store
        self.new_paillier_key = new_paillier_key
        #: Running totals of the earlier incarnations (from the checkpoint): added to ours.
        self.earlier: dict[str, float] = {}
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
        totals["restarts"] = float(self.membership.incarnation)
        return totals

    def _will(self) -> tuple[str, bytes]:
        body = self.membership.last_will()
        topic, payload = self.channel.encode(Outgoing(topics.BROADCAST, 0, body))
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
            incarnation = int(content["incarnation"]) + 1
            self.earlier = {k: float(v) for k, v in content.get("stats", {}).items()}
            peers = Membership.peers_of(content)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{self.store.path}: the checkpoint is incomplete ({exc})") from None
        self.node.restored = True
        self.membership.resume(incarnation, peers)
        self.log.warning(
            "resuming from checkpoint %s: incarnation %d, last completed round %d%s",
            self.store.path,
            incarnation,
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
                **self.membership.checkpoint(),  # our incarnation and our peers'
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
            await session.flush()  # the last messages (a stop, a final report) go out first
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

    async def _send(self, session: MqttSession, outgoing: Sequence[Action]) -> None:
        """Hand the node's messages to the session in order, without waiting for the broker's
        acknowledgements (:meth:`MqttSession.post`); a checkpoint waits until everything before
        it is acknowledged, so a restart never misses a message it believes sent."""
        for out in outgoing:
            if isinstance(out, Checkpoint):  # all before it is published; nothing after it yet
                if self.store is not None:
                    await session.flush()
                    self.save_checkpoint()
                continue
            topic, payload = self.channel.encode(out)
            session.post(topic, payload, retain=out.retain)

    async def _loop(self, session: MqttSession) -> int:
        self.save_checkpoint()  # the session keys and incarnation, before anyone sees them
        body = self.membership.announcement(time.time())
        await self._send(session, [Outgoing(topics.BROADCAST, 0, body, retain=True)])
        if self.node.exit_code is not None:  # restored after its end: no peer is needed
            await self._send(session, self.node.last_words())
            return self.node.exit_code
        deadline = time.monotonic() + self.settings.start_timeout
        while self.node.exit_code is None:
            if self.prepared and (session.inbox.empty() or len(self.prepared) >= MAX_PREPARED):
                await self._handle_prepared(session)
                continue
            topic: str | None = None
            if not session.inbox.empty():  # the usual case in a round: no timer, no task
                topic, payload = session.inbox.get_nowait()
            else:
                # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns the message
                # when a message and a cancellation (SIGTERM) come in the same loop iteration,
                # and the process then runs on until it is killed.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_SECONDS):
                        topic, payload = await session.inbox.get()
            now = time.monotonic()
            if topic is None:
                if self.membership.started:
                    await self._send(session, self.node.tick(now))
                elif now > deadline:
                    missing = self.membership.missing()
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
                if self.membership.started:
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
            admission = self.membership.admit(message)
            if admission is Admission.DROP:
                continue
            if admission is Admission.RESYNC:
                await self._handle_prepared(session)  # what came before it, first
                await self._send(session, self.membership.resynced(message))
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
        if self.membership.expected_unknown(sender):
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
        await self._send(session, self.membership.dispatch(message, now))
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
        if self.workers is None or not self.membership.started or message.sender == self.node.me:
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
