"""A day on a feeder, in process (``privgrid solve DAY.toml --out DIR``): the run folder's
contract, the targets, warm start, the ledger, congestion and bad input through the CLI.

Days here are a few intervals of configs/day-rural1.toml (and its congested variant) so the
module stays quick; benchmarks/day.py runs whole days. SimBench grids come from the on-disk
cache (the first run on a machine converts them: seconds).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from privgrid.feeder.day import GAP_TARGET, OVERLOAD_TARGET_KW, prepare_day, run_day
from privgrid.feeder.feeder import step_of
from privgrid.feeder.simbench import load_source

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # every test clears a day (or starts doing so) in a subprocess
CONFIGS = ROOT / "configs"
INTERVALS = 4
PLOTS = ("prices.png", "energy.png", "loading.png", "rounds.png", "map.png")


def privgrid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "privgrid.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def day_file(tmp_path: Path, config: str = "day-rural1.toml", **day: Any) -> Path:
    data = tomllib.loads((CONFIGS / config).read_text())
    data["day"].update(day)
    path = tmp_path / "day.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def strict_json(path: Path) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{path}: {name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def day_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Late morning of day-rural1, warm-started, cold rounds measured too."""
    tmp = tmp_path_factory.mktemp("day")
    path = day_file(tmp, start="2016-06-21T11:00", intervals=INTERVALS, measure_cold=True)
    out = tmp / "run"
    return out, privgrid("solve", str(path), "--out", str(out))


def test_the_day_clears_every_interval_and_exits_0(day_run):
    out, proc = day_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("interval ") >= INTERVALS
    assert f"run folder: {out}" in proc.stderr


