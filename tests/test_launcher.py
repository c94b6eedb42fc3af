"""``privgrid run`` as a user runs it: its own Mosquitto, the embedded fallback, Ctrl-C."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from privgrid.results import is_run_only, key_paths
from tests.rounds import ROUNDS

pytestmark = pytest.mark.timeout(400)
ROOT = Path(__file__).resolve().parent.parent
PRIVGRID = [sys.executable, "-m", "privgrid.cli"]


@pytest.fixture(scope="module")
def solve_json() -> dict[str, Any]:
    """``privgrid solve configs/paper.toml --json``: the in-process reference, computed once."""
    proc = subprocess.run(
        [*PRIVGRID, "solve", "configs/paper.toml", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def assert_same_market_as_solve(results: dict[str, Any], reference: dict[str, Any]) -> None:
    """Every trade and price within 1e-9 of ``privgrid solve`` (same arithmetic, same order),
    and the welfare within 1e-4 relative of solve's centralised optimum (acceptance, issue 3)."""
    assert results["rounds"] == reference["rounds"]
    assert results["trades"] and len(results["trades"]) == len(reference["trades"])
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        assert (ours["seller"], ours["buyer"]) == (theirs["seller"], theirs["buyer"])
        for key in ("power", "price", "charge", "buyer_power", "buyer_price"):
            assert abs(ours[key] - theirs[key]) <= 1e-9, (key, ours, theirs)
    assert results["lines"] and len(results["lines"]) == len(reference["lines"])
    for ours, theirs in zip(results["lines"], reference["lines"], strict=True):
        assert ours["id"] == theirs["id"]
        for key in ("flow", "price_up", "price_down"):
            assert abs(ours[key] - theirs[key]) <= 1e-9, (key, ours, theirs)
    optimum = reference["optimal_social_welfare"]
    assert abs(results["social_welfare"] - optimum) <= 1e-4 * abs(optimum)


def path_without_mosquitto() -> str:
    """PATH with every folder holding a mosquitto binary removed (the binary stays installed)."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    kept = [f for f in folders if not (Path(f) / "mosquitto").exists()]
    return os.pathsep.join(kept)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_solve_schema(results: dict[str, Any], reference: dict[str, Any]) -> None:
    """Same schema as ``privgrid solve --json``, compared key by key through nested objects and
    list items: nothing of solve's missing, and only the documented run-only fields added."""
    ours, theirs = set(key_paths(results)), set(key_paths(reference))
    assert {"optimal.theta", "agents[].theta", "timings.total_s", "trades[].price"} <= theirs
    assert sorted(theirs - ours) == []
    assert sorted(p for p in ours - theirs if not is_run_only(p)) == []


