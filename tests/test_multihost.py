"""Three hosts, one grid: the broker, the operators (LM + MO) and the agents each in their own
network namespace (tests/netlab.py), joined by a virtual switch, only the broker's TLS port
open. Every step is the one docs/deploy.md gives a person with three machines: the keys and
certificates made once (``privgrid keys init --tls --broker-name``), each host given only its
own files, ``privgrid broker config --tls`` and ``mosquitto`` on the broker host, and each role
started by hand with ``PRIVGRID_BROKER_URL=mqtts://…``. The result must be ``privgrid solve``'s
bit for bit (the promise ``privgrid run`` keeps), and a capture of the switch must hold nothing
but TLS records: no MQTT CONNECT, no password, no topic name.

Needs root, iproute2, iptables and tcpdump (scripts/setup.sh --system-packages installs them);
``PRIVGRID_SKIP_NETNS=1`` skips it explicitly, anything else missing fails it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.netlab import Lab, LabError
from tests.test_launcher import assert_same_market_as_solve
from tests.wirecheck import read_pcap, tls_record_problem

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parent.parent
PRIVGRID = [sys.executable, "-m", "privgrid.cli"]
TLS_PORT = 8883
RUN = "demo"
AGENTS = ["S1", "S2", "S3", "S4", "B1", "B2", "B3"]
OPERATORS = ["LM", "MO"]
#: On the broker host, as docs/deploy.md says (``--keys secrets`` is the default).
BROKER_CONFIG = [
    "broker",
    "config",
    "scenario.toml",
    "--tls",
    "--run",
    RUN,
    "--keys",
    "secrets",
    "--out",
    "broker",
]


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.environ.get("PRIVGRID_SKIP_NETNS") == "1":
        pytest.skip("PRIVGRID_SKIP_NETNS=1: the multi-host test is skipped on request")
    lab = Lab(f"pg{os.getpid()}", {"broker": 1, "operators": 2, "agents": 3})
    try:
        lab.build()
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        lab.destroy()
        pytest.fail(f"cannot build the three-host lab: {exc}", pytrace=False)
    yield lab
    lab.destroy()


def privgrid(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*PRIVGRID, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def hand_out(secrets: Path, host: Path, accounts: list[str]) -> None:
    """What a participants' host gets: the roster, the CA, and its participants' own keys
    and certificates — nobody else's (docs/deploy.md, "Which files go where")."""
    (host / "secrets" / "tls").mkdir(parents=True, mode=0o700)
    shutil.copy2(secrets / "roster.json", host / "secrets")
    shutil.copy2(secrets / "tls" / "ca.pem", host / "secrets" / "tls")
    for pid in accounts:
        shutil.copy2(secrets / f"{pid}.key", host / "secrets")
        for suffix in (".pem", ".key"):
            shutil.copy2(secrets / "tls" / f"{pid}{suffix}", host / "secrets" / "tls")


def reachable(lab: Lab, host: str, address: str, port: int) -> bool:
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=2).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    return lab.run(host, [sys.executable, "-c", probe], timeout=30).returncode == 0


