"""The MQTT session: one aiomqtt client, kept alive across broker hiccups.

aiomqtt does not reconnect on its own, so a supervisor task re-enters a fresh client with
exponential backoff and re-subscribes. Sessions are persistent (``clean_session=False`` with a
client id derived from run and participant), so the broker queues QoS 1 messages while we are
away. Publishing waits for a connection and retries after a reconnect: delivery is at least
once, and receivers drop duplicates (:class:`privgrid.wire.channel.Channel`). A publish whose
acknowledgement is pending when the connection drops is sent again on the next connection at
once: the broker may then have it twice, which is harmless. On a live connection a publish
waits for its PUBACK as long as it takes: TCP delivers it or the connection dies (keepalive),
and re-sending on a timeout only multiplies the load that made the broker slow — at 500 agents
such retries snowballed until no round could finish (docs/performance.md).

``mqtts://`` URLs connect over TLS with the run's certificates (:mod:`privgrid.crypto.tls`):
the client certificate is the login, so no username or password is sent. A broker that refuses
our certificate says so only by a TLS alert, which TLS 1.3 delivers after the handshake and
paho reports only in its log; the session watches that log, and a refusal (or a broker
certificate we do not trust) ends :meth:`MqttSession.start` at once with
:class:`BrokerRefusedError` and a line saying what is wrong, instead of retrying until the
start timeout.

With ``PRIVGRID_FAULTS`` set, outgoing messages go through a
:class:`~privgrid.wire.faults.FaultInjector` (duplicates, delays, reordering: a chaos facility
for tests, off by default); :meth:`MqttSession.close` sends what it still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as mqtt

from privgrid.crypto.tls import TlsFiles, client_context, explain_handshake_error
from privgrid.wire import topics
from privgrid.wire.faults import FaultInjector, FaultSpec
from privgrid.wire.kinds import Kind

DEFAULT_URL = "mqtt://localhost:1883"
SCHEMES = {"mqtt": 1883, "mqtts": 8883}
#: paho does not set TCP_NODELAY: a PUBACK followed by a PUBLISH then waits for the peer's
#: delayed ACK (~40 ms a hop). Measured QoS 1 round trip: 88 ms without, 0.5 ms with.
NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
ENV_URL = "PRIVGRID_BROKER_URL"
#: Seconds between MQTT pings. The broker drops a client silent for 1.5× this; a participant's
#: event loop can be busy for seconds (Paillier key generation, a loaded machine), so be generous.
KEEPALIVE = 45
#: Mosquitto publishes every connected client's last will when it shuts down, also for a
#: restart with persistence (a known FIXME in its source), so a broker restart looks like
#: everyone leaving the run. A departure notice is therefore held this many seconds: if our own
#: connection drops meanwhile, or the notice comes this soon after a reconnect, it is the
#: broker's shutdown speaking and is dropped with a log line. A participant that really died in
#: that window is still caught, by the round timeout (docs/reliability.md).
WILL_HOLD = 2.0
#: Publishes awaiting their PUBACK at once (paho's window; aiomqtt warns beyond it).
MAX_IN_FLIGHT = 1000


def _is_departure(topic: str) -> bool:
    parsed = topics.parse(topic)
    return parsed is not None and parsed.recipient == topics.BROADCAST and parsed.kind == Kind.GONE


class BrokerUrlError(ValueError):
    pass


class BrokerRefusedError(ConnectionError):
    """The broker refused our TLS certificate, or we do not trust its certificate: retrying
    cannot help. The message says what is wrong."""


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    scheme: str = "mqtt"
    #: For ``mqtts://``: the run CA, our certificate and key (:meth:`with_tls`).
    tls: TlsFiles | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://host[:port]`` (TLS, port 8883
        by default; the client certificate is the login, so a password is an error); the error
        says what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise BrokerUrlError(
                f"broker URL {cls._redact(url)!r} must start with mqtt:// or mqtts://"
            )
        if not parts.hostname:
            raise BrokerUrlError(f"broker URL {cls._redact(url)!r} has no host")
        try:
            port = parts.port or SCHEMES[parts.scheme]
        except ValueError:
            raise BrokerUrlError(f"broker URL {cls._redact(url)!r} has an invalid port") from None
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "mqtts" and password is not None:
            raise BrokerUrlError(
                f"broker URL {cls._redact(url)!r}: over mqtts:// the client certificate is the "
                "login; remove the password from the URL"
            )
        return cls(parts.hostname, port, user, password, parts.scheme)

    @property
    def is_tls(self) -> bool:
        return self.scheme == "mqtts"

    def with_tls(self, files: TlsFiles) -> BrokerUrl:
        return replace(self, tls=files)

    @classmethod
    def from_env(cls, explicit: str | None = None) -> BrokerUrl:
        return cls.parse(explicit or os.environ.get(ENV_URL) or DEFAULT_URL)

    @staticmethod
    def _redact(url: str) -> str:
        parts = urlsplit(url)
        if parts.password:
            return url.replace(f":{parts.password}@", ":***@")
        return url

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username and not self.is_tls else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}"


def client_id(run: str, participant: str) -> str:
    """Stable and unique per (run, participant): a reconnect resumes the same session.

    Predictable by anyone, so the broker must bind it to the participant's account, or any
    account could take the session over (privgrid/broker/binding.py): Mosquitto replaces it
    with the username, the embedded broker refuses it from any other account.
    """
    digest = hashlib.sha256(f"{run}/{participant}".encode()).hexdigest()[:12]
    return f"pg-{digest}-{participant}"[:64]


class _TlsAlerts(logging.Handler):
    """Passes the SSL errors paho logs (a TLS alert from the broker after the handshake, which
    paho only logs) to the session, in the event loop's thread."""

    def __init__(self, session: MqttSession) -> None:
        super().__init__(logging.ERROR)
        self.session = session
        self.loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if self.loop is not None and ("[SSL" in text or " alert " in text):
            self.loop.call_soon_threadsafe(self.session._tls_failure, text)


