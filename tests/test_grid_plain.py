"""A whole grid over a real Mosquitto, plain mode: identical to the in-process negotiation."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from privgrid.keys import participants
from privgrid.market.setup import TradeGraph, build_setup
from privgrid.results import is_run_only, key_paths
from privgrid.scenario import LM_ID, MO_ID
from privgrid.solve import solve
from tests.grid_harness import make_grid

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def reference():
    from privgrid.scenario import load_scenario

    root = Path(__file__).resolve().parent.parent
    return solve(build_setup(load_scenario(root / "configs" / "paper.toml")))


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    root = Path(__file__).resolve().parent.parent
    grid = make_grid(
        tmp_path_factory.mktemp("plain"), root / "configs" / "paper.toml", privacy={"mode": "plain"}
    )
    try:
        grid.start_all()
        code = grid.wait(MO_ID, timeout=240)
        for pid in participants(grid.scenario):
            grid.wait(pid, timeout=30)
        grid.report()  # as `privgrid run` does once every process has exited
        yield grid, code
    finally:
        grid.stop()


@pytest.mark.grid
def test_plain_run_equals_the_in_process_negotiation(plain_run, reference):
    grid, code = plain_run
    assert code == 0, grid.log(MO_ID)[-2000:]
    results = grid.results()
    assert results["converged"] and results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        assert (ours["seller"], ours["buyer"]) == (theirs["seller"], theirs["buyer"])
        for key in ("power", "price", "charge"):
            assert abs(ours[key] - theirs[key]) <= 1e-9, (ours, theirs)
    for ours, theirs in zip(results["lines"], reference["lines"], strict=True):
        assert abs(ours["flow"] - theirs["flow"]) <= 1e-9
        assert abs(ours["price_up"] - theirs["price_up"]) <= 1e-9
    gap = abs(results["social_welfare"] - results["optimal_social_welfare"])
    assert gap <= 1e-4 * abs(results["optimal_social_welfare"])
    assert results["kkt"]["passed"], results["kkt"]["failures"][:3]
    assert results["mode"] == "plain" and results["messages"]["rejected"] == 0


@pytest.mark.grid
def test_every_participant_is_its_own_process(plain_run):
    grid, _ = plain_run
    reported = {pid: int(s["pid"]) for pid, s in grid.results()["participants"].items()}
    started = {pid: p.pid for pid, p in grid.processes.items()}
    assert reported == started  # each report comes from the process we started for it
    assert len(set(reported.values())) == len(participants(grid.scenario))
    assert os.getpid() not in reported.values()


@pytest.mark.grid
def test_the_broker_is_the_only_channel(plain_run):
    """No coordination through files: each process got only the scenario, its own key and the
    roster; nothing else was written into the run folder by the participants but the MO's
    record and ledger, the logs (and the broker's own state), and then the report of the
    MO's record."""
    grid, _ = plain_run
    written = {p.relative_to(grid.folder).parts[0] for p in grid.folder.rglob("*") if p.is_file()}
    assert written == {
        "scenario.toml",
        "secrets",
        "broker",
        "logs",
        "protocol.json",
        "results.json",
        "trace.csv",
        "plots",
        "ledger.sqlite",
    }


@pytest.mark.grid
def test_logs_have_participant_and_round_on_every_line(plain_run):
    grid, _ = plain_run
    pattern = re.compile(r"^\S+Z (\S+) r=(\d+) (INFO|WARNING|ERROR|DEBUG) ")
    for pid in participants(grid.scenario):
        lines = grid.log(pid).splitlines()
        assert lines, pid
        for line in lines:
            match = pattern.match(line)
            assert match and match.group(1) == pid, line
        assert any(f"r={grid.results()['rounds']} " in line for line in lines)


@pytest.mark.grid
def test_run_folder_has_trace_and_plots(plain_run):
    grid, _ = plain_run
    results = grid.results()
    with (grid.folder / "trace.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == results["rounds"]
    assert [int(r["round"]) for r in rows] == list(range(1, results["rounds"] + 1))
    assert float(rows[-1]["r_P"]) <= 1e-4 and rows[-1]["welfare"] != ""
    assert abs(float(rows[-1]["welfare"]) - results["social_welfare"]) < 1e-12
    for name in ("convergence.png", "trades.png"):
        assert (grid.folder / "plots" / name).stat().st_size > 10_000
    # A plain round of paper.toml: the MO's round, 12 pairs × 2 shares, 7 × (trades, charges,
    # residuals), the LM's residuals = 47; the end (finals, block, votes) adds a little.
    assert 47 <= results["messages"]["per_round"] < 50
    assert set(results["timings"]) >= {"negotiation_s", "per_round_s", "crypto_s", "wait_s"}


@pytest.mark.grid
def test_a_sparse_market_reads_only_its_partners_announcements(tmp_path):
    """With few partners, an agent subscribes to the announcements and broadcasts of its peers
    only (at 500 agents the wildcards cost 250,000 checked messages at start); the result is
    still the in-process negotiation's."""
    root = Path(__file__).resolve().parent.parent
    grid = make_grid(
        tmp_path,
        root / "configs" / "paper.toml",
        privacy={"mode": "plain", "lm_leg": "sealed"},  # masked pairs every agent with all
        market={"pairs": {"nearest": 1}},
    )
    try:
        grid.start_all()
        assert grid.wait(MO_ID, timeout=240) == 0, grid.log(MO_ID)[-2000:]
        for pid in participants(grid.scenario):
            grid.wait(pid, timeout=30)
    finally:
        grid.stop()
    reference = solve(build_setup(grid.scenario))
    results = grid.results()
    assert results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        assert abs(ours["power"] - theirs["power"]) <= 1e-9, (ours, theirs)
    graph = TradeGraph.from_scenario(grid.scenario)
    everyone = set(participants(grid.scenario))
    narrowed = 0
    for agent in grid.scenario.agents:
        heard = set(re.findall(r"accepted the key announcement of (\S+)", grid.log(agent.id)))
        peers = {*graph.partners_of(graph.index(agent.id)), LM_ID, MO_ID}
        # Wildcards still serve an agent that listens to half of the others or more.
        few = 2 * len(peers) < len(everyone) - 1
        assert heard == (peers if few else everyone - {agent.id}), agent.id
        narrowed += few
    assert narrowed >= 4  # most agents heard only their peers
    # The MO and LM talk to everyone, so they read every announcement.
    assert (
        len(re.findall("accepted the key announcement", grid.log(MO_ID)))
        == len(grid.scenario.agents) + 1
    )


def test_role_processes_reject_bad_input_clearly(tmp_path):
    """A wrong id or a missing roster: exit status 2 with the reason, before connecting."""
    root = Path(__file__).resolve().parent.parent
    base = [sys.executable, "-m", "agents", "--scenario", str(root / "configs/paper.toml")]
    proc = subprocess.run(
        [*base, "--id", "Z9", "--keys", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "no agent with id 'Z9'" in proc.stderr
    proc = subprocess.run(
        [*base, "--id", "S1", "--keys", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "cannot read roster" in proc.stderr
    proc = subprocess.run(
        [*base, "--id", "S1", "--broker", "http://x"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "must start with mqtt://" in proc.stderr


@pytest.mark.grid
def test_results_json_is_valid_json_with_the_solve_schema(plain_run, reference):
    grid, _ = plain_run
    results = json.loads((grid.folder / "results.json").read_text())  # strict: no NaN
    ours, theirs = set(key_paths(results)), set(key_paths(reference))  # nested, list items too
    assert "agents[].theta" in theirs and sorted(theirs - ours) == []
    assert sorted(p for p in ours - theirs if not is_run_only(p)) == []
