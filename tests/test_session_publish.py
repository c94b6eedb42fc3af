"""How :class:`privgrid.wire.session.MqttSession` publishes, against a real Mosquitto.

The 500-agent run (docs/performance.md) failed on publishing, not on the market: a PUBACK
later than aiomqtt's 10 s timeout was answered with a second copy, and the copies added load
to the very loops that were behind. These tests pin the two rules that fixed it: a slow
PUBACK is waited for on a live connection (one copy, however long it takes), and messages
published together arrive once each, in the order they were given.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from privgrid.broker.local import free_port, mosquitto_binary, wait_for_port
from privgrid.wire.session import BrokerUrl, MqttSession

LOG = logging.LoggerAdapter(logging.getLogger("test-session"), {})


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[BrokerUrl, subprocess.Popen]]:
    """An anonymous Mosquitto on a free loopback port (the ACL is not what is tested here)."""
    binary = mosquitto_binary()
    assert binary is not None, "Debian's mosquitto is required (apt-get install mosquitto)"
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    with (tmp_path / "broker.log").open("ab") as log:
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_for_port("127.0.0.1", port, 10, process)
        yield BrokerUrl("127.0.0.1", port), process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(10)


async def _sessions(url: BrokerUrl) -> tuple[MqttSession, MqttSession]:
    receiver = MqttSession(url, "receiver", ["t/#"], LOG)
    sender = MqttSession(url, "sender", [], LOG)
    await receiver.start(10)
    await sender.start(10)
    return receiver, sender


async def _drain(session: MqttSession, quiet: float) -> list[tuple[str, bytes]]:
    """Everything that arrives until nothing has for ``quiet`` seconds."""
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(session.inbox.get(), quiet))
        except TimeoutError:
            return got


@pytest.mark.timeout(90)
def test_a_puback_later_than_the_client_timeout_is_waited_for_not_resent(broker):
    url, process = broker

    async def main() -> tuple[bool, list[tuple[str, bytes]]]:
        receiver, sender = await _sessions(url)
        os.kill(process.pid, signal.SIGSTOP)  # the broker stalls: no PUBACK for 12 s
        try:
            publishing = asyncio.ensure_future(sender.publish("t/slow", b"once"))
            await asyncio.sleep(12)  # past aiomqtt's 10 s operation timeout
            still_waiting = not publishing.done()
        finally:
            os.kill(process.pid, signal.SIGCONT)
        await asyncio.wait_for(publishing, 20)
        got = await _drain(receiver, 2.0)
        await sender.close()
        await receiver.close()
        return still_waiting, got

    still_waiting, got = asyncio.run(main())
    assert still_waiting  # the publish waited for the stalled broker's PUBACK ...
    assert got == [("t/slow", b"once")]  # ... and the broker got one copy, not two


@pytest.mark.timeout(60)
def test_messages_published_together_arrive_once_each_in_order(broker):
    url, _ = broker
    payloads = [f"m{i}".encode() for i in range(300)]

    async def main() -> list[tuple[str, bytes]]:
        receiver, sender = await _sessions(url)
        await asyncio.gather(*(sender.publish("t/burst", p) for p in payloads))
        got = await _drain(receiver, 2.0)
        await sender.close()
        await receiver.close()
        return got

    got = asyncio.run(main())
    assert [payload for _, payload in got] == payloads
