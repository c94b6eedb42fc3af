"""``privgrid run`` on its bad days, through the real command (issue 14).

Each documented exit status of the real ``privgrid run`` subprocess — 0, 1, 2, 3 and 130 —
with what a user sees: the one-line reason as the last line on stderr (after any tables), no
traceback, and a results.json that a strict JSON parser reads, naming what went wrong
(``status``, ``error``). A participant is killed with SIGKILL once the live ``trace.csv`` shows
the round (the MO appends it round by round; waiting on it is also the test that another
program can follow a live run). Under ``on_missing = "wait"`` the launcher restarts the
killed participant from its checkpoint and the run ends as if nothing happened.
"""

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w

from privgrid.ledger import verify_ledger
from privgrid.market.setup import build_setup
from privgrid.scenario import LM_ID, MO_ID, load_scenario
from privgrid.solve import solve
from tests.conftest import load_strict_json, loads_strict_json

pytestmark = pytest.mark.timeout(400)
ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "configs" / "paper.toml"
PRIVGRID = [sys.executable, "-m", "privgrid.cli"]
MODULES = {LM_ID: "privgrid.roles.line_manager", MO_ID: "privgrid.roles.market_operator"}
#: The MO's progress line in its log (and on the launcher's stderr when it is not a terminal).
PROGRESS = re.compile(r"round \d+: r_P \S+ r_L \S+ r_d \S+ r_C \S+, [\d.]+ s, ETA (\?|~\d+ s)")


def scenario(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """The paper scenario with some values of some sections changed."""
    data = tomllib.loads(PAPER.read_text())
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / "paper.toml"
    path.write_text(tomli_w.dumps(data))
    return path


@dataclass
class Run:
    """A ``privgrid run`` subprocess; its stdout and stderr go to files (never a full pipe)."""

    process: subprocess.Popen
    folder: Path
    out: Path
    err: Path

    @classmethod
    def start(cls, tmp_path: Path, scenario_path: Path, *args: str) -> "Run":
        folder = tmp_path / "run"
        out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        command = [*PRIVGRID, "run", str(scenario_path), "--privacy", "plain"]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [*command, "--out", str(folder), *args],
                stdout=stdout,
                stderr=stderr,
                cwd=ROOT,
            )
        return cls(process, folder, out, err)

    def wait_for_round(self, round_: int, timeout: float = 240) -> None:
        """Until the live trace.csv has ``round_`` rows, while the run is still going."""
        trace = self.folder / "trace.csv"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the run ended first: {self.stderr()[-2000:]}"
            rows = trace.read_text().splitlines()[1:] if trace.exists() else []
            if len(rows) >= round_:
                assert int(rows[round_ - 1].split(",")[0]) == round_  # one row per round
                return
            time.sleep(0.05)
        raise AssertionError(f"round {round_} not in trace.csv within {timeout} s")

    def child(self, participant: str) -> psutil.Process:
        module = MODULES.get(participant, "privgrid.roles.agent")
        for child in psutil.Process(self.process.pid).children(recursive=True):
            cmdline = child.cmdline()
            if module in cmdline and (module != "privgrid.roles.agent" or participant in cmdline):
                return child
        raise AssertionError(f"no process of {participant}")

    def kill(self, participant: str) -> None:
        os.killpg(self.child(participant).pid, signal.SIGKILL)

    def finish(self, timeout: float = 300) -> int:
        return self.process.wait(timeout)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def last_line(self) -> str:
        return self.stderr().rstrip("\n").splitlines()[-1]

    def results(self) -> dict[str, Any]:
        return load_strict_json(self.folder / "results.json")

    def log(self, participant: str) -> str:
        return (self.folder / "logs" / f"{participant}.log").read_text(errors="replace")


@pytest.fixture
def no_process_left_behind():
    """Every process a test's run started has ended when the test ends (zombies aside)."""
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    yield
    ours = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
    _, alive = psutil.wait_procs(ours, timeout=10)
    assert [c for c in alive if c.status() != psutil.STATUS_ZOMBIE] == []


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return solve(build_setup(load_scenario(PAPER)))


# -- exit 1 ----------------------------------------------------------------------------------------
@pytest.mark.grid
def test_exit_1_a_run_that_reaches_the_round_limit_says_so_last_after_the_tables(
    tmp_path, no_process_left_behind
):
    run = Run.start(tmp_path, scenario(tmp_path, market={"max_rounds": 5}))
    assert run.finish() == 1, run.stderr()[-3000:]
    assert run.last_line() == "privgrid: run not converged: round limit 5 reached (exit 1)"
    assert "Traceback" not in run.stderr()
    assert "Summary: paper (plain)" in run.stdout() and "NOT CONVERGED" in run.stdout()
    results = run.results()
    assert results["status"] == "not_converged" and results["error"] is None
    assert results["rounds"] == 5 and results["social_welfare"] is not None


