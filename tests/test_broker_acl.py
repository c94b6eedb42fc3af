"""The broker's ACL, observed: who can read and who can publish in whose name (real Mosquitto)."""

import asyncio

import aiomqtt
import pytest

from privgrid.wire import topics
from tests.waiting import wait_until_async

pytestmark = pytest.mark.timeout(60)


def client(grid, user: str, password: str | None = None) -> aiomqtt.Client:
    return grid.client(user, f"acl-{user}", password)


async def collect(c: aiomqtt.Client, into: list[bytes]) -> None:
    async for message in c.messages:
        into.append(bytes(message.payload))


#: Sent last, to B1's own inbox: once B1 and the monitor have it, the broker has dealt with
#: everything published before it (one broker, in order), so nothing else is still coming.
MARKER = b"last-message-for-B1"


async def scenario_acl(grid) -> dict[str, list[bytes]]:
    run = grid.run
    seen: dict[str, list[bytes]] = {"B2": [], "B1": [], "monitor": []}
    async with (
        client(grid, "B2") as b2,
        client(grid, "B1") as b1,
        client(grid, "monitor") as mon,
        client(grid, "S1") as s1,
    ):
        await b2.subscribe(topics.inbox_filter(run, "B2"), qos=1)
        await b1.subscribe(topics.inbox_filter(run, "B2"), qos=1)  # eavesdropping attempt
        await b1.subscribe(topics.inbox_filter(run, "B1"), qos=1)  # its own: for the marker
        await mon.subscribe(topics.run_filter(run), qos=1)
        tasks = [
            asyncio.create_task(collect(c, seen[name]))
            for name, c in (("B2", b2), ("B1", b1), ("monitor", mon))
        ]
        await s1.publish(topics.direct(run, "B2", "S1", "share"), b"from-S1", qos=1)
        await b1.publish(topics.direct(run, "B2", "S1", "share"), b"forged-by-B1", qos=1)
        await b1.publish(topics.keys(run, "S1"), b"key-forged-by-B1", qos=1)
        await b1.publish(topics.broadcast(run, "MO", "round"), b"round-forged-by-B1", qos=1)
        await b1.publish(topics.direct(run, "B2", "B1", "share"), b"from-B1", qos=1)
        await s1.publish(topics.direct(run, "B1", "S1", "share"), MARKER, qos=1)
        await wait_until_async(
            lambda: MARKER in seen["B1"] and MARKER in seen["monitor"] and len(seen["B2"]) >= 2,
            30,
            "the last message reached B1 and the monitor, B2 its two",
        )
        for task in tasks:
            task.cancel()
    return {name: [p for p in payloads if p != MARKER] for name, payloads in seen.items()}


def test_acl_keeps_inboxes_private_and_sender_slots_honest(grid_factory):
    grid = grid_factory(privacy={"mode": "plain"})
    seen = asyncio.run(scenario_acl(grid))
    # B2 receives what S1 and B1 legitimately sent it, nothing forged.
    assert sorted(seen["B2"]) == [b"from-B1", b"from-S1"]
    # B1 could not read B2's inbox: the broker did not deliver anything to it.
    assert seen["B1"] == []
    # The broker refused every publish with someone else's id in the sender slot.
    assert sorted(seen["monitor"]) == [b"from-B1", b"from-S1"]


async def try_connect(grid, user: str, password: str | None) -> str | None:
    try:
        async with client(grid, user, password):
            return None
    except aiomqtt.MqttError as exc:
        return str(exc)


def test_wrong_password_and_anonymous_are_refused(grid_factory):
    grid = grid_factory(privacy={"mode": "plain"})
    assert asyncio.run(try_connect(grid, "S1", None)) is None
    assert "authori" in asyncio.run(try_connect(grid, "S1", "wrong")).lower()
    assert asyncio.run(try_connect(grid, "nobody", "x")) is not None
