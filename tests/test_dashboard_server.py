"""The dashboard's server and its bad input: real HTTP, a real Mosquitto, the real CLI.

- the event stream sends the whole state, then only what changed, then the final state and
  ``bye`` when the dashboard stops; it never opens a file under secrets/, state/ or broker/;
- the ``dashboard`` broker account reads everything of the run and may write nothing;
- a port in use, a dashboard without an account, a broker that refuses it: exit 2 with a
  one-line reason, before any run starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from privgrid.broker.config import DASHBOARD, MONITOR
from privgrid.broker.local import free_port
from privgrid.dashboard.server import Dashboard, Listen
from privgrid.dashboard.state import RunState
from privgrid.dashboard.watch import DashboardError, Watcher
from privgrid.wire import topics
from privgrid.wire.session import BrokerUrl

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "configs" / "paper.toml"
PRIVGRID = [sys.executable, "-m", "privgrid.cli"]
LOG = logging.getLogger("test-dashboard")


async def read_events(response: aiohttp.ClientResponse, until: str):
    """(event, data) pairs of an SSE stream, up to and including the first ``until``."""
    events, event, data = [], None, []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif line == "" and event is not None:
            events.append((event, json.loads("".join(data))))
            if event == until:
                return events
            event, data = None, []
    return events


async def next_event(response: aiohttp.ClientResponse, kind: str) -> dict:
    return (await read_events(response, kind))[-1][1]


def test_the_stream_sends_the_state_then_changes_then_the_final_state(tmp_path):
    """In process, over real HTTP: a page connects to a run folder being written."""
    folder = tmp_path / "run"
    (folder / "logs").mkdir(parents=True)
    (folder / "secrets").mkdir()
    (folder / "secrets" / "broker.json").write_text("{}")
    (folder / "scenario.toml").write_text(PAPER.read_text())
    (folder / "trace.csv").write_text("round,r_P,r_L,r_d,r_C,elapsed_s,welfare\n1,1,1,1,0,0.1,\n")
    opened: list[str] = []
    watching = {"on": True}

    def audit(event: str, args: tuple) -> None:
        if watching["on"] and event == "open" and isinstance(args[0], str | Path):
            opened.append(str(args[0]))

    sys.addaudithook(audit)

    async def scenario() -> None:
        dashboard = Dashboard(folder, "run", None, LOG)
        listen = Listen("127.0.0.1", free_port())
        ready = asyncio.Event()
        serving = asyncio.create_task(
            dashboard.serve(listen, "--listen", lambda url: ready.set(), signals=False)
        )
        await asyncio.wait_for(ready.wait(), 60)
        async with aiohttp.ClientSession() as http:
            index = await http.get(listen.url)
            assert index.status == 200 and "privgrid" in await index.text()
            assert "default-src 'self'" in index.headers["Content-Security-Policy"]
            library = await http.get(listen.url + "static/vendor/uPlot.iife.min.js")
            assert library.status == 200
            events = await http.get(listen.url + "events")
            assert events.headers["Content-Type"] == "text/event-stream"
            first = await read_events(events, "state")
            kinds = [k for k, _ in first]
            assert kinds[:1] == ["network"] and "trace" in kinds
            trace = next(d for k, d in first if k == "trace" and d["rows"])
            assert [r[0] for r in trace["rows"]] == [1.0]
            state = first[-1][1]
            assert state["scenario"] == "paper" and state["round"] == 1
            assert state["broker"].startswith("none")
            with (folder / "trace.csv").open("a") as handle:
                handle.write("2,0.5,0.5,0.5,0,0.2,\n")
            more = await next_event(events, "trace")
            assert [r[0] for r in more["rows"]] == [2.0]  # only the new row
            # (before the stop: once the final state is out, the server closes its port)
            snapshot = await (await http.get(listen.url + "state.json")).json()
            assert snapshot["trace"][-1][0] == 2.0
            (folder / "results.json").write_text(json.dumps({"status": "converged", "lines": []}))
            dashboard.stop()  # as SIGTERM at the end of the run
            last = await read_events(events, "bye")
            final = [d for k, d in last if k == "state"][-1]
            assert final["stopping"] and final["results"]["status"] == "converged"
        await asyncio.wait_for(serving, 30)

    try:
        asyncio.run(scenario())
    finally:
        watching["on"] = False
    ours = [p for p in opened if str(folder) in p]
    assert any(p.endswith("trace.csv") for p in ours)
    for forbidden in ("secrets", "state", "broker"):
        assert not [p for p in ours if f"/{forbidden}/" in p or p.endswith(f"/{forbidden}")]


def test_the_dashboard_account_reads_everything_of_the_run_and_writes_nothing(grid_factory):
    grid = grid_factory(privacy={"mode": "plain"})
    run = grid.run

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        seen: dict[str, list[bytes]] = {DASHBOARD: [], MONITOR: []}
        async with (
            grid.client(DASHBOARD, "dash-test") as dash,
            grid.client(MONITOR, "mon-test") as mon,
            grid.client("S1", "s1-test") as s1,
        ):
            await dash.subscribe(topics.run_filter(run), qos=1)
            await mon.subscribe(topics.run_filter(run), qos=1)

            async def collect(client: aiomqtt.Client, into: list[bytes]) -> None:
                async for message in client.messages:
                    into.append(bytes(message.payload))
                    if message.payload == b"done":
                        return

            tasks = [
                asyncio.create_task(collect(c, seen[n]))
                for n, c in ((DASHBOARD, dash), (MONITOR, mon))
            ]
            await dash.publish(topics.broadcast(run, "MO", "round"), b"forged-by-dashboard", qos=1)
            await dash.publish(topics.keys(run, "dashboard"), b"a key of its own", qos=1)
            await s1.publish(topics.direct(run, "B1", "S1", "share"), b"from-S1", qos=1)
            await s1.publish(topics.direct(run, "B1", "S1", "share"), b"done", qos=1)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return seen[DASHBOARD], seen[MONITOR]

    dashboard_saw, monitor_saw = asyncio.run(scenario())
    assert dashboard_saw == [b"from-S1", b"done"]  # it reads another's private inbox …
    assert monitor_saw == [b"from-S1", b"done"]  # … and wrote nothing anyone could read


def test_a_broker_that_refuses_the_account_is_a_clear_error(grid_factory):
    grid = grid_factory(privacy={"mode": "plain"})
    url = BrokerUrl.parse(f"mqtt://{DASHBOARD}:wrong@127.0.0.1:{grid.broker.port}")
    watcher = Watcher(url, grid.run, RunState(grid.run), None, time.time, lambda: None, LOG)

    with pytest.raises(DashboardError, match="refused the dashboard's account 'dashboard'"):
        asyncio.run(watcher.check_account(timeout=10))
    # and the CLI says it in one line, exit 2
    proc = subprocess.run(
        [
            *PRIVGRID,
            "dashboard",
            str(grid.folder),
            "--listen",
            str(free_port()),
            "--broker",
            str(url).replace("dashboard@", "dashboard:wrong@"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("privgrid: error: the broker at mqtt://dashboard@127.0.0.1:")
    assert "refused the dashboard's account" in last and "Traceback" not in proc.stderr


def test_a_participants_account_is_refused_before_it_could_cut_the_participant_off(
    grid_factory,
):
    """PRIVGRID_BROKER_URL left over from a participant's environment must not make the
    dashboard connect as that participant (the broker would drop the participant's own)."""
    grid = grid_factory(privacy={"mode": "plain"})
    proc = subprocess.run(
        [*PRIVGRID, "dashboard", str(grid.folder), "--listen", str(free_port()), "--run", grid.run],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PRIVGRID_BROKER_URL": grid.url("S1")},
    )
    assert proc.returncode == 2
    assert "is participant S1's account: a second connection of it would cut S1 off" in (
        proc.stderr
    )


def test_a_broker_url_without_an_account_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [
            *PRIVGRID,
            "dashboard",
            str(tmp_path),
            "--listen",
            str(free_port()),
            "--broker",
            "mqtt://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "names no account: the dashboard needs its own read-only account" in proc.stderr


@pytest.fixture
def busy_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_privgrid_dashboard_on_a_port_in_use_exits_2(tmp_path, busy_port):
    proc = subprocess.run(
        [*PRIVGRID, "dashboard", str(tmp_path), "--listen", f"127.0.0.1:{busy_port}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"privgrid: error: port {busy_port} on 127.0.0.1 is in use; "
        "pick another with --listen HOST:PORT"
    )


def test_privgrid_run_with_its_dashboard_port_in_use_exits_2_before_the_run(tmp_path, busy_port):
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            *PRIVGRID,
            "run",
            str(PAPER),
            "--privacy",
            "plain",
            "--out",
            str(out),
            "--dashboard",
            str(busy_port),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"privgrid: error: port {busy_port} on 127.0.0.1 is in use; "
        "pick another with --dashboard HOST:PORT"
    )
    assert json.loads(proc.stdout)["status"] == "invalid_input"
    assert not out.exists()  # nothing started, nothing written


def test_privgrid_run_with_broker_but_no_dashboard_account_exits_2(tmp_path):
    proc = subprocess.run(
        [
            *PRIVGRID,
            "run",
            str(PAPER),
            "--out",
            str(tmp_path / "run"),
            "--broker",
            "mqtt://127.0.0.1:1",
            "--dashboard",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "--dashboard with --broker" in last and "--dashboard-broker" in last
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "spec, reason",
    [
        ("http", "the port must be a number"),
        ("127.0.0.1:70000", "the port must be a number"),
        (":8050", "the host is empty"),
    ],
)
def test_a_bad_listen_address_names_the_option(tmp_path, spec, reason):
    proc = subprocess.run(
        [*PRIVGRID, "dashboard", str(tmp_path), "--listen", spec],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"--listen {spec!r}: {reason}" in proc.stderr
