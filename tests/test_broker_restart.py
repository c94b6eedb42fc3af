"""The broker restarts mid-run: everyone reconnects, nothing is lost, the result is unchanged.

A real run (plain mode, every role its own process) on a real Mosquitto with persistence (the
generated config: ``persistence true`` with its location in the run's broker folder). Around
round 40 the test stops Mosquitto with SIGTERM — it saves its persistent sessions and queued
QoS 1 messages — and starts it again on the same port a second later. The sessions reconnect
with backoff (aiomqtt does not reconnect by itself: :class:`privgrid.wire.session.MqttSession`
does), resume their persistent sessions (``clean_session=False``) and resend what was not
acknowledged; receivers drop the resulting duplicates. The run must converge to the in-process
reference within 1e-6, and every participant must have reconnected.

Mosquitto publishes every client's last will when it shuts down (a FIXME in its source), so
the restart also tells everyone that everyone left; the sessions recognise these notices
(:data:`privgrid.wire.session.WILL_HOLD`) and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import time

import pytest

from privgrid.broker.local import LocalBroker, mosquitto_binary, wait_for_port
from privgrid.keys import participants
from privgrid.market.setup import build_setup
from privgrid.scenario import MO_ID, load_scenario
from privgrid.solve import solve
from privgrid.wire import topics
from privgrid.wire.session import BrokerUrl, MqttSession, client_id
from tests.grid_harness import Grid
from tests.waiting import wait_until_async

pytestmark = pytest.mark.timeout(300)
STOP_AT_ROUND = 40
DOWN_SECONDS = 1.0


def restart_broker(grid: Grid, down: float) -> None:
    """SIGTERM Mosquitto, wait ``down`` seconds, start it again with the same config and port."""
    old = grid.broker
    old.process.send_signal(signal.SIGTERM)
    old.process.wait(10)
    folder = grid.folder / "broker"
    assert (folder / "data" / "mosquitto.db").exists(), "Mosquitto saved no persistent state"
    time.sleep(down)  # the broker's downtime is what the callers test, not a wait for an event
    binary = mosquitto_binary()
    assert binary is not None
    with old.log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary, "-c", str(folder / "mosquitto.conf")], stdout=log, stderr=subprocess.STDOUT
        )
    wait_for_port(old.host, old.port, 10, process)
    grid.broker = LocalBroker(old.kind, old.host, old.port, process, old.log_path)


def test_a_broker_restart_mid_run_is_survived_with_the_same_result(grid_factory):
    grid = grid_factory(privacy={"mode": "plain"})
    grid.start_all()
    grid.wait_for_round(STOP_AT_ROUND, timeout=120)
    restart_broker(grid, DOWN_SECONDS)
    code = grid.wait(MO_ID, timeout=240)
    for pid in participants(grid.scenario):
        assert grid.wait(pid, timeout=60) == 0, grid.log(pid)[-2000:]
    assert code == 0, grid.log(MO_ID)[-3000:]

    for pid in participants(grid.scenario):
        log = grid.log(pid)
        assert "lost the broker" in log and "reconnected to" in log, f"{pid} never reconnected"
        assert "Traceback" not in log, pid
    # Mosquitto sent everyone's last will as it shut down; the sessions recognised them.
    assert "ignored a departure notice" in grid.log(MO_ID)
    results = grid.results()
    reference = solve(build_setup(load_scenario(grid.scenario_file)))
    assert results["converged"] and results["rounds"] == reference["rounds"] > STOP_AT_ROUND
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        for key in ("power", "price", "charge"):
            assert abs(ours[key] - theirs[key]) <= 1e-6, (ours, theirs)
    assert results["violations"] == [] and results["error"] is None
    assert results["ledger"]["committed"]


def _session(grid: Grid, pid: str, subscriptions: list[str]) -> MqttSession:
    return MqttSession(
        BrokerUrl.parse(grid.url(pid)),
        client_id(grid.run, pid),
        subscriptions,
        logging.getLogger(f"test.{pid}"),
        max_backoff=0.5,
    )


def test_queued_qos1_messages_survive_a_broker_restart_and_arrive_once(grid_factory):
    """B1's persistent session is offline while S1 publishes to it; the broker restarts;
    B1 reconnects with the same client id and gets every queued message, each once."""
    grid = grid_factory(privacy={"mode": "plain"})
    inbox = topics.inbox_filter(grid.run, "B1")
    payloads = [f"queued {i}".encode() for i in range(5)]

    async def offline_then_queue() -> None:
        b1 = _session(grid, "B1", [inbox])
        await b1.start(10)  # the session and its subscription now exist on the broker
        await b1.close()
        s1 = _session(grid, "S1", [])
        await s1.start(10)
        for payload in payloads:
            await s1.publish(topics.direct(grid.run, "B1", "S1", "share"), payload)
        await s1.close()

    async def come_back() -> list[bytes]:
        b1 = _session(grid, "B1", [inbox])
        await b1.start(10)
        got: list[bytes] = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append((await asyncio.wait_for(b1.inbox.get(), 3))[1])
        await b1.close()
        return got

    asyncio.run(offline_then_queue())
    restart_broker(grid, DOWN_SECONDS)
    assert asyncio.run(come_back()) == payloads


def test_a_session_started_while_the_broker_is_down_connects_when_it_returns(grid_factory):
    """Backoff: the session keeps trying (its last error recorded) and connects within its
    timeout once the broker is back on the same port."""
    grid = grid_factory(privacy={"mode": "plain"})
    grid.broker.process.send_signal(signal.SIGTERM)
    grid.broker.process.wait(10)

    async def connect() -> MqttSession:
        session = _session(grid, "S1", [])
        starting = asyncio.ensure_future(session.start(30))
        # Until an attempt has failed (the session records its error), not a fixed pause.
        await wait_until_async(lambda: session.last_error, 30, "a failed connection attempt")
        assert not starting.done() and session.connects == 0
        await asyncio.to_thread(restart_broker, grid, 0.0)
        await starting
        await session.close()
        return session

    session = asyncio.run(connect())
    assert session.connects == 1