def wait_until_reachable(lab: Lab, host: str, address: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not reachable(lab, host, address, port):
        assert time.monotonic() < deadline, f"{address}:{port} not reachable from {host}"


def plain_scenario(folder: Path) -> Path:
    """configs/paper.toml in plain privacy mode (the 2PC's cost is not what is tested)."""
    data = tomllib.loads((ROOT / "configs" / "paper.toml").read_text())
    data.setdefault("privacy", {})["mode"] = "plain"
    folder.mkdir(parents=True)
    path = folder / "scenario.toml"
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.mark.grid
def test_broker_operators_and_agents_on_three_hosts_agree_with_solve_over_tls_only(
    lab: Lab, tmp_path: Path
):
    broker_ip = lab.address("broker")
    admin = tmp_path / "admin"
    scenario = plain_scenario(admin)
    solve: dict[str, Any] = json.loads(
        privgrid("solve", "scenario.toml", "--json", cwd=admin).stdout
    )

    # 1. Once, on the administrator's machine: identity keys, the run CA and every certificate.
    privgrid(
        "keys",
        "init",
        "scenario.toml",
        "--out",
        "secrets",
        "--tls",
        "--broker-name",
        broker_ip,
        cwd=admin,
    )
    secrets = admin / "secrets"

    # 2. Each host gets the scenario and only its own files.
    hosts = {name: tmp_path / name for name in ("broker", "operators", "agents")}
    for folder in hosts.values():
        (folder / "logs").mkdir(parents=True)
        shutil.copy2(scenario, folder / "scenario.toml")
    (hosts["broker"] / "secrets" / "tls").mkdir(parents=True, mode=0o700)
    for name in ("ca.pem", "broker.pem", "broker.key"):
        shutil.copy2(secrets / "tls" / name, hosts["broker"] / "secrets" / "tls")
    hand_out(secrets, hosts["operators"], OPERATORS)
    hand_out(secrets, hosts["agents"], AGENTS)
    assert not (hosts["agents"] / "secrets" / "tls" / "LM.key").exists()

    # 3. The broker host: its firewall lets in TCP to 8883 only (a stray plain listener on
    #    1883 stays unreachable), then the broker's configuration and Mosquitto.
    lab.only_tcp_port("broker", TLS_PORT)
    decoy = lab.popen(
        "broker",
        [
            sys.executable,
            "-c",
            (
                "import socket, time\n"
                f"s = socket.create_server(({broker_ip!r}, 1883))\n"
                "time.sleep(600)\n"
            ),
        ],
    )
    wait_until_reachable(lab, "broker", broker_ip, 1883, 30)  # it listens…
    assert not reachable(lab, "agents", broker_ip, 1883)  # …but not for another host
    Lab.stop(decoy)
    config = lab.run(
        "broker",
        [*PRIVGRID, *BROKER_CONFIG],
        cwd=hosts["broker"],
    )
    assert config.returncode == 0, config.stderr
    assert "open TCP port 8883" in config.stdout
    capture = tmp_path / "link.pcap"
    tcpdump = lab.capture(capture)
    with (hosts["broker"] / "logs" / "mosquitto.log").open("wb") as log:
        mosquitto = lab.popen(
            "broker", ["mosquitto", "-c", "broker/mosquitto.conf"], cwd=hosts["broker"], stderr=log
        )
    wait_until_reachable(lab, "agents", broker_ip, TLS_PORT, 30)

    # 4. The operators' and the agents' hosts: each role started by hand, as the README says.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PRIVGRID_BROKER_URL": f"mqtts://{broker_ip}:{TLS_PORT}",
        "PRIVGRID_RUN": RUN,
    }
    roles: dict[str, subprocess.Popen[bytes]] = {}
    commands = {
        "LM": ("operators", ["lm", "--scenario", "scenario.toml"]),
        "MO": ("operators", ["mo", "--scenario", "scenario.toml", "--out", "results"]),
        **{a: ("agents", ["agent", "--scenario", "scenario.toml", "--id", a]) for a in AGENTS},
    }
    for pid, (host, args) in commands.items():
        with (hosts[host] / "logs" / f"{pid}.log").open("wb") as log:
            roles[pid] = lab.popen(host, [*PRIVGRID, *args], cwd=hosts[host], env=env, stderr=log)
    mo_status = roles["MO"].wait(timeout=400)
    others = {pid: p.wait(timeout=60) for pid, p in roles.items()}
    Lab.stop(mosquitto)
    Lab.stop(tcpdump, wait=15)

    logs = {pid: (hosts[h] / "logs" / f"{pid}.log").read_text() for pid, (h, _) in commands.items()}
    assert mo_status == 0, logs["MO"][-3000:]
    assert others == dict.fromkeys(roles, 0), {p: logs[p][-800:] for p, c in others.items() if c}

    # The evaluator, on the MO's host once the MO has ended (docs/deploy.md); then the same
    # market as the in-process reference, and a ledger that verifies.
    privgrid("report", "results", "--scenario", "scenario.toml", cwd=hosts["operators"])
    results = json.loads((hosts["operators"] / "results" / "results.json").read_text())
    assert results["converged"] and results["kkt"]["passed"]
    assert_same_market_as_solve(results, solve)
    ledger = hosts["operators"] / "results" / "ledger.sqlite"
    privgrid("ledger", "verify", str(ledger), cwd=hosts["operators"])
    for pid in commands:
        assert f"connected to mqtts://{broker_ip}:{TLS_PORT} as {pid}" in logs[pid], pid

    # What crossed the switch: TCP to and from the broker's TLS port, nothing else, and in
    # every direction of every connection nothing but TLS records.
    wire = read_pcap(capture)
    assert wire.other_ipv4 == []
    streams = wire.streams()
    clients = {src[0] for src, dst in streams if dst == (broker_ip, TLS_PORT)}
    assert clients == {lab.address("operators"), lab.address("agents")}
    connections = [key for key in streams if key[1] == (broker_ip, TLS_PORT)]
    assert len(connections) >= len(commands), connections
    for seg in wire.segments:
        assert TLS_PORT in (seg.src[1], seg.dst[1]), seg
    total = 0
    for key, data in streams.items():
        assert tls_record_problem(data) is None, (key, tls_record_problem(data))
        assert b"MQTT" not in data and b"privgrid/" not in data, key
        total += len(data)
    assert total > 100_000  # the whole negotiation went this way (hundreds of rounds)
    raw = capture.read_bytes()
    for secret in (b"MQTT", b"privgrid/", RUN.encode() + b"/", b"scenario.toml"):
        assert secret not in raw, secret
    assert socket.inet_aton(broker_ip)  # the lab's own address, nothing outside it


def test_the_wire_check_tells_a_plain_mqtt_connect_from_tls_records():
    """The capture's check can fail: a plaintext CONNECT (what an mqtt:// client sends first,
    password included) is not a TLS record; a TLS handshake and application data are."""
    connect = b"\x10\x1f\x00\x04MQTT\x04\xc2\x00\x2d\x00\x02S1\x00\x02S1\x00\x08password"
    assert tls_record_problem(connect) == f"byte 0: {connect[:16]!r} does not start a TLS record"
    records = b"\x16\x03\x01\x00\x02ab" + b"\x17\x03\x03\x00\x03xyz" + b"\x17\x03\x03\x01"
    assert tls_record_problem(records) is None  # the last one cut short by the capture's end
    assert tls_record_problem(records[:12] + connect) is not None


def test_docs_deploy_gives_the_steps_this_test_takes():
    """docs/deploy.md and the README name the commands the three-host test runs."""
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    for step in (
        "privgrid keys init scenario.toml --out secrets --tls --broker-name",
        "privgrid " + " ".join(BROKER_CONFIG),
        "mosquitto -c broker/mosquitto.conf",
        "export PRIVGRID_BROKER_URL=mqtts://broker.example.org:8883 PRIVGRID_RUN=demo",
        "privgrid lm --scenario scenario.toml",
        "privgrid mo --scenario scenario.toml --out results",
        "privgrid agent --scenario scenario.toml --id S1",
        "TCP 8883",
    ):
        assert step in deploy, step
    readme = (ROOT / "README.md").read_text()
    assert "docs/deploy.md" in readme and "privgrid run configs/paper.toml --tls" in readme