def test_the_run_folder_has_every_file_of_the_contract(day_run):
    out, _ = day_run
    for name in ("grid.m", "feeder.json", "day.json", "day.csv", "ledger.sqlite"):
        assert (out / name).is_file(), name
    assert (out / "keys" / "roster.json").is_file()
    for plot in PLOTS:
        assert (out / "plots" / plot).stat().st_size > 0, plot
    folders = sorted(p.name for p in (out / "intervals").iterdir())
    assert folders == [f"{i:04d}" for i in range(1, INTERVALS + 1)]
    for folder in folders:
        assert (out / "intervals" / folder / "scenario.toml").is_file()
        strict_json(out / "intervals" / folder / "results.json")
    with (out / "day.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == INTERVALS
    assert [r["start"] for r in rows] == [
        "2016-06-21T11:00",
        "2016-06-21T11:15",
        "2016-06-21T11:30",
        "2016-06-21T11:45",
    ]


def test_day_json_names_each_agents_bus_and_simbench_elements(day_run):
    out, _ = day_run
    day = strict_json(out / "day.json")
    feeder = load_source("1-LV-rural1--2-sw").feeder
    homes = [a for a in day["agents"] if a["kind"] == "household"]
    assert len(homes) == len(feeder.loads) == 28
    assert sorted(n for a in homes for n in a["elements"]["loads"]) == sorted(
        e.name for e in feeder.loads
    )
    assert {n for a in homes for n in a["elements"]["pv"]} == {e.name for e in feeder.sgens}
    assert {n for a in homes for n in a["elements"]["storage"]} == {e.name for e in feeder.storages}
    for a in homes:
        (load,) = a["elements"]["loads"]
        assert feeder.bus(a["bus"]).number == next(e.bus for e in feeder.loads if e.name == load)
    assert {a["id"] for a in day["agents"] if a["kind"] == "grid-supply"} == {"RETAIL", "FEEDIN"}


def test_each_households_load_and_pv_are_the_profiles_of_the_interval(day_run):
    out, _ = day_run
    day = strict_json(out / "day.json")
    source = load_source("1-LV-rural1--2-sw")
    first = day["per_interval"][0]
    row = step_of(__import__("datetime").datetime(2016, 6, 21, 11, 0))
    for a in (a for a in day["agents"] if a["kind"] == "household"):
        i = next(k for k, e in enumerate(source.feeder.loads) if e.name in a["elements"]["loads"])
        assert first["households"][a["id"]]["load_kw"] == pytest.approx(source.year.load_kw[row, i])
    total_pv = sum(h["pv_kw"] for h in first["households"].values())
    assert total_pv == pytest.approx(source.year.sgen_kw[row].sum())  # split, nothing lost


def test_every_interval_is_within_the_targets_and_warm_starts_save_rounds(day_run):
    out, _ = day_run
    day = strict_json(out / "day.json")
    for row in day["per_interval"]:
        assert row["converged"] and row["kkt_passed"]
        assert abs(row["welfare_gap"]) <= GAP_TARGET
        assert row["max_overload_kw"] <= OVERLOAD_TARGET_KW
        assert row["ac"]["converged"]
    warm = [r for r in day["per_interval"] if r["warm"]]
    assert len(warm) == INTERVALS - 1
    assert all(r["rounds"] < r["cold_rounds"] for r in warm)
    assert day["summary"]["warm_over_cold"] < 1


def test_each_interval_scenario_solves_on_its_own_to_its_results(day_run):
    """``privgrid solve intervals/NNNN/scenario.toml`` accepts the file as it is. Interval 1
    was cleared cold: identical results but for the timings. The warm-started ones reach the
    same optimum as a cold start: the same optimal welfare, both within the welfare target, and
    every agent's total within 0.1 kW of the centralised optimum's (the stopping test bounds
    residuals, not distances: the nearly flat grid agents' totals move most, by about
    ε_λ / curvature)."""
    out, _ = day_run
    for i in range(1, INTERVALS + 1):
        folder = out / "intervals" / f"{i:04d}"
        proc = privgrid("solve", str(folder / "scenario.toml"), "--json")
        assert proc.returncode == 0, proc.stderr
        again = json.loads(proc.stdout)
        stored = strict_json(folder / "results.json")
        again.pop("timings"), stored.pop("timings")
        if i == 1:
            assert again == stored
            continue
        assert again["optimal_social_welfare"] == pytest.approx(stored["optimal_social_welfare"])
        for results in (again, stored):
            assert abs(results["welfare_gap"]) <= GAP_TARGET
            for agent in results["agents"]:
                assert agent["total"] == pytest.approx(agent["optimal_total"], abs=0.1)


def test_the_ledger_has_one_verified_block_per_interval(day_run):
    out, _ = day_run
    proc = privgrid("ledger", "verify", str(out / "ledger.sqlite"), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["head_height"] == INTERVALS
    day = strict_json(out / "day.json")
    assert [r["ledger"]["height"] for r in day["per_interval"]] == list(range(1, INTERVALS + 1))


def test_scaled_ratings_congest_the_transformer_and_still_clear_to_the_optimum(tmp_path):
    prepared = prepare_day(
        day_file(tmp_path, "day-rural1-congested.toml", start="2016-06-21T12:00", intervals=2)
    )
    day = run_day(prepared, tmp_path / "run", plots=False)
    for row in day["per_interval"]:
        assert row["converged"] and abs(row["welfare_gap"]) <= GAP_TARGET
        assert row["max_overload_kw"] <= OVERLOAD_TARGET_KW
        assert row["max_loading_pct"] == pytest.approx(100.0, abs=1e-2)
        assert row["congestion_rent"] > 0
    results = strict_json(tmp_path / "run" / "intervals" / "0001" / "results.json")
    priced = [ln for ln in results["lines"] if ln["price_up"] + ln["price_down"] > 0]
    assert [ln["id"] for ln in priced] == ["1-5"]  # the transformer, 20 kV bus 1 to bus 5
    assert priced[0]["limit"] == pytest.approx(0.55 * 160.0)


def test_the_larger_feeder_clears_an_interval_within_the_targets(tmp_path):
    prepared = prepare_day(
        day_file(tmp_path, "day-semiurb4.toml", start="2016-06-21T06:00", intervals=1)
    )
    assert len(prepared.homes) == 58
    day = run_day(prepared, tmp_path / "run", plots=False)
    (row,) = day["per_interval"]
    assert row["converged"] and abs(row["welfare_gap"]) <= GAP_TARGET
    assert row["max_overload_kw"] <= OVERLOAD_TARGET_KW


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            {"network": {"case": "simbench:1-LV-nowhere--2-sw"}},
            "network.case: unknown SimBench code '1-LV-nowhere--2-sw'",
        ),
        ({"day": {"start": "2017-01-01T00:00"}}, "day.start: must lie in the profile year, "),
        (
            {"day": {"start": "2016-12-31T12:00", "intervals": 96}},
            "day.intervals: must be in 1 … 48",
        ),
        (
            {"households": {"connection_kw": 5.0}},
            "households: household H25 (bus 6) in interval 0023 (2016-06-21T05:30)",
        ),
        (
            {"day": {"pause_s": 90.0}},
            "day.pause_s: must be shorter than timeouts.round + timeouts.finish (90 s)",
        ),
    ],
    ids=[
        "unknown-code",
        "start-outside-year",
        "intervals-past-end",
        "household-outside-bounds",
        "pause-past-the-silence",
    ],
)
def test_bad_input_exits_2_naming_the_field_and_writes_nothing(tmp_path, edit, expected):
    data = tomllib.loads((CONFIGS / "day-rural1.toml").read_text())
    for section, values in edit.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    proc = privgrid("solve", str(path), "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"privgrid: error: {path}: {expected}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    if "unknown-code" in expected:
        assert "1-LV-rural1--2-sw, " in proc.stderr  # the valid codes are listed


def test_privgrid_run_of_a_bad_day_exits_2_naming_the_field_before_anything_starts(tmp_path):
    """``privgrid run DAY.toml`` (a day over the wire, tests/test_grid_day.py) checks the day
    as ``privgrid solve`` does before any process starts."""
    data = tomllib.loads((CONFIGS / "day-rural1.toml").read_text())
    data["day"].update(start="2016-12-31T12:00", intervals=96)
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    proc = privgrid("run", str(path), "--out", str(out), "--json")
    assert proc.returncode == 2
    assert f"privgrid: error: {path}: day.intervals: must be in 1 … 48" in proc.stderr
    assert json.loads(proc.stdout)["status"] == "invalid_input"
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_a_role_process_given_a_day_says_how_to_clear_it(tmp_path):
    day = str(CONFIGS / "day-rural1.toml")
    proc = subprocess.run(
        [sys.executable, "-m", "privgrid.roles.line_manager", "--scenario", day, "--keys", "k"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "`privgrid run FILE` (over the wire)" in proc.stderr


def test_an_interval_that_cannot_clear_is_named_before_anything_is_cleared(tmp_path):
    """Ratings scaled to 1 %: the evening's imports cannot cross the transformer. The error
    names the interval and the feasibility check's reason; the run folder is removed."""
    from privgrid.scenario import ScenarioError

    path = day_file(tmp_path, rating_scale=0.01, start="2016-06-21T19:00", intervals=2)
    prepared = prepare_day(path)
    with pytest.raises(ScenarioError) as info:
        run_day(prepared, tmp_path / "run", plots=False)
    assert f"{path}: day: interval 0001 (2016-06-21T19:00) cannot clear: " in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_day_refuses_the_single_results_file_option(tmp_path):
    proc = privgrid("solve", str(CONFIGS / "day-rural1.toml"), "-o", str(tmp_path / "r.json"))
    assert proc.returncode == 2
    assert "-o/--output: a day writes a run folder; use --out DIR" in proc.stderr
