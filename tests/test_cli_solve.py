"""``privgrid solve`` as a user runs it: a real subprocess, JSON schema, exit codes, errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rounds import ROUNDS

ROOT = Path(__file__).parent.parent


def privgrid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "privgrid.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.fixture(scope="module")
def paper_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("solve") / "results.json"
    proc = privgrid("solve", "configs/paper.toml", "--json", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), json.loads(out.read_text())


def test_json_has_the_documented_schema(paper_json):
    printed, written = paper_json
    assert printed == written
    for key in (
        "scenario",
        "converged",
        "rounds",
        "social_welfare",
        "optimal_social_welfare",
        "welfare_gap",
        "trades",
        "agents",
        "lines",
        "kkt",
        "timings",
    ):
        assert key in printed, key
    assert printed["scenario"] == "paper" and printed["converged"] is True
    assert printed["rounds"] == ROUNDS["paper"]
    assert abs(printed["welfare_gap"]) <= 1e-4
    assert printed["kkt"] == {"passed": True, "checked": printed["kkt"]["checked"], "failures": []}
    trade = printed["trades"][0]
    assert set(trade) >= {"seller", "buyer", "power", "price", "charge"}
    assert {t["seller"] for t in printed["trades"]} == {"S1", "S2", "S3", "S4"}
    assert all(t["power"] >= 0 for t in printed["trades"])
    assert [a["id"] for a in printed["agents"]] == ["S1", "S2", "S3", "S4", "B1", "B2", "B3"]
    line = next(ln for ln in printed["lines"] if ln["id"] == "2-3")
    assert line["limit"] == 3.0 and line["price_up"] > 2.0
    assert next(ln for ln in printed["lines"] if ln["id"] == "1-2")["limit"] is None
    assert set(printed["timings"]) >= {"negotiation_s", "central_s", "total_s"}


def test_table_output_shows_trades_agents_lines_and_summary():
    proc = privgrid("solve", "configs/paper-unconstrained.toml")
    assert proc.returncode == 0, proc.stderr
    rounds = str(ROUNDS["paper-unconstrained"])
    for text in ("Trades", "Agents", "Line flows", "Summary", "welfare gap", "passed", rounds):
        assert text in proc.stdout
    # IEEE 14 has 20 lines, none limited here: 5 shown, the caption counts the rest.
    assert "15 more lines, none of them limited (|flow| ≤ " in " ".join(proc.stdout.split())


def test_invalid_scenario_exits_2_with_the_field_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "configs" / "paper.toml").read_text().replace("a = 0.05\n", "a = 0\n"))
    proc = privgrid("solve", str(bad))
    assert proc.returncode == 2
    assert f"{bad}: agents[3] (S4).a: must be > 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_not_converging_exits_1(tmp_path):
    short = tmp_path / "short.toml"
    short.write_text((ROOT / "configs" / "paper.toml").read_text() + "max_rounds = 20\n")
    proc = privgrid("solve", str(short), "--json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["converged"] is False and result["rounds"] == 20


def test_out_writes_results_json_into_a_folder(tmp_path):
    proc = privgrid("solve", "configs/paper.toml", "--json", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == json.loads(proc.stdout)


def test_help_describes_the_command():
    proc = privgrid("solve", "--help")
    assert proc.returncode == 0 and "centralised optimum" in proc.stdout
