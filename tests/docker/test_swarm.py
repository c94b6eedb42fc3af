"""The grid as a Docker Swarm stack (``privgrid compose --swarm``) on a single-node swarm.

The swarm is made here (``docker swarm init --advertise-addr 127.0.0.1``: loopback only) and
left at the end; its one node carries the three placement labels. The stack runs on the
project image the harness built and the broker image scripts/docker_offline.py prepared, as
docs/deploy.md says: ``privgrid compose SCENARIO --swarm [--tls] -o stack.yaml``, ``docker
stack deploy``, ``privgrid swarm wait``. Checked: the MO's exit status, the result against
``privgrid solve``, the ledger, the encrypted overlay, that each service got only its own
secrets, that no finished participant was restarted, and that a missing image is named.

Docker's encrypted overlay uses IPsec (ESP with AES-GCM) between nodes only; a single node
never needs it, so what is checked here is that the stack asks for it. Whether a node's kernel
can do it is a property of that host (docs/deploy.md gives the command to check), not of
privgrid: the machines our tests run on lack ESP, so encryption between nodes is not measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest
import tomli_w

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

SCENARIO = harness.REPO_ROOT / "configs" / "paper.toml"
AGENTS = ("S1", "S2", "S3", "S4", "B1", "B2", "B3")
PARTICIPANTS = ("LM", "MO", *AGENTS)
LABELS = ("privgrid.broker", "privgrid.operators", "privgrid.agents")
TOLERANCE = 1e-9


def privgrid(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privgrid.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def docker_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "DOCKER_HOST": os.environ.get("DOCKER_HOST", harness.DOCKER_SOCKET)},
    )


@pytest.fixture(scope="module")
def swarm(docker_engine: harness.EngineState) -> Iterator[str]:
    """A single-node swarm on loopback with the three labels on its node; left at the end,
    with the docker_gwbridge network swarm mode adds (a swarm that was already there is kept,
    with the labels it had)."""
    client = harness.docker_client(timeout=120)
    made = client.info()["Swarm"]["LocalNodeState"] != "active"
    had_bridge = bool(client.networks.list(names=["docker_gwbridge"]))
    if made:
        init = docker_cli("swarm", "init", "--advertise-addr", "127.0.0.1")
        assert init.returncode == 0, init.stderr
    node = client.nodes.get(client.info()["Swarm"]["NodeID"])
    before = dict(node.attrs["Spec"].get("Labels") or {})
    spec = dict(node.attrs["Spec"])
    spec["Labels"] = {**before, **dict.fromkeys(LABELS, "true")}
    node.update(spec)
    try:
        yield node.id
    finally:
        if made:
            docker_cli("swarm", "leave", "--force")
            if not had_bridge:  # the bridge swarm mode made on this host
                docker_cli("network", "rm", "docker_gwbridge")
        else:
            node.reload()
            spec = dict(node.attrs["Spec"])
            spec["Labels"] = before
            node.update(spec)
        client.close()


def scenario_copy(folder: Path, name: str) -> Path:
    """configs/paper.toml in plain mode under another name (the stack's and the run's)."""
    data = tomllib.loads(SCENARIO.read_text())
    data["scenario"]["name"] = name
    data["privacy"] = {"mode": "plain"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps(data))
    return path


class Stack:
    """A deployed stack, removed at the end."""

    def __init__(self, name: str, folder: Path, env: dict[str, str]) -> None:
        self.name, self.folder, self.env = name, folder, env

    def deploy(self) -> None:
        proc = subprocess.run(
            [
                "docker",
                "stack",
                "deploy",
                "--resolve-image",
                "never",
                "-c",
                "stack.yaml",
                self.name,
            ],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, **self.env},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def wait(self, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return privgrid(
            "swarm",
            "wait",
            self.name,
            "--timeout",
            str(timeout),
            cwd=self.folder,
            timeout=timeout + 60,
        )

    def logs(self, service: str) -> str:
        """The service's output (the CLI passes the containers' stderr on as its own)."""
        proc = docker_cli("service", "logs", "--raw", f"{self.name}_{service}")
        return proc.stdout + proc.stderr

    def remove(self) -> None:
        docker_cli("stack", "rm", self.name)


@pytest.fixture
def stacks(swarm: str) -> Iterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    for stack in made:
        stack.remove()


def service_name(pid: str) -> str:
    return {"LM": "lm", "MO": "mo"}.get(pid, f"agent-{pid.lower()}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("reference")
    solved = privgrid("solve", str(scenario_copy(folder, "reference")), "--json")
    assert solved.returncode == 0, solved.stderr
    return json.loads(solved.stdout)


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "passwords"])
def test_the_stack_converges_like_solve_with_each_service_holding_only_its_own_secrets(
    tmp_path: Path,
    stacks: list[Stack],
    privgrid_image: str,
    mosquitto_image: str,
    reference: dict[str, Any],
    tls: bool,
) -> None:
    name = f"swarm-{'tls' if tls else 'pw'}-{os.getpid()}"
    scenario_copy(tmp_path, name)
    made = privgrid(
        "compose",
        f"{name}.toml",
        "--swarm",
        *(["--tls"] if tls else []),
        "-o",
        "stack.yaml",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    stack = Stack(
        name,
        tmp_path,
        {"PRIVGRID_IMAGE": privgrid_image, "PRIVGRID_MOSQUITTO_IMAGE": mosquitto_image},
    )
    stacks.append(stack)
    stack.deploy()
    waited = stack.wait()
    assert waited.returncode == 0, waited.stderr + stack.logs("mo")[-4000:]
    assert f"{name}_mo exited with status 0" in waited.stderr

    results = json.loads((tmp_path / "runs" / name / "results.json").read_text())
    assert results["converged"] and results["ledger"]["committed"]
    assert results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        for key in ("power", "price"):
            assert abs(ours[key] - theirs[key]) <= TOLERANCE, (key, ours, theirs)
    verified = privgrid("ledger", "verify", str(tmp_path / "runs" / name / "ledger.sqlite"))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    client = harness.docker_client(timeout=120)
    try:
        network = client.networks.get(f"{name}_grid")
        assert network.attrs["Driver"] == "overlay"
        assert network.attrs["Options"].get("encrypted") == "true"
        assert network.attrs["Internal"] is True
        for pid in PARTICIPANTS:
            own_name = service_name(pid)
            svc = client.services.get(f"{name}_{own_name}")
            spec = svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
            secrets = {s["SecretName"].removeprefix(f"{name}_") for s in spec["Secrets"]}
            own = {"roster", f"{own_name}-key"}
            own |= (
                {f"{own_name}-cert", f"{own_name}-tls-key", "ca"}
                if tls
                else {f"{own_name}-password"}
            )
            assert secrets == own, (pid, secrets)
            tasks = svc.tasks()
            assert len(tasks) == 1, (pid, [t["Status"] for t in tasks])  # never restarted
            assert tasks[0]["Status"]["State"] == "complete", (pid, tasks[0]["Status"])
            assert tasks[0]["Status"]["ContainerStatus"]["ExitCode"] == 0
    finally:
        client.close()

    broker_log = stack.logs("broker")
    for pid in PARTICIPANTS:
        assert f" as {pid} (" in broker_log and f"u'{pid}'" in broker_log, pid
    port = "8883" if tls else "1883"
    assert f"on port {port}." in broker_log
    assert ("on port 1883." in broker_log) is (not tls)


def test_a_node_without_the_image_is_named_with_the_image(
    tmp_path: Path, stacks: list[Stack], mosquitto_image: str
) -> None:
    name = f"swarm-noimage-{os.getpid()}"
    scenario_copy(tmp_path, name)
    made = privgrid("compose", f"{name}.toml", "--swarm", "-o", "stack.yaml", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    missing = "privgrid-local/not-built:nowhere"
    stack = Stack(
        name, tmp_path, {"PRIVGRID_IMAGE": missing, "PRIVGRID_MOSQUITTO_IMAGE": mosquitto_image}
    )
    stacks.append(stack)
    stack.deploy()
    waited = stack.wait(timeout=120)
    assert waited.returncode == 2, waited.stderr
    assert f"has no image {missing}" in waited.stderr, waited.stderr
    assert "every node needs it" in waited.stderr
