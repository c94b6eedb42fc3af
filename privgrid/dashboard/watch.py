"""The broker side: the dashboard's own read-only account, reading envelopes, never bodies.

It subscribes to less than its account may read, to add as little as possible to the
broker's work: the key announcements (``keys/#``: who is connected, restarts), the
broadcasts (``bcast/#``: the MO's round clock, ``stop`` and ``closed``, departures), and what
is sent to the MO (``to/MO/#``: every participant's report each round — so the last round
each was seen in — and the metadata of violation reports). The pairwise messages between
agents and the LM's legs are not subscribed to.

Each message is checked as a participant would check it — the envelope decodes, its sender
is in the roster and its signature verifies (:func:`privgrid.wire.envelope.open_envelope`),
and the topic says the same as the envelope — when a roster is given; without one the
envelope is only decoded, and the page says signatures are not checked. Bodies stay
unopened, except the small public map of ``key``, ``gone``, ``stop`` and ``closed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiomqtt
import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from privgrid.broker.config import DASHBOARD
from privgrid.dashboard.state import RunState
from privgrid.scenario import MO_ID
from privgrid.wire import topics
from privgrid.wire.envelope import Envelope, Rejected, open_envelope
from privgrid.wire.session import NO_DELAY, BrokerUrl, MqttSession, client_id

#: Kinds whose body is a public msgpack map with fields the page shows.
PUBLIC_FIELDS = {
    "key": ("incarnation",),
    "gone": ("incarnation",),
    "stop": ("converged", "reason"),
    "closed": ("committed", "reason"),
}
#: CONNACK codes meaning "this account may not connect" (MQTT 3.1.1 and 5).
REFUSED = {4, 5, 134, 135}


class DashboardError(RuntimeError):
    """The dashboard cannot start; the message says what is missing or wrong."""


def subscriptions(run: str) -> list[str]:
    return [topics.keys_filter(run), topics.broadcast_filter(run), topics.inbox_filter(run, MO_ID)]


def decode(raw: bytes, keys: Mapping[str, Ed25519PublicKey] | None) -> Envelope:
    """The envelope, checked against the roster's keys if given (else decoded only)."""
    if keys is not None:
        return open_envelope(raw, keys)
    try:
        data = msgpack.unpackb(raw, raw=False, max_bin_len=1 << 20, max_str_len=1024)
        return Envelope(
            int(data["v"]),
            str(data["kind"]),
            str(data["run"]),
            int(data["round"]),
            str(data["sender"]),
            str(data["recipient"]),
            bytes(data["body"]),
            bytes(data["sig"]),
        )
    except Exception as exc:  # anything malformed is a rejection, as for a participant
        raise Rejected(f"not an envelope ({type(exc).__name__})") from None


def public_body(envelope: Envelope) -> dict[str, Any] | None:
    """The public fields of a ``key``, ``gone``, ``stop`` or ``closed`` body, else None."""
    wanted = PUBLIC_FIELDS.get(envelope.kind)
    if wanted is None:
        return None
    try:
        body = msgpack.unpackb(envelope.body, raw=False, max_str_len=4096, max_bin_len=1 << 16)
    except Exception:
        return {}
    return {k: body[k] for k in wanted if isinstance(body, dict) and k in body}


class Watcher:
    """Feeds the state from the broker: one MQTT session of the dashboard's account."""

    def __init__(
        self,
        url: BrokerUrl,
        run: str,
        state: RunState,
        keys: Mapping[str, Ed25519PublicKey] | None,
        now: Callable[[], float],
        changed: Callable[[], None],
        log: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self.url = url
        self.run = run
        self.state = state
        self.keys = keys
        self.now = now
        self.changed = changed
        self.log = log
        state.signatures = (
            "checked against the roster" if keys is not None else "not checked (no roster given)"
        )

    async def check_account(self, timeout: float) -> None:
        """Connect once: a broker that refuses the account is an error, at once; one that
        cannot be reached is retried until ``timeout`` (it may still be starting)."""
        if not self.url.username:
            raise DashboardError(
                f"the broker URL {self.url} names no account: the dashboard needs its own "
                f"read-only account (e.g. {DASHBOARD}): mqtt://{DASHBOARD}:PASSWORD@HOST:PORT"
            )
        account = self.url.username
        if account in self.state.participants or (self.keys is not None and account in self.keys):
            raise DashboardError(
                f"the broker URL {self.url} is participant {account}'s account: a second "
                f"connection of it would cut {account} off; the dashboard needs its own "
                f"read-only account (e.g. {DASHBOARD})"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                async with aiomqtt.Client(
                    self.url.host,
                    self.url.port,
                    username=self.url.username,
                    password=self.url.password,
                    identifier=client_id(self.run, self.url.username),
                    clean_session=True,
                    timeout=10,
                    socket_options=NO_DELAY,
                ):
                    return
            except aiomqtt.MqttCodeError as exc:
                code = getattr(exc.rc, "value", exc.rc)
                if code in REFUSED:
                    raise DashboardError(
                        f"the broker at {self.url} refused the dashboard's account "
                        f"{self.url.username!r} ({exc}): give the dashboard its own read-only "
                        "account (docs/dashboard.md)"
                    ) from None
                error = str(exc)
            except aiomqtt.MqttError as exc:
                error = str(exc)
            if loop.time() > deadline:
                raise DashboardError(f"could not reach the broker at {self.url}: {error}")
            await asyncio.sleep(0.5)

    async def watch(self) -> None:
        """Receive until cancelled; reconnects (and says so on the page) by itself."""
        assert self.url.username is not None
        session = MqttSession(
            self.url, client_id(self.run, self.url.username), subscriptions(self.run), self.log
        )
        monitor = asyncio.create_task(self._connection(session))
        try:
            await session.start(timeout=3600)
            async for topic, payload in session.messages():
                self.feed(topic, payload)
        finally:
            monitor.cancel()
            await session.close(flush_timeout=0)

    async def _connection(self, session: MqttSession) -> None:
        """Mirror the session's connection in the state (the page shows it)."""
        while True:
            up = session.connected
            again = "reconnecting" if session.connects else "connecting"
            error = f" ({session.last_error})" if session.last_error else ""
            text = (
                f"connected to {self.url} as a read-only monitor"
                if up
                else f"{again} to {self.url}{error}"
            )
            before = self.state.version
            self.state.set_broker(text, up, self.now())
            if self.state.version != before:
                self.changed()
            await asyncio.sleep(0.5)

    def feed(self, topic: str, payload: bytes) -> None:
        """One message from the broker into the state."""
        parsed = topics.parse(topic)
        if parsed is None or parsed.run != self.run or not payload:
            return  # not ours; or an empty retained payload: a participant clearing its key
        now = self.now()
        try:
            envelope = decode(payload, self.keys)
            if (envelope.sender, envelope.run, envelope.kind) != (
                parsed.sender,
                self.run,
                parsed.kind,
            ):
                raise Rejected("the topic and the envelope disagree", envelope.sender)
        except Rejected as exc:
            # Counted against the topic's sender: the broker's ACL lets only that account
            # publish there, whoever the envelope claims to be.
            self.state.rejected(parsed.sender, exc.reason, now)
            self.changed()
            return
        self.state.observe(
            envelope.kind,
            envelope.sender,
            parsed.recipient,
            envelope.round,
            public_body(envelope),
            now,
        )
        self.changed()
