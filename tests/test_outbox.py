"""The session's outbox (privgrid/wire/session.py ``Outbox``): what was posted and not yet
acknowledged, sent again in order on the next connection.

Pure logic, tested directly against a recording stand-in for paho's ``publish`` (what paho
does on a real socket is the grid tests' business: tests/test_broker_restart.py restarts a
real Mosquitto under a running grid, and every grid test flushes the outbox at exit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from privgrid.wire.session import Outbox, Posted


@dataclass
class Info:
    mid: int
    rc: int = mqtt.MQTT_ERR_SUCCESS

    def is_published(self) -> bool:
        return False


@dataclass
class Paho:
    """Records what it was asked to publish; message ids count from 1 per client, as paho's."""

    refuse: bool = False
    sent: list[tuple[str, bytes, int, bool]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Info:
        if self.refuse:
            return Info(0, mqtt.MQTT_ERR_NO_CONN)
        self.sent.append((topic, payload, qos, retain))
        return Info(len(self.sent))


def msg(i: int) -> Posted:
    return Posted(f"t/{i}", bytes([i]), retain=False)


def test_posted_messages_go_out_in_order_at_qos_1_and_leave_when_acknowledged():
    box, client = Outbox(), Paho()
    box.resend(client)  # connected
    assert box.empty.is_set()
    for i in range(3):
        box.send(client, msg(i))
    assert client.sent == [(f"t/{i}", bytes([i]), 1, False) for i in range(3)]
    assert not box.empty.is_set() and len(box) == 3
    box.acknowledged(client, 2)
    box.acknowledged(client, 1)
    assert not box.empty.is_set() and list(box.unacked.values()) == [msg(2)]
    box.acknowledged(client, 3)
    assert box.empty.is_set() and len(box) == 0


def test_a_new_connection_gets_the_unacknowledged_then_the_waiting_in_the_order_posted():
    box, first = Outbox(), Paho()
    box.resend(first)
    box.send(first, msg(0))
    box.send(first, msg(1))
    box.acknowledged(first, 1)  # msg(0) arrived; msg(1) did not before the drop
    box.disconnected()
    box.send(None, msg(2))  # posted while there is no connection
    box.send(first, msg(3))  # the old client is not the outbox's any more: it waits
    assert first.sent == [("t/0", b"\x00", 1, False), ("t/1", b"\x01", 1, False)]
    second = Paho()
    box.resend(second)
    assert [t for t, *_ in second.sent] == ["t/1", "t/2", "t/3"]
    assert not box.empty.is_set()
    box.acknowledged(first, 1)  # a late acknowledgement of the old connection's id 1: not ours
    assert len(box) == 3
    for mid in (1, 2, 3):
        box.acknowledged(second, mid)
    assert box.empty.is_set()


def test_a_publish_paho_refuses_waits_for_the_next_connection():
    box, going = Outbox(), Paho(refuse=True)
    box.resend(going)
    box.send(going, msg(0))
    assert box.waiting == [msg(0)] and not box.empty.is_set()
    fresh = Paho()
    box.resend(fresh)
    assert [t for t, *_ in fresh.sent] == ["t/0"] and list(box.unacked) == [1]


def test_nothing_to_resend_leaves_the_outbox_empty():
    box = Outbox()
    box.resend(Paho())
    assert box.empty.is_set() and len(box) == 0
