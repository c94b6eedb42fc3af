"""The project image works: it solves the paper scenario like the host does, runs as a non-root
user, and its containers reach a Mosquitto container over a user-defined network, both through
the docker SDK and through docker-compose (what the multi-container grid will use).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import harness
import pytest

# Cold, the first test also pays for apt, debootstrap and the dependency layer (~2-3 min here).
pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

SCENARIO = "configs/paper.toml"
#: Where the Dockerfile puts configs/ (WORKDIR /app, so "configs/paper.toml" works too).
IMAGE_SCENARIO = "/app/configs/paper.toml"
PAPER_ROUNDS = 72  # the defaults (adaptive steps); 195 with the published parameters
TRADE_TOLERANCE = 1e-6
LABELS = {harness.TEST_LABEL: "1"}

#: Connects (retrying while the broker starts), subscribes, publishes to itself until the
#: message comes back through the broker; bounded to 30 s. argv: host, topic, payload.
PAHO_ROUND_TRIP = textwrap.dedent(
    """
    import sys, time
    import paho.mqtt.client as mqtt

    host, topic, payload = sys.argv[1:4]
    got = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, msg: got.append(msg.payload.decode())
    deadline = time.monotonic() + 30
    while True:
        try:
            client.connect(host, 1883, keepalive=10)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                sys.exit(f"broker {host} unreachable: {exc}")
            time.sleep(0.3)
    client.loop_start()
    client.subscribe(topic, qos=1)
    while not got and time.monotonic() < deadline:
        client.publish(topic, payload, qos=1)
        time.sleep(0.3)
    client.loop_stop()
    client.disconnect()
    if not got:
        sys.exit("no message came back")
    print("received " + got[0], flush=True)
    """
)

#: Publishes every 0.2 s for at most 30 s: the subscriber exits on the first one it sees.
_PUBLISH_LOOP = textwrap.dedent(
    """
    import sys, time
    import paho.mqtt.publish as publish

    host, topic, payload = sys.argv[1:4]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            publish.single(topic, payload, qos=1, hostname=host)
        except OSError:
            pass
        time.sleep(0.2)
    """
)

LISTENER_CONF = "listener 1883\nallow_anonymous true\n"


def _host_solve() -> dict[str, Any]:
    """``privgrid solve`` on the host (this venv), the reference the image must reproduce."""
    proc = subprocess.run(
        [sys.executable, "-m", "privgrid.cli", "solve", SCENARIO, "--json"],
        cwd=harness.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def container_solve(docker_client: docker.DockerClient, privgrid_image: str) -> dict[str, Any]:
    """``docker run IMAGE solve /app/configs/paper.toml --json``, with no network at all."""
    out = docker_client.containers.run(
        privgrid_image,
        ["solve", IMAGE_SCENARIO, "--json"],
        network_mode="none",
        remove=True,
        stdout=True,
        stderr=False,
        labels=LABELS,
    )
    return json.loads(out)


def test_solve_in_container_converges(container_solve: dict[str, Any]) -> None:
    assert container_solve["converged"] is True
    assert container_solve["rounds"] == PAPER_ROUNDS
    assert container_solve["kkt"]["passed"] is True


def test_solve_in_container_matches_host(container_solve: dict[str, Any]) -> None:
    host = _host_solve()
    assert host["rounds"] == container_solve["rounds"]

    def by_pair(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(t["seller"], t["buyer"]): t for t in result["trades"]}

    host_trades, image_trades = by_pair(host), by_pair(container_solve)
    assert host_trades.keys() == image_trades.keys()
    assert host_trades, "the paper scenario has trades"
    for pair, expected in host_trades.items():
        for key, value in expected.items():
            if isinstance(value, float):
                assert image_trades[pair][key] == pytest.approx(value, abs=TRADE_TOLERANCE), (
                    pair,
                    key,
                )


def test_container_runs_as_non_root(
    docker_client: docker.DockerClient, privgrid_image: str
) -> None:
    user = docker_client.images.get(privgrid_image).attrs["Config"]["User"]
    assert user and user.split(":")[0] not in ("0", "root"), user
    out = docker_client.containers.run(
        privgrid_image, ["-u"], entrypoint="id", network_mode="none", remove=True, labels=LABELS
    )
    assert int(out.decode().strip()) != 0


def _wait_for_log(container: Any, needle: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if needle in container.logs().decode(errors="replace"):
            return
        assert container.status == "running", container.logs().decode(errors="replace")
        time.sleep(0.2)
    pytest.fail(f"{needle!r} not in the logs of {container.name} after {timeout:.0f} s")


def test_broker_and_clients_talk_on_a_user_network(
    docker_client: docker.DockerClient,
    mosquitto_image: str,
    privgrid_image: str,
    tmp_path: Path,
) -> None:
    """Broker from the base image (run as eclipse-mosquitto:2 is), a mosquitto_sub client
    from the same image and a paho publisher from the project image, on an internal network.
    """
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(LISTENER_CONF)
    conf.chmod(0o644)
    network = docker_client.networks.create(
        harness.unique_name("privgrid-test-net"), driver="bridge", internal=True, labels=LABELS
    )
    started: list[Any] = []
    try:
        broker = docker_client.containers.run(
            mosquitto_image,  # default command: mosquitto -c /mosquitto/config/mosquitto.conf
            name=harness.unique_name("privgrid-test-broker"),
            network=network.name,
            volumes={str(conf): {"bind": "/mosquitto/config/mosquitto.conf", "mode": "ro"}},
            detach=True,
            labels=LABELS,
        )
        started.append(broker)
        _wait_for_log(broker, "running")
        topic, payload = "privgrid/test/network", "hello-over-the-bridge"
        subscriber = docker_client.containers.run(
            mosquitto_image,
            ["mosquitto_sub", "-h", broker.name, "-t", topic, "-q", "1", "-C", "1", "-W", "30"],
            network=network.name,
            detach=True,
            labels=LABELS,
        )
        started.append(subscriber)
        publisher = docker_client.containers.run(
            privgrid_image,
            ["-c", _PUBLISH_LOOP, broker.name, topic, payload],
            entrypoint="python",
            network=network.name,
            detach=True,
            labels=LABELS,
        )
        started.append(publisher)
        status = subscriber.wait(timeout=60)
        logs = subscriber.logs().decode(errors="replace")
        assert status["StatusCode"] == 0, logs
        assert logs.strip() == payload
    finally:
        for container in started:
            container.remove(force=True)
        network.remove()


def test_compose_project_round_trip(
    compose_project: Callable[..., harness.ComposeProject],
    mosquitto_image: str,
    privgrid_image: str,
    tmp_path: Path,
) -> None:
    """The compose wrapper brings up broker + client on an internal network and tears it down."""
    (tmp_path / "mosquitto.conf").write_text(LISTENER_CONF)
    (tmp_path / "mosquitto.conf").chmod(0o644)
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text(
        textwrap.dedent(
            """
            version: "3.8"
            services:
              broker:
                image: ${MOSQUITTO_IMAGE}
                command: ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
                volumes:
                  - ./mosquitto.conf:/mosquitto/config/mosquitto.conf:ro
                networks: [grid]
              client:
                image: ${PRIVGRID_IMAGE}
                entrypoint: ["python", "-c", "${ROUND_TRIP}", "broker", "privgrid/test/compose",
                             "hello-from-compose"]
                depends_on: [broker]
                networks: [grid]
            networks:
              grid:
                internal: true
            """
        )
    )
    project = compose_project(
        compose_file,
        {
            "MOSQUITTO_IMAGE": mosquitto_image,
            "PRIVGRID_IMAGE": privgrid_image,
            "ROUND_TRIP": PAHO_ROUND_TRIP,
        },
    )
    project.up()
    code = project.wait("client", timeout=60)
    logs = project.logs("client")
    assert code == 0, project.logs()
    assert "received hello-from-compose" in logs
    project.down()
    assert project.containers() == []