@dataclass(frozen=True)
class Posted:
    topic: str
    payload: bytes
    retain: bool


class Outbox:
    """QoS 1 messages handed to paho and not yet acknowledged, in the order posted.

    ``send`` gives a message to the connected paho client (or keeps it while there is none);
    ``acknowledged`` drops it when its PUBACK comes; ``resend`` gives everything still held
    to the next connection, oldest first. No I/O of its own, so it is tested directly.
    """

    def __init__(self) -> None:
        self.unacked: dict[int, Posted] = {}  # paho message id → message, in send order
        self.waiting: list[Posted] = []  # posted while disconnected
        self.empty = asyncio.Event()
        self.empty.set()
        self._client: object | None = None  # the paho client the message ids belong to

    def __len__(self) -> int:
        return len(self.unacked) + len(self.waiting)

    def send(self, client: mqtt.Client | None, message: Posted) -> None:
        self.empty.clear()
        if client is None or client is not self._client:
            self.waiting.append(message)
            return
        info = client.publish(message.topic, message.payload, qos=1, retain=message.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:  # the connection is going: the next one sends it
            self.waiting.append(message)
            return
        if not info.is_published():  # a PUBACK cannot come before publish() returns here,
            self.unacked[info.mid] = message  # but be safe
        elif not self:
            self.empty.set()

    def acknowledged(self, client: object, mid: int) -> None:
        if client is self._client and self.unacked.pop(mid, None) is not None and not self:
            self.empty.set()

    def resend(self, client: mqtt.Client) -> None:
        """A new connection: everything unacknowledged or waiting goes out on it, in order."""
        held = [*self.unacked.values(), *self.waiting]
        self.unacked, self.waiting, self._client = {}, [], client
        for message in held:
            self.send(client, message)
        if not self:
            self.empty.set()

    def disconnected(self) -> None:
        self._client = None


class MqttSession:
    """Connect, subscribe, receive into a queue, publish with retry; reconnect forever."""

    def __init__(
        self,
        url: BrokerUrl,
        identifier: str,
        subscriptions: Sequence[str],
        log: logging.LoggerAdapter[Any] | logging.Logger,
        will: tuple[str, bytes] | None = None,
        max_backoff: float = 5.0,
        faults: FaultSpec | None = None,
    ) -> None:
        """``faults``: message faults to inject; default: ``PRIVGRID_FAULTS`` (usually unset)."""
        self.url = url
        self.identifier = identifier
        self.subscriptions = list(subscriptions)
        self.log = log
        self.will = will
        self.max_backoff = max_backoff
        self.inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.connects = 0
        self.last_error: str | None = None
        #: Set when the current connection is lost: pending publishes retry on the next one.
        self._lost = asyncio.Event()
        #: Set (with :attr:`last_error`) when the broker refused our TLS certificate or we
        #: refused its own: :meth:`start` fails at once instead of retrying.
        self._refused = asyncio.Event()
        self._refusals_logged: set[str] = set()
        self._held_departures: set[asyncio.Task[None]] = set()
        #: Messages posted and not yet acknowledged (:meth:`post`).
        self._outbox = Outbox()
        #: The connected client's paho client (aiomqtt's ``_client``), for :meth:`post`.
        self._paho: mqtt.Client | None = None
        #: Messages on their way through the fault injector (faults on only).
        self._faulty: set[asyncio.Task[None]] = set()
        if url.is_tls and url.tls is None:
            raise BrokerUrlError(f"{url} is a TLS URL, but no certificates were given")
        #: paho logs a TLS alert from the broker, and only logs it: a logger of our own
        #: (propagating to aiomqtt's, as before) lets the session see it.
        self._paho_log = logging.getLogger(f"mqtt.{identifier}")
        self._tls_alerts = _TlsAlerts(self)
        if url.is_tls:
            self._paho_log.addHandler(self._tls_alerts)
        spec = faults if faults is not None else FaultSpec.from_env()
        self.faults = (
            FaultInjector(spec, identifier, self._injected, log) if spec is not None else None
        )
        if self.faults is not None:
            log.warning("injecting message faults (%s): a chaos test, not a real run", spec)

    @property
    def connected(self) -> bool:
        """Whether a connection to the broker is up now."""
        return self._connected.is_set()

    async def start(self, timeout: float) -> None:
        """Start the supervisor and wait for the first connection.

        Raises:
            TimeoutError: no connection within ``timeout`` seconds (with the last error).
            BrokerRefusedError: a TLS certificate was refused, by the broker or by us.
        """
        self._tls_alerts.loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._supervise(), name=f"mqtt-{self.identifier}")
        connected = asyncio.ensure_future(self._connected.wait())
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait(
                {connected, refused}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            connected.cancel()
            refused.cancel()
        if self._connected.is_set():
            return
        await self.close()
        if self._refused.is_set():
            raise BrokerRefusedError(str(self.last_error))
        raise TimeoutError(
            f"could not connect to the broker at {self.url} within {timeout:g} s"
            + (f" ({self.last_error})" if self.last_error else "")
        )

    async def close(self, flush_timeout: float = 10.0) -> None:
        if self.faults is not None and self._task is not None and not self._task.done():
            await self.faults.flush(flush_timeout)  # held and delayed messages go out first
            self.log.info("message faults injected: %s", self.faults.counts)
        self._closing = True
        for task in list(self._held_departures):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        self._paho_log.removeHandler(self._tls_alerts)

    def post(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Hand a message to the broker at QoS 1 without waiting for its PUBACK.

        Why: a participant that awaited every PUBACK before reading its next message added a
        broker round trip — on a loaded machine, a wait for the broker's turn on a core — to
        each message it answered, several times a round; and aiomqtt's awaitable publish costs
        three tasks and an event per message (docs/performance.md, the wire profile). Here a
        message goes to paho at once (messages leave in the order posted) and waits in the
        outbox until acknowledged; if the connection drops first, it is sent again, in order,
        on the next one (at least once; receivers drop duplicates). :meth:`flush` waits until
        the outbox is empty — before a checkpoint and before closing. With faults on, the
        message goes through the fault injector instead.
        """
        if self.faults is not None and not retain:
            task = asyncio.ensure_future(self.faults.publish(topic, payload))
            self._faulty.add(task)
            task.add_done_callback(self._faulty.discard)
            return
        self._send_now(topic, payload, retain)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """:meth:`post`, then wait until everything posted so far is acknowledged."""
        self.post(topic, payload, retain=retain)
        await self.flush()

    async def flush(self) -> None:
        """Wait until every message posted so far is acknowledged by the broker."""
        while self._faulty:
            await asyncio.wait(set(self._faulty))
        await self._outbox.empty.wait()

    async def _injected(self, topic: str, payload: bytes) -> None:
        """The fault injector's way out: straight to the outbox."""
        self._send_now(topic, payload, False)

    def _send_now(self, topic: str, payload: bytes, retain: bool) -> None:
        self._outbox.send(self._paho, Posted(topic, payload, retain))

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        while True:
            yield await self.inbox.get()

    def _hold_departure(self, topic: str, payload: bytes, connection: int, since: float) -> None:
        """Pass a departure notice on after :data:`WILL_HOLD` s unless a broker restart sent it."""
        loop = asyncio.get_running_loop()
        if connection > 1 and loop.time() - since < WILL_HOLD:
            self.log.warning("ignored a departure notice on %s: queued at a broker restart", topic)
            return

        async def release() -> None:
            await asyncio.sleep(WILL_HOLD)
            if self.connects != connection or self._lost.is_set():
                self.log.warning(
                    "ignored a departure notice on %s: sent as the broker shut down", topic
                )
                return
            await self.inbox.put((topic, payload))

        task = asyncio.ensure_future(release())
        self._held_departures.add(task)
        task.add_done_callback(self._held_departures.discard)

    def _received(self, topic: str, payload: bytes, connection: int, since: float) -> None:
        if _is_departure(topic):
            self._hold_departure(topic, payload, connection, since)
        else:
            self.inbox.put_nowait((topic, payload))

    def _take_over(self, client: aiomqtt.Client, connection: int, since: float) -> None:
        """Receive and publish through the connected client's paho client directly.

        Why: aiomqtt's awaitable ``publish`` and its message iterator cost several tasks and
        futures per message — about half a participant's CPU in a plain round (the wire
        profile in docs/performance.md). aiomqtt still connects, subscribes, pings and reports
        the connection's end; paho's ``on_message`` puts messages straight into our inbox,
        and its ``on_publish`` (after aiomqtt's own, which ignores ids it does not know) tells
        the outbox what the broker acknowledged. Done as soon as the connection is up, before
        subscribing, so that everything after it arrives in order behind what came before.
        ``_client`` (the paho client) and ``_queue`` are aiomqtt 2.x's (pinned in
        pyproject.toml).
        """
        paho: mqtt.Client = client._client
        aiomqtt_on_publish = paho.on_publish
        outbox = self._outbox

        def on_message(_: mqtt.Client, __: Any, message: mqtt.MQTTMessage) -> None:
            self._received(message.topic, bytes(message.payload), connection, since)

        def on_publish(paho_client: mqtt.Client, *args: Any) -> None:
            if aiomqtt_on_publish is not None:
                aiomqtt_on_publish(paho_client, *args)
            outbox.acknowledged(paho_client, args[1])  # (userdata, mid, reason, properties)

        # What paho received before now (a persistent session's backlog may come with the
        # CONNACK) went to aiomqtt's queue: it goes first, so nothing is reordered.
        early = client._queue
        while not early.empty():
            message = early.get_nowait()
            if isinstance(message.payload, bytes | bytearray):
                self._received(str(message.topic), bytes(message.payload), connection, since)
        paho.on_message = on_message
        paho.on_publish = on_publish
        self._paho = paho
        outbox.resend(paho)

    def _new_client(self, will: aiomqtt.Will | None) -> aiomqtt.Client:
        """A fresh client: over TLS with our certificate as the login (no username or password
        sent), else with the URL's account."""
        tls = self.url.tls
        return aiomqtt.Client(
            self.url.host,
            self.url.port,
            username=None if tls else self.url.username,
            password=None if tls else self.url.password,
            identifier=self.identifier,
            clean_session=False,
            will=will,
            keepalive=KEEPALIVE,
            timeout=10,
            max_inflight_messages=MAX_IN_FLIGHT,
            socket_options=NO_DELAY,
            tls_context=client_context(tls) if tls else None,
            logger=self._paho_log,
        )

    def _tls_failure(self, text: str) -> bool:
        """A TLS error while connecting: if it means a certificate was refused (by the broker
        or by us), log it once and end :meth:`start`; True if it did."""
        reason = explain_handshake_error(text)
        if reason is None:
            return False
        self.last_error = reason
        if reason not in self._refusals_logged:  # once, not at every retry
            self._refusals_logged.add(reason)
            self.log.error("%s", reason)
        self._refused.set()
        return True

    async def _supervise(self) -> None:
        backoff = 0.1
        will = aiomqtt.Will(self.will[0], self.will[1], qos=1) if self.will else None
        while not self._closing:
            try:
                client = self._new_client(will)
                # aiomqtt warns from 10 unacknowledged publishes on; a pipelined round (an LM
                # answering 500 agents) has hundreds in flight by design.
                client.pending_calls_threshold = MAX_IN_FLIGHT
                async with client:
                    self.connects += 1
                    connection, since = self.connects, asyncio.get_running_loop().time()
                    self._take_over(client, connection, since)
                    if self.subscriptions:  # paho refuses an empty list
                        await client.subscribe([(topic, 1) for topic in self.subscriptions])
                    self._lost = asyncio.Event()
                    self._refused.clear()
                    self._client = client
                    if self.connects > 1:
                        self.log.info("reconnected to %s (connection %d)", self.url, self.connects)
                    self._connected.set()
                    backoff = 0.1
                    # Messages reach the inbox from paho's callback (_take_over), never
                    # aiomqtt's queue: this only waits for the connection to end.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                refused = self.url.is_tls and self._tls_failure(str(exc))
                if not refused and not self._refused.is_set():  # keep the clearer reason
                    self.last_error = str(exc)
                self._lost.set()
                if self._connected.is_set():
                    self.log.warning("lost the broker (%s); reconnecting", exc)
                self._connected.clear()
                self._client = self._paho = None
                self._outbox.disconnected()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