# -- exit 2 ----------------------------------------------------------------------------------------
def test_exit_2_invalid_input_ends_with_the_reason_and_json_output_stays_one_object(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(PAPER.read_text().replace("bus = 9", "bus = 99"))
    proc = subprocess.run(
        [*PRIVGRID, "run", str(bad), "--out", str(tmp_path / "run"), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("privgrid: error: ") and "(B3).bus: bus 99 is not in" in last
    printed = loads_strict_json(proc.stdout)  # exactly one object
    assert printed["status"] == "invalid_input" and "bus 99" in printed["error"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


# -- exit 3 ----------------------------------------------------------------------------------------
@pytest.mark.grid
@pytest.mark.parametrize("victim", ["S3", LM_ID, MO_ID])
def test_exit_3_a_participant_killed_mid_run_fails_the_run_naming_it(
    tmp_path, victim, no_process_left_behind
):
    """Default ``on_missing = "abort"``: SIGKILL at round 10. The MO names a dead agent or LM
    (its last will); a dead MO is named by the launcher, which then writes results.json."""
    run = Run.start(tmp_path, PAPER, "--json")
    run.wait_for_round(10)
    run.kill(victim)
    assert run.finish() == 3, run.stderr()[-3000:]
    stderr = run.stderr()
    assert "Traceback" not in stderr
    results = run.results()
    printed = loads_strict_json(run.stdout())  # stdout is exactly results.json
    assert printed == results
    assert results["status"] == "failed" and results["converged"] is False
    if victim == MO_ID:
        expected = r"participant MO was killed by SIGKILL during round \d+"
    else:
        expected = rf"participant {victim} left the run during round \d+"
    assert re.fullmatch(expected, results["error"]), results["error"]
    assert run.last_line() == f"privgrid: run failed: {results['error']} (exit 3)"
    report = verify_ledger(run.folder / "ledger.sqlite")
    assert report.ok and report.blocks == 1, report.summary()  # the genesis block only
    assert (run.folder / "plots" / "convergence.png").exists()


@pytest.mark.grid
def test_exit_3_an_agent_that_stops_answering_times_the_round_out_naming_it(
    tmp_path, no_process_left_behind
):
    """SIGSTOP: S3's process stays connected but silent, so no last will: the MO's round
    timeout names it, with whoever waits for it in that round and cannot report either
    (its buyers for their prices; everyone, when S3 stopped before its masked flow share
    reached the LM, which prices no line without every share); everyone else's final report
    still comes in; S3 is killed at the end."""
    run = Run.start(tmp_path, scenario(tmp_path, timeouts={"round": 5.0}))
    run.wait_for_round(10)
    os.killpg(run.child("S3").pid, signal.SIGSTOP)
    assert run.finish() == 3, run.stderr()[-3000:]
    assert "Traceback" not in run.stderr()
    results = run.results()
    expected = r"round \d+ did not complete within 5 s; no residuals from (\w+(?:, \w+)*)"
    named = re.fullmatch(expected, results["error"])
    assert results["status"] == "failed" and named, results["error"]
    names = named.group(1).split(", ")  # in the scenario's order: S3 is not always first
    assert "S3" in names, results["error"]
    assert set(names) <= {"S3", "S1", "S2", "S4", "B1", "B2", "B3", "LM"}
    assert run.last_line() == f"privgrid: run failed: {results['error']} (exit 3)"
    assert set(results["participants"]) == {"S1", "S2", "S4", "B1", "B2", "B3", "LM", "MO"}


# -- exit 130 --------------------------------------------------------------------------------------
@pytest.mark.grid
def test_exit_130_ctrl_c_mid_run_stops_everything_and_leaves_interrupted_results(
    tmp_path, no_process_left_behind
):
    run = Run.start(tmp_path, PAPER)
    run.wait_for_round(10)
    run.process.send_signal(signal.SIGINT)
    assert run.finish(timeout=120) == 130, run.stderr()[-3000:]
    assert "interrupted: stopping every process" in run.stderr()
    assert "Traceback" not in run.stderr()
    results = run.results()
    assert results["status"] == "interrupted"
    assert re.fullmatch(r"the MO was stopped by a signal during round \d+", results["error"])
    assert results["rounds"] >= 10
    assert run.last_line() == f"privgrid: run interrupted: {results['error']} (exit 130)"


# -- exit 0 after a crash: restarts under on_missing = "wait" (item 6) --------------------------
@pytest.mark.grid
@pytest.mark.parametrize("victim", ["S1", LM_ID, MO_ID])
def test_a_participant_killed_under_wait_is_restarted_by_privgrid_run_and_the_result_is_unchanged(
    tmp_path, reference, victim, no_process_left_behind
):
    run = Run.start(tmp_path, scenario(tmp_path, timeouts={"on_missing": "wait"}))
    run.wait_for_round(25)
    run.kill(victim)
    assert run.finish() == 0, run.stderr()[-3000:]
    stderr = run.stderr()
    assert "Traceback" not in stderr
    assert run.last_line() == f"run folder: {run.folder}"
    note = f"{victim} was killed by SIGKILL during round "
    assert note in stderr and "restarting it from its checkpoint (restart 1 of 3)" in stderr
    log = run.log(victim)
    assert f"launcher: {note}" in log and "resuming from checkpoint" in log
    results = run.results()
    assert results["status"] == "converged" and results["error"] is None
    assert results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        assert (ours["seller"], ours["buyer"]) == (theirs["seller"], theirs["buyer"])
        for key in ("power", "price", "charge"):
            assert abs(ours[key] - theirs[key]) <= 1e-6, (key, ours, theirs)
    assert results["kkt"]["passed"] and results["ledger"]["committed"]
    report = verify_ledger(run.folder / "ledger.sqlite")
    assert report.ok and report.blocks == 2, report.summary()
    # Item 7: progress lines in the MO's log and, with no terminal, on the launcher's stderr.
    assert PROGRESS.search(run.log(MO_ID)) and PROGRESS.search(stderr)
    if victim == "S1":
        # Item 9: S1's counters cover both incarnations: S2 trades with the same partners, so
        # their traffic differs only by what S1 redid or lost around the crash (a round or so).
        stats = results["participants"]
        per_round = stats["S2"]["sent"] / results["rounds"]
        assert stats["S1"]["restarts"] == 1 and stats["S2"]["restarts"] == 0
        assert abs(stats["S1"]["sent"] - stats["S2"]["sent"]) <= 2 * per_round, stats
        assert not re.search(r" WARNING .*no key announcement", log)



def _first_commit_after_now(state: Path, agents: list[str], timeout: float = 120) -> None:
    """Until one of ``agents`` rewrites its checkpoint (it completed a round): an agent's
    process commits its agents one after the other, so right then some of them are a round
    ahead of their partners."""
    files = [state / f"{a}.state" for a in agents]
    before = [f.stat().st_mtime_ns for f in files]
    deadline = time.monotonic() + timeout
    while [f.stat().st_mtime_ns for f in files] == before:
        assert time.monotonic() < deadline, "no agent completed a round"
        time.sleep(0.0005)


def _resumed_rounds(run: Run, agents: list[str], incarnation: int) -> dict[str, int]:
    """Each agent's last completed round as its ``incarnation``-th restart resumed from it."""
    line = re.compile(rf"incarnation {incarnation}, last completed round (\d+)")
    deadline = time.monotonic() + 120
    while True:
        found = {a: line.search(run.log(a)) for a in agents}
        if all(found.values()):
            return {a: int(m.group(1)) for a, m in found.items() if m}
        assert time.monotonic() < deadline, f"not every agent resumed: {found}"
        time.sleep(0.05)


@pytest.mark.grid
def test_partners_killed_together_resume_a_round_apart_and_the_result_is_unchanged(
    tmp_path, reference, no_process_left_behind
):
    """Issue 17: all seven agents in one process (``--agents-per-process 7``), killed with
    SIGKILL the moment one of them completes a round, so that partners resume from
    checkpoints a round apart (S1 completed round r, its buyer B3 only r − 1). Before the
    fix the one behind waited forever for partners that had moved on (round timeout, exit 3).
    Killed again (up to three times, as ``--restarts`` allows) until that happened once;
    then the run must end as ``privgrid solve`` does."""
    agents = load_scenario(PAPER).agent_ids
    run = Run.start(
        tmp_path, scenario(tmp_path, timeouts={"on_missing": "wait"}), "--agents-per-process", "7"
    )
    state = run.folder / "state" / "run"
    apart: dict[str, int] = {}
    for incarnation, at_round in enumerate((10, 25, 40), start=1):
        run.wait_for_round(at_round)
        _first_commit_after_now(state, agents)
        run.kill(agents[0])  # the process of every agent
        rounds = _resumed_rounds(run, agents, incarnation)
        if len(set(rounds.values())) > 1:
            apart = rounds
            break
    assert apart, "the agents never resumed a round apart"
    assert run.finish() == 0, run.stderr()[-3000:]
    assert "Traceback" not in run.stderr()
    results = run.results()
    assert results["status"] == "converged" and results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        assert (ours["seller"], ours["buyer"]) == (theirs["seller"], theirs["buyer"])
        for key in ("power", "price", "charge"):
            assert abs(ours[key] - theirs[key]) <= 1e-6, (key, ours, theirs)
    assert results["kkt"]["passed"] and results["ledger"]["committed"]
    behind = min(apart.values())
    assert any(f"redoing round {behind + 1}" in run.log(a) for a in agents), apart


# -- item 2: every violation is kept ----------------------------------------------------------
def test_every_violation_reported_in_a_run_is_kept_not_only_the_first(bus_factory):
    """Three colluding buyers send free shares: S1's pair checks catch all three in the same
    round, and results.json lists the three reports (it kept only the first, and the MO took
    the second for a replay by S1). On the in-process bus (tests/bus.py): the reports go
    through the real channel, which is where a second report once looked like a replay."""
    grid = bus_factory(
        ROOT / "configs" / "collusion.toml", privacy={"mode": "plain"}, attack={"shares": "free"}
    )
    assert grid.run(timeout=240) == 3, grid.log(MO_ID)[-2000:]
    results = grid.results()
    assert results["status"] == "failed"
    reports = [(v["reporter"], v["offender"]) for v in results["violations"]]
    assert sorted(reports) == [("S1", "B1"), ("S1", "B2"), ("S1", "B3")], reports
    assert results["error"].startswith("protocol violation by B")