def assert_run_folder(folder: Path, results: dict[str, Any], participant_ids: list[str]) -> None:
    """The launcher's own run folder: trace.csv with one row per round (residuals, welfare),
    one log per participant and both plots as real PNG files."""
    with (folder / "trace.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == ["round", "r_P", "r_L", "r_d", "r_C", "elapsed_s", "welfare"]
    assert [int(r["round"]) for r in rows] == list(range(1, results["rounds"] + 1))
    assert all(r["welfare"] != "" for r in rows)  # the evaluator's replay matched the run
    assert abs(float(rows[-1]["welfare"]) - results["social_welfare"]) < 1e-9
    assert {k: float(rows[-1][k]) for k in ("r_P", "r_L", "r_d", "r_C")} == results["residuals"]
    assert participant_ids
    for pid in participant_ids:
        log = folder / "logs" / f"{pid}.log"
        assert log.stat().st_size > 0, pid
    for name in ("convergence.png", "trades.png"):
        data = (folder / "plots" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name


@pytest.mark.grid
def test_privgrid_run_with_mosquitto_converges_and_prints_a_summary(tmp_path, solve_json):
    assert shutil.which("mosquitto"), "Debian's mosquitto must be installed for this test"
    out = tmp_path / "run"
    proc = subprocess.run(
        [*PRIVGRID, "run", "configs/paper.toml", "--privacy", "plain", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "broker: mosquitto" in proc.stderr
    assert "Summary: paper (plain)" in proc.stdout and str(ROUNDS["paper"]) in proc.stdout
    assert proc.stderr.rstrip("\n").splitlines()[-1] == f"run folder: {out}"  # no reason line
    assert "Traceback" not in proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["converged"] and results["rounds"] == ROUNDS["paper"]  # adaptive steps
    assert results["status"] == "converged" and results["error"] is None
    assert_same_market_as_solve(results, solve_json)
    assert_solve_schema(results, solve_json)
    assert results["agents"] and all(a["theta"] is not None for a in results["agents"])
    assert results["optimal"] == solve_json["optimal"]
    everyone = ["S1", "S2", "S3", "S4", "B1", "B2", "B3", "LM", "MO"]
    assert sorted(p.name for p in (out / "logs").iterdir()) == sorted(f"{p}.log" for p in everyone)
    assert_run_folder(out, results, everyone)
    # Secrets stay private to the user who ran it.
    assert (out / "secrets" / "S1.key").stat().st_mode & 0o077 == 0
    assert (out / "secrets" / "broker.json").stat().st_mode & 0o077 == 0


def assert_json_logs(folder: Path, participant_ids: list[str], rounds: int) -> None:
    """``--log-format json``: every line of every participant's log is one JSON object that
    names that participant and carries the round (an int), the last round included."""
    assert participant_ids
    for pid in participant_ids:
        lines = (folder / "logs" / f"{pid}.log").read_text().splitlines()
        assert lines, pid
        records = [json.loads(line) for line in lines]  # raises on any non-JSON line
        for record in records:
            assert record["participant"] == pid, (pid, record)
            assert isinstance(record["round"], int), (pid, record)
            assert {"ts", "level", "msg"} <= set(record), (pid, record)
        assert any(r["round"] == rounds for r in records), pid


@pytest.mark.grid
def test_privgrid_run_without_mosquitto_uses_the_embedded_broker(tmp_path):
    """Also the run without ``--out`` (the folder is ``runs/<timestamp>-<scenario>/`` under the
    working directory, a fresh one here so nothing lands in the repository's runs/) and with
    ``--log-format json``."""
    env = {**os.environ, "PATH": path_without_mosquitto()}
    scenario = ROOT / "configs" / "paper-unconstrained.toml"
    proc = subprocess.run(
        [*PRIVGRID, "run", str(scenario), "--privacy", "plain", "--log-format", "json", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "broker: embedded" in proc.stderr
    results = json.loads(proc.stdout)
    assert results["converged"] and results["rounds"] == ROUNDS["paper-unconstrained"]
    assert results["kkt"]["passed"]
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1
    folder = folders[0]
    assert re.fullmatch(r"\d{8}-\d{6}-paper-unconstrained", folder.name), folder.name
    assert f"run folder: runs/{folder.name}" in proc.stderr
    assert json.loads((folder / "results.json").read_text()) == results
    everyone = ["S1", "S2", "S3", "S4", "B1", "B2", "B3", "LM", "MO"]
    assert_json_logs(folder, everyone, ROUNDS["paper-unconstrained"])


def logged_at(log: str, text: str) -> float:
    """Unix time stamp of the first text-format log line containing ``text``."""
    line = next(line for line in log.splitlines() if text in line)
    return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()


@pytest.mark.grid
def test_privgrid_run_names_a_participant_that_never_connects(tmp_path, monkeypatch, capsys):
    """The launcher's wait for every participant is the MO's roll call (``timeouts.start``):
    B3's process starts but never connects, so the run fails within the configured timeout
    (plus a margin for start-up on a loaded machine), the launcher's own output names B3, and
    no process is left behind. Only B3's command is replaced; broker, MO, LM and the other
    agents are the real ones."""
    from privgrid import launcher
    from privgrid.launcher import LaunchOptions, launch

    timeout, margin = 4.0, 10.0
    scenario = tmp_path / "paper.toml"
    scenario.write_text(
        (ROOT / "configs" / "paper.toml").read_text() + f"\n[timeouts]\nstart = {timeout}\n"
    )
    real_command = launcher._command

    def command(members: list[str], *args: Any) -> list[str]:
        if members == ["B3"]:  # alive, silent: it never connects to the broker
            return [sys.executable, "-c", "import time; time.sleep(300)"]
        return real_command(members, *args)

    monkeypatch.setattr(launcher, "_command", command)
    # Processes this test did not start (the docker tests' dockerd, say) are not its business.
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    started = time.time()
    code, folder, results = launch(
        LaunchOptions(scenario, "plain", out=tmp_path / "run", broker_kind="mosquitto")
    )
    elapsed = time.time() - started
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert code == 3, err[-2000:]
    assert "no key announcement from B3 within 4 s" in err, err[-2000:]
    assert results is not None and results["converged"] is False
    assert results["error"] == "no key announcement from B3 within 4 s"
    mo_log = (folder / "logs" / "MO.log").read_text()
    connected = logged_at(mo_log, "connected to mqtt://")
    gave_up = logged_at(mo_log, "no key announcement from B3")
    assert timeout <= gave_up - connected < timeout + 3, gave_up - connected  # the MO's clock
    assert timeout <= gave_up - started < timeout + margin, gave_up - started  # start-up too
    assert elapsed < timeout + margin + 15, elapsed  # results, grace period, stopping everyone
    ours = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
    alive = [c for c in ours if c.is_running()]
    assert [c for c in alive if c.status() != psutil.STATUS_ZOMBIE] == []


@pytest.mark.grid
def test_ctrl_c_stops_every_child(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*PRIVGRID, "run", "configs/ieee118-100.toml", "--privacy", "plain", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    launcher = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    children: list[psutil.Process] = []
    while time.monotonic() < deadline and len(children) < 103:  # broker, LM, MO, 100 agents
        time.sleep(0.5)
        children = launcher.children(recursive=True)
    assert len(children) >= 103, len(children)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: stopping every process" in err
    _, alive = psutil.wait_procs(children, timeout=10)
    assert [c for c in alive if c.status() != psutil.STATUS_ZOMBIE] == []


def test_invalid_scenario_fails_before_anything_starts(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "configs" / "paper.toml").read_text().replace("bus = 9", "bus = 99"))
    proc = subprocess.run(
        [*PRIVGRID, "run", str(bad), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "agents[6] (B3).bus: bus 99 is not in case 'ieee14'" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.grid
def test_agents_per_process_hosts_several_agents_with_the_same_result(tmp_path):
    """--agents-per-process 4: the seven agents live in two OS processes, each agent with its
    own identity, broker account and log file, and the market clears exactly as with one
    process per agent (plain mode is bit-identical to the in-process negotiation)."""
    from privgrid.market.setup import build_setup
    from privgrid.scenario import load_scenario
    from privgrid.solve import solve

    out = tmp_path / "run"
    proc = subprocess.run(
        [
            *PRIVGRID,
            "run",
            "configs/paper.toml",
            "--privacy",
            "plain",
            "--agents-per-process",
            "4",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    reference = solve(build_setup(load_scenario(ROOT / "configs" / "paper.toml")))
    assert results["rounds"] == reference["rounds"] == ROUNDS["paper"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        assert abs(ours["power"] - theirs["power"]) <= 1e-9
        assert abs(ours["price"] - theirs["price"]) <= 1e-9
    pids = {a: int(results["participants"][a]["pid"]) for a in ["S1", "S2", "S3", "S4"]}
    assert len(set(pids.values())) == 1  # S1..S4 share a process
    b_pid = int(results["participants"]["B1"]["pid"])
    assert b_pid not in pids.values() and int(results["participants"]["B3"]["pid"]) == b_pid
    logs = out / "logs"
    for agent in ["S1", "S4", "B2"]:
        lines = (logs / f"{agent}.log").read_text().splitlines()
        assert lines and all(f" {agent} r=" in line for line in lines)
        assert any(f" r={ROUNDS['paper']} " in line for line in lines)
    assert (logs / "agents-S1-S4.log").exists() and (logs / "agents-B1-B3.log").exists()
