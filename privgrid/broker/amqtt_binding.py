"""The client-id binding (:mod:`privgrid.broker.binding`) inside amqtt, the embedded broker.

Two pieces: :class:`ClientIdBinding`, an amqtt auth plugin applying the rule, and
:class:`BindingBroker`, which makes amqtt run its auth plugins before a connection can touch
an existing session (amqtt 0.12 does it the other way round, see the class). Imported only by
the broker process (``python -m privgrid.broker.embedded``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.errors import MQTTError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from privgrid.broker.binding import refusal

log = logging.getLogger("privgrid.broker")


class ClientIdBinding(BaseAuthPlugin):
    """amqtt auth plugin: refuses a connection whose client id is not its account's to use
    (:func:`privgrid.broker.binding.refusal`). The password is FileAuthPlugin's job; amqtt
    admits a connection only if every auth plugin that answers says yes."""

    @dataclass
    class Config:
        client_ids: dict[str, str] = field(default_factory=dict)  # participant → its client id

    async def authenticate(self, *, session: Session) -> bool | None:
        reason = refusal(session.username, session.client_id, self.config.client_ids)
        if reason is not None:
            log.warning("refused a connection: %s", reason)
        return reason is None


class _Recorder(ReaderAdapter):
    """Passes reads through and keeps a copy of the bytes read."""

    def __init__(self, inner: ReaderAdapter) -> None:
        self.inner = inner
        self.data = bytearray()

    async def read(self, n: int = -1) -> bytes:
        chunk = await self.inner.read(n)
        self.data += chunk
        return chunk

    def feed_eof(self) -> None:
        self.inner.feed_eof()


class _Replay(ReaderAdapter):
    """Serves recorded bytes once (the CONNECT packet), then end of stream."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int = -1) -> bytes:
        size = len(self._data) if n < 0 else n
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk

    def feed_eof(self) -> None:
        self._data = b""


class BindingBroker(Broker):
    """amqtt's broker, authenticating each CONNECT before it can touch an existing session.

    amqtt 0.12 looks up the session of the requested client id — deleting it for a clean
    session, or taking it over (disconnecting its holder, overwriting its will and username)
    — and only then runs the auth plugins, so a refused connection, even one with a wrong
    password, could still cut a participant off. Here the CONNECT is read first, every auth
    plugin (password and :class:`ClientIdBinding`) must accept it, and only then does amqtt see
    it, from a replay of the same bytes; its own second authentication reuses the verdict
    rather than hashing the password again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admitted: set[tuple[str | None, str | None, str | None]] = set()

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> Any:
        recorder = _Recorder(reader)
        connect = await ConnectPacket.from_stream(recorder)
        probe = Session()
        probe.client_id = connect.client_id
        probe.username = connect.username
        probe.password = connect.password
        if not await super()._authenticate(probe, None):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"refused {connect.username!r} with client id {connect.client_id!r}")
        self._admitted.add((probe.username, probe.password, probe.client_id))
        replay = _Replay(bytes(recorder.data))
        return await super()._initialize_client_session(replay, writer, remote_address, remote_port)

    async def _authenticate(self, session: Session, listener: Any) -> bool:
        key = (session.username, session.password, session.client_id)
        if key in self._admitted:
            self._admitted.discard(key)
            return True
        return await super()._authenticate(session, listener)
