"""The evaluator apart from the MO (issue 15, item 5): the MO records protocol data only
(``protocol.json``, privgrid/protocol_record.py) and ``privgrid report RUN_DIR``
(privgrid/report.py) makes the results from that record and the scenario.

In process: a whole grid on the in-process bus (tests/test_message_faults.py), its MO's
outcome recorded as a real MO records it, then reported as ``privgrid run`` reports it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner

from privgrid.cli import main
from privgrid.market.setup import build_setup
from privgrid.market.stopping import Residuals
from privgrid.protocol_record import ProtocolRecord, RecordError
from privgrid.report import report_run
from privgrid.results import is_run_only, key_paths
from privgrid.roles.market_operator.node import TraceRow
from privgrid.runfolder import PROTOCOL_FILE, read_trace
from privgrid.solve import solve
from tests.conftest import load_strict_json
from tests.test_message_faults import NODE_SCENARIO, ROOT, Bus, node_scenario


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, ProtocolRecord]:
    """A run folder holding the scenario and the MO's record of a converged bus run."""
    folder = tmp_path_factory.mktemp("run")
    data = tomllib.loads((ROOT / "configs" / "paper.toml").read_text())
    for section, values in NODE_SCENARIO.items():
        data[section] = {**data.get(section, {}), **values}
    (folder / "scenario.toml").write_text(tomli_w.dumps(data))
    bus = Bus(node_scenario())
    bus.run()
    record = ProtocolRecord.of_outcome(
        bus.mo.outcome,
        run="bus-run",
        mode="plain",
        interrupted=False,
        ledger=None,
        mo_stats=bus.mo.stats(),
        now=bus.mo.outcome.finished + 1.0,
        scenario_file=None,
    )
    record.write(folder)
    return folder, record


def test_the_record_is_strict_json_and_reads_back_as_written(recorded):
    folder, record = recorded
    text = (folder / PROTOCOL_FILE).read_text()
    assert "NaN" not in text and "Infinity" not in text
    again = ProtocolRecord.read(folder)
    assert again == record
    assert again.finals["S1"].P == record.finals["S1"].P  # the fixed-point ints themselves
    assert all(isinstance(x, int) for x in json.loads(text)["finals"]["S1"]["P"])


def test_a_residual_that_is_not_finite_is_null_in_the_record_and_infinite_again(tmp_path):
    row = TraceRow(1, Residuals(math.inf, 0.5, 0.25, 0.0), 0.1)
    record = ProtocolRecord("r", "plain", rounds=1, trace=[row])
    record.write(tmp_path)
    assert json.loads((tmp_path / PROTOCOL_FILE).read_text())["trace"][0]["r_P"] is None
    assert ProtocolRecord.read(tmp_path).trace == [row]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["finals"]["S1"].update(P=[0.5]), "finals.S1 is not a final report"),
        (lambda d: d.update(rounds=-1), "rounds is not a count"),
        (lambda d: d.update(version=9), "version 9 is not 1"),
        (lambda d: d["trace"][0].update(elapsed_s="soon"), "trace[0].elapsed_s is not a number"),
        (lambda d: d.update(clocks={"total_s": 1.0}), "clocks.negotiation_s is not a number"),
    ],
)
def test_a_malformed_record_is_refused_naming_the_field(recorded, tmp_path, change, words):
    data = json.loads((recorded[0] / PROTOCOL_FILE).read_text())
    change(data)
    (tmp_path / PROTOCOL_FILE).write_text(json.dumps(data))
    with pytest.raises(RecordError, match=f"{PROTOCOL_FILE}: {words}".replace("[", r"\[")):
        ProtocolRecord.read(tmp_path)


def test_report_makes_the_results_of_the_record_with_the_evaluators_figures(recorded):
    folder, record = recorded
    results = report_run(folder)
    written = load_strict_json(folder / "results.json")
    assert written == json.loads(json.dumps(results))
    reference = solve(build_setup(node_scenario()))
    assert results["status"] == "converged" and results["rounds"] == record.rounds
    assert results["rounds"] == reference["rounds"]
    # The evaluator's part: the optimum from private costs, and the replay's θ and welfare.
    assert results["optimal_social_welfare"] == pytest.approx(reference["optimal_social_welfare"])
    assert results["social_welfare"] == pytest.approx(reference["social_welfare"])
    assert all(a["theta"] is not None for a in results["agents"])
    welfare = [row[-1] for row in _csv(folder / "trace.csv")[1:]]
    assert len(welfare) == record.rounds and all(w != "" for w in welfare)
    # The protocol's part, as the participants reported it.
    assert set(results["participants"]) == {*reference_agents(), "LM", "MO"}
    assert results["participants"]["S1"] == record.finals["S1"].stats
    assert results["kkt"]["passed"] and results["kkt"]["checked"] > 0
    assert [r.round for r in read_trace(folder / "trace.csv")] == [r.round for r in record.trace]
    assert (folder / "plots" / "convergence.png").exists()
    # Every key of `privgrid solve --json`, plus the run's own.
    solve_keys = set(key_paths(reference))
    run_keys = set(key_paths(results))
    assert solve_keys <= run_keys
    assert all(is_run_only(k) for k in run_keys - solve_keys)


def reference_agents() -> list[str]:
    return list(node_scenario().agent_ids)


def _csv(path: Path) -> list[list[str]]:
    import csv

    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_a_failure_record_reports_unjudged_with_nothing_measured(recorded, tmp_path):
    folder, record = recorded
    (tmp_path / "scenario.toml").write_text((folder / "scenario.toml").read_text())
    failed = ProtocolRecord.failed(
        run="r", mode="plain", error="participant MO was killed", trace=record.trace[:5]
    )
    failed.write(tmp_path)
    results = report_run(tmp_path)
    assert (results["status"], results["error"]) == ("failed", "participant MO was killed")
    assert results["optimal_social_welfare"] is None and results["participants"] == {}
    assert results["timings"]["total_s"] is None and results["ledger"] is None
    assert results["timings"]["negotiation_s"] == record.trace[4].elapsed


def test_a_scenario_that_is_not_the_runs_is_refused(recorded, tmp_path):
    folder, _ = recorded
    (tmp_path / PROTOCOL_FILE).write_text((folder / PROTOCOL_FILE).read_text())
    other = ROOT / "configs" / "ieee30-40.toml"
    with pytest.raises(RecordError, match=r"not in this scenario|not the run.s scenario"):
        report_run(tmp_path, other)


def test_the_report_command_names_a_missing_record_and_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path / PROTOCOL_FILE}: cannot read it" in result.output


def test_the_report_command_writes_the_results(recorded):
    folder, _ = recorded
    result = CliRunner().invoke(main, ["report", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "converged"


def test_the_mo_process_loads_no_evaluator():
    """The MO handles protocol data only: neither the evaluator, the QP solver nor the
    plotting library is even imported by its process."""
    code = (
        "import sys, privgrid.roles.market_operator.process\n"
        "bad = [m for m in ('privgrid.report', 'privgrid.plots', 'cvxpy', 'matplotlib',"
        " 'privgrid.market.negotiation') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_record_keeps_the_dropped_pairs_and_violations(recorded, tmp_path):
    _, record = recorded
    changed = replace(
        record,
        dropped=[("S1", "B1")],
        violations=[{"reporter": "S1", "offender": "B1", "reason": "x", "round": 3}],
    )
    changed.write(tmp_path)
    again = ProtocolRecord.read(tmp_path)
    assert again.dropped == [("S1", "B1")] and again.violations == changed.violations
