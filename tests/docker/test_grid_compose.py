"""A whole grid under docker-compose, as a user runs it: ``privgrid compose`` then ``up``.

The compose file is generated for the paper scenario with 1024-bit test keys (Paillier mode,
``insecure_test_keys``) into a temporary folder, and run with the command the README gives,
``up --abort-on-container-exit --exit-code-from mo``, on the project image the harness built
and the broker image scripts/docker_offline.py prepared (``PRIVGRID_IMAGE``,
``PRIVGRID_MOSQUITTO_IMAGE``). Checked:

* the run converges, compose's exit status is the MO's (0), the results in ``./runs`` match
  ``privgrid solve`` within 1e-6, the ledger verifies (on the host, and with docs/docker.md's
  ``docker run -v "$PWD/runs:/app/runs:ro" … ledger verify``);
* ``docker-compose logs agent-s1`` is that agent's log, with its rounds;
* every participant ran in its own container, with its own address on the project's network
  (and the broker saw each one connect from that address, its client id its account's name),
  as a non-root user, seeing only
  its own secrets folder;
* killing one agent container mid-run: the MO names it, the run ends non-zero, and the ledger
  in ``./runs`` still verifies (no block, nothing corrupted).

Everything runs on the project's internal network; ``down -v`` removes containers, network and
the broker volume at the end (the images stay cached).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import pytest
import tomli_w

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1200)]

SCENARIO = harness.REPO_ROOT / "configs" / "paper.toml"
RUN = "paper"  # the compose file's default run id: the scenario name
TOLERANCE = 1e-6
AGENTS = ("S1", "S2", "S3", "S4", "B1", "B2", "B3")
PARTICIPANTS = ("LM", "MO", *AGENTS)
UP = ("up", "--no-build", "--abort-on-container-exit", "--exit-code-from", "mo")
#: One event of a role's text log, after compose's "service_1  | " prefix (docs/wire.md).
LOG_LINE = re.compile(r"\|\s+\d{4}-\d\d-\d\dT[\d:.]+Z (\S+) r=(\S+) ", re.MULTILINE)
#: How long a whole run may take here (measured: about 50 s for the paper case).
RUN_TIMEOUT = 600


def privgrid(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """The host's ``privgrid`` CLI (this venv)."""
    return subprocess.run(
        [sys.executable, "-m", "privgrid.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def service(participant: str) -> str:
    return {"LM": "lm", "MO": "mo"}.get(participant, f"agent-{participant.lower()}")


@dataclass
class Grid:
    """One generated compose project in its own folder."""

    folder: Path
    project: harness.ComposeProject

    @property
    def run_folder(self) -> Path:
        return self.folder / "runs" / RUN

    def results(self) -> dict[str, Any]:
        return json.loads((self.run_folder / "results.json").read_text())

    def container(self, name: str) -> Any:
        found = self.project.containers(name)
        assert len(found) == 1, (name, found)
        return found[0]

    def monitor_password(self) -> str:
        return (self.folder / "secrets" / RUN / "broker" / "monitor.password").read_text().strip()

    def wait_for_round(self, round_: int, timeout: float = 300) -> None:
        """Block until the MO has broadcast ``round_`` rounds, seen from inside the broker's
        container with the read-only monitor account (the network is internal)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mo = self.project.containers("mo")
            if mo and mo[0].status == "exited":
                pytest.fail(f"the MO exited before round {round_}:\n{self.project.logs('mo')}")
            brokers = [c for c in self.project.containers("broker") if c.status == "running"]
            if brokers:
                code, out = brokers[0].exec_run(
                    [
                        "mosquitto_sub",
                        "-h",
                        "127.0.0.1",
                        "-u",
                        "monitor",
                        "-P",
                        self.monitor_password(),
                        "-t",
                        f"privgrid/{RUN}/bcast/MO/round",
                        "-C",
                        str(round_),
                        "-W",
                        "20",
                    ],
                )
                if code == 0:
                    return
                assert b"not authorised" not in out, out
            time.sleep(1)
        pytest.fail(f"round {round_} was not broadcast within {timeout:.0f} s")


def _test_scenario(folder: Path) -> Path:
    """configs/paper.toml with Paillier and 1024-bit test keys (fast enough for CI)."""
    data = tomllib.loads(SCENARIO.read_text())
    data["privacy"] = {"mode": "paillier", "key_bits": 1024, "insecure_test_keys": True}
    path = folder / "configs" / "paper.toml"
    path.parent.mkdir(parents=True)
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.fixture
def grid(
    tmp_path: Path,
    compose_project: Callable[..., harness.ComposeProject],
    privgrid_image: str,
    mosquitto_image: str,
) -> Iterator[Grid]:
    """``privgrid compose configs/paper.toml -o compose.yaml`` in a fresh folder."""
    _test_scenario(tmp_path)
    made = privgrid("compose", "configs/paper.toml", "-o", "compose.yaml", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = compose_project(
        tmp_path / "compose.yaml",
        {"PRIVGRID_IMAGE": privgrid_image, "PRIVGRID_MOSQUITTO_IMAGE": mosquitto_image},
    )
    project.compose("config", "-q")  # compose itself accepts the generated file
    yield Grid(tmp_path, project)
    project.down()
    assert project.containers() == [], "down left containers behind"
    client = harness.docker_client(timeout=60)
    try:
        prefix = f"{project.project_name}_"
        assert not [n.name for n in client.networks.list() if n.name.startswith(prefix)]
        assert not [v.name for v in client.volumes.list() if v.name.startswith(prefix)]
    finally:
        client.close()


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """``privgrid solve`` on the host: what the containers must reproduce."""
    solved = privgrid("solve", str(SCENARIO), "--json")
    assert solved.returncode == 0, solved.stderr
    return json.loads(solved.stdout)


def _addresses(grid: Grid, log: Path, timeout: float = 180) -> dict[str, tuple[str, str]]:
    """participant → (container id, IP on the project's network), read while they run (a
    stopped container has no address any more)."""
    network = f"{grid.project.project_name}_grid"
    deadline = time.monotonic() + timeout
    found: dict[str, tuple[str, str]] = {}
    while time.monotonic() < deadline and len(found) < len(PARTICIPANTS):
        for participant in PARTICIPANTS:
            for container in grid.project.containers(service(participant)):
                networks = container.attrs["NetworkSettings"]["Networks"]
                address = networks.get(network, {}).get("IPAddress")
                if container.status == "running" and address:
                    found[participant] = (container.id, address)
        time.sleep(0.5)
    assert len(found) == len(PARTICIPANTS), (
        f"not all running with an address: {found}\n{log.read_text()[-3000:]}"
    )
    return found


def _finish(process: subprocess.Popen[bytes], log: Path, timeout: float = RUN_TIMEOUT) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"docker-compose up still running after {timeout} s:\n{log.read_text()[-3000:]}"
        )


def _trades(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(t["seller"], t["buyer"]): t for t in result["trades"]}


def test_grid_in_containers_converges_like_solve(grid: Grid, reference: dict[str, Any]) -> None:
    log = grid.folder / "up.log"
    process = grid.project.start(*UP, log=log)
    addresses = _addresses(grid, log)
    code = _finish(process, log)
    assert code == 0, f"compose exit status {code} (the MO's):\n{log.read_text()[-4000:]}"

    # Results in ./runs match the one-process negotiation.
    results = grid.results()
    assert results["converged"] is True
    assert results["rounds"] == reference["rounds"]
    assert results["ledger"]["committed"] is True
    ours, theirs = _trades(results), _trades(reference)
    assert ours.keys() == theirs.keys() and ours
    for pair, expected in theirs.items():
        for key, value in expected.items():
            if isinstance(value, float):
                assert ours[pair][key] == pytest.approx(value, abs=TOLERANCE), (pair, key)
    lines = {line["id"]: line for line in results["lines"]}
    assert lines.keys() == {line["id"] for line in reference["lines"]}
    for expected in reference["lines"]:
        for key in ("flow", "price_up", "price_down"):
            got = lines[expected["id"]][key]
            assert got == pytest.approx(expected[key], abs=TOLERANCE), (expected["id"], key)
    assert results["social_welfare"] == pytest.approx(reference["social_welfare"], abs=TOLERANCE)
    for name in ("trace.csv", "ledger.sqlite", "plots"):
        assert (grid.run_folder / name).exists(), name
    verified = privgrid("ledger", "verify", str(grid.run_folder / "ledger.sqlite"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # docs/docker.md's check without a host installation: the image, on a read-only mount.
    client = harness.docker_client(timeout=120)
    try:
        out = client.containers.run(
            grid.project.env["PRIVGRID_IMAGE"],
            ["ledger", "verify", f"runs/{grid.run_folder.name}/ledger.sqlite"],
            volumes={str(grid.run_folder.parent): {"bind": "/app/runs", "mode": "ro"}},
            network_mode="none",
            remove=True,
            labels={harness.TEST_LABEL: "1"},
        )
    finally:
        client.close()
    assert b"ledger OK" in out, out

    # `docker-compose logs agent-s1`: that agent's lines only, from its start to its last round.
    s1_log = grid.project.logs("agent-s1")
    stamped = LOG_LINE.findall(s1_log)  # (participant, round) of every log event
    assert len(stamped) > 5 and {who for who, _ in stamped} == {"S1"}, s1_log[:2000]
    rounds = {int(r) for _, r in stamped if r.isdigit()}
    assert {0, results["rounds"]} <= rounds, sorted(rounds)
    assert f"S1 r={results['rounds']} INFO" in s1_log

    # One container each, each with its own address; the broker saw each connect from it,
    # with its account's name as client id (the binding that stops session takeovers).
    ids = [container_id for container_id, _ in addresses.values()]
    ips = [ip for _, ip in addresses.values()]
    assert len(set(ids)) == len(PARTICIPANTS) and len(set(ips)) == len(PARTICIPANTS), addresses
    broker_log = grid.project.logs("broker")
    for participant, (_, ip) in addresses.items():
        assert re.search(
            rf"from {re.escape(ip)}:\d+ as {participant} .*u'{participant}'", broker_log
        ), (
            participant,
            ip,
        )

    # Non-root, and each participant sees only its own secrets folder.
    for participant in PARTICIPANTS:
        container = grid.container(service(participant))
        assert container.attrs["Config"]["User"] == "10001:10001"
        assert container.attrs["State"]["ExitCode"] == 0, (participant, container.attrs["State"])
        secret_mounts = [
            m["Source"] for m in container.attrs["Mounts"] if "/secrets" in m["Source"]
        ]
        assert secret_mounts == [str(grid.folder / "secrets" / RUN / participant)], secret_mounts
        runs_mounts = [m for m in container.attrs["Mounts"] if "/runs" in m["Source"]]
        assert bool(runs_mounts) == (participant == "MO"), runs_mounts
    key = grid.folder / "secrets" / RUN / "S1" / "S1.key"
    assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_uid == 10001
    broker = grid.container("broker")
    assert broker.attrs["Config"]["User"] == "1883:1883"


def test_killed_agent_is_named_and_the_ledger_stays_valid(grid: Grid) -> None:
    log = grid.folder / "up.log"
    process = grid.project.start(*UP, log=log)
    grid.wait_for_round(10)
    victim = grid.container("agent-s3")
    victim.kill()  # SIGKILL: no goodbye; the broker publishes S3's signed last will
    code = _finish(process, log)
    mo_log = grid.project.logs("mo")
    assert code == 3, log.read_text()[-3000:]  # the MO's status: a participant failed
    assert grid.container("mo").attrs["State"]["ExitCode"] == 3, mo_log[-3000:]
    assert re.search(r"participant S3 left the run during round \d+", mo_log), mo_log[-3000:]
    results = grid.results()
    assert results["converged"] is False
    assert "S3" in (results["error"] or ""), results["error"]
    verified = privgrid("ledger", "verify", str(grid.run_folder / "ledger.sqlite"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert results["ledger"]["committed"] is False


def test_checked_in_compose_files_are_accepted_by_compose(
    docker_engine: harness.EngineState,
) -> None:
    """``docker-compose config`` on compose.yaml (and compose.collusion.yaml if present)."""
    for name in ("compose.yaml", "compose.collusion.yaml"):
        path = harness.REPO_ROOT / name
        if name == "compose.yaml" or path.exists():
            project = harness.ComposeProject(path, harness.unique_name("privgrid-test"))
            config = project.compose("config")
            assert "eclipse-mosquitto:2" in config.stdout
