"""``privgrid experiment perturbation``: I6 over many sessions in one process, and that it
reports what the wire experiment would.

The command runs through the real CLI on 50 sessions per level; its statistics are recomputed
here from the per-session values it writes; its first five sessions are the wire experiment's
five (docs/privacy.md's collusion table). Two sessions also run for real (Mosquitto, every
process, the probe attack) and give the estimates and welfare loss their in-process draws say:
one where the coalition recovers the played (a, b), one where its plateau rule misfires.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from privgrid.attack.perturbation import Session, group_medians, spread, summary
from privgrid.attack.perturbation import sessions as draw_sessions
from privgrid.experiment import I6_LEVELS, PERTURBATION_ROWS, WIRE_SESSIONS
from privgrid.keys import participants
from privgrid.scenario import MO_ID

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parent.parent
COLLUSION = ROOT / "configs" / "collusion.toml"
PRIVGRID = [sys.executable, "-m", "privgrid.cli"]
DRAWS = 50
#: docs/privacy.md's collusion table, I6 rows (5 wire sessions, seeds 7–11): b error, welfare
#: loss vs optimum, each rounded to two significant digits as the table prints them.
WIRE_TABLE = {"i6-low": (0.15, 0.0015), "i6-high": (0.45, 0.012)}


# --- the statistics ----------------------------------------------------------------------------
def test_the_spread_is_the_median_quartiles_and_5_to_95_range_of_the_values_present():
    s = spread([1.0, None, 2.0, 3.0, 4.0, 100.0])  # None: a session without an estimate
    assert s is not None and s.n == 5
    assert (s.median, s.q25, s.q75) == (3.0, 2.0, 4.0)
    # Linear interpolation between order statistics: rank 0.05·4 = 0.2 and 0.95·4 = 3.8.
    assert s.p5 == pytest.approx(1.2) and s.p95 == pytest.approx(80.8)
    assert spread([None, None]) is None


def session(index: int, b_error: float | None, welfare_loss: float) -> Session:
    errors = {"a": 0.1, "b": b_error, "pmax": 0.01, "pmin": 0.2}
    played = {"a": 0.1, "b": abs(b_error or 0.5), "pmax": 0.01, "pmin": 0.2}
    return Session(index, 7 + index, {}, {}, errors, played, welfare_loss, 100, True)


def test_the_summary_reports_every_session_and_the_first_five_apart():
    drawn = [session(i, None if i == 1 else float(i), 0.001 * i) for i in range(11)]
    out = summary(drawn, first=5)
    b = out["b_error"]
    assert b["all"]["n"] == 10 and b["all"]["median"] == pytest.approx(5.5)
    assert b["first"]["n"] == 4 and b["first"]["median"] == pytest.approx(2.5)  # 0, 2, 3, 4
    # Medians of disjoint groups of five: [0, 2, 3, 4] → 2.5 and [5 … 9] → 7; the tenth is
    # an incomplete group, left out.
    assert group_medians([s.errors["b"] for s in drawn], 5) == [2.5, 7.0]
    assert b["medians_of_first"]["n"] == 2
    assert b["medians_of_first"]["median"] == pytest.approx(4.75)
    assert out["played_b_error"]["all"]["n"] == 11  # the played value exists in every session
    assert out["welfare_loss"]["first"]["median"] == pytest.approx(0.002)
    assert set(out) == {key for key, _ in PERTURBATION_ROWS} | {
        "played_a_error",
        "played_pmax_error",
        "played_pmin_error",
    }


# --- the command -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def command(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("perturbation") / "out"
    args = ["perturbation", str(COLLUSION), "--draws", str(DRAWS), "--out", str(out)]
    proc = subprocess.run(
        [*PRIVGRID, "experiment", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_the_command_writes_per_session_values_and_their_statistics(command):
    out, printed = command
    levels = json.loads((out / "perturbation.json").read_text())
    assert [level["variant"] for level in levels] == list(I6_LEVELS)
    for level in levels:
        drawn = level["sessions"]
        assert [s["seed"] for s in drawn] == list(range(7, 7 + DRAWS))  # scenario seed 7 + i
        assert level["noise"] == I6_LEVELS[level["variant"]]
        # Each statistic is what numpy computes from the session values the file holds.
        for key, values in {
            "b_error": [s["errors"]["b"] for s in drawn],
            "welfare_loss": [s["welfare_loss"] for s in drawn],
        }.items():
            present = [v for v in values if v is not None]
            every = level["summary"][key]["all"]
            assert every["n"] == len(present)
            p5, q25, median, q75, p95 = np.percentile(present, [5, 25, 50, 75, 95])
            assert [every[k] for k in ("p5", "q25", "median", "q75", "p95")] == pytest.approx(
                [p5, q25, median, q75, p95], rel=1e-12
            )
            first = [v for v in values[:WIRE_SESSIONS] if v is not None]
            assert level["summary"][key]["first"]["median"] == pytest.approx(np.median(first))
            groups = [
                np.median([v for v in values[i : i + WIRE_SESSIONS] if v is not None])
                for i in range(0, DRAWS, WIRE_SESSIONS)
                if any(v is not None for v in values[i : i + WIRE_SESSIONS])
            ]
            small = level["summary"][key]["medians_of_first"]
            assert small["n"] == len(groups)
            assert [small["p5"], small["p95"]] == pytest.approx(np.percentile(groups, [5, 95]))
        # The spread is real: sessions differ, and the errors are of the noise's size.
        assert level["summary"]["b_error"]["all"]["q25"] < level["summary"]["b_error"]["all"]["q75"]
        # Where the coalition found (a, b), it found the played values: the error is I6's own.
        found = [s for s in drawn if s["estimates"]["b"] is not None]
        assert len(found) >= DRAWS * 0.8
        for s in found:
            assert s["estimates"]["b"] == pytest.approx(s["played"]["b"], rel=1e-9, abs=1e-9)
            assert s["estimates"]["a"] == pytest.approx(s["played"]["a"], rel=1e-9)
    # The table prints the same numbers; what the command printed is what it wrote.
    text = (out / "perturbation.md").read_text()
    assert printed.strip() == text.strip()
    rows = table_rows(text)
    assert len(rows) == len(levels) * len(PERTURBATION_ROWS)
    per = len(PERTURBATION_ROWS)
    for level, chunk in zip(levels, (rows[:per], rows[per:]), strict=True):
        b = next(r for r in chunk if r[1].startswith("b error"))
        every = level["summary"]["b_error"]["all"]
        assert b[2] == f"{every['n']} of {DRAWS}"
        assert b[3] == f"{every['median']:.2g}"  # the table's two significant digits
    png = (out / "perturbation.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_the_first_five_sessions_give_the_wire_experiments_published_figures(command):
    """Sessions 0–4 are the wire experiment's sessions (seeds 7–11): their medians are the
    figures of docs/privacy.md's collusion table — a small sample, which is why they differ
    from the medians over many sessions."""
    out, _ = command
    for level in json.loads((out / "perturbation.json").read_text()):
        b, welfare = WIRE_TABLE[level["variant"]]
        first = level["summary"]
        assert float(f"{first['b_error']['first']['median']:.2g}") == b
        assert float(f"{first['welfare_loss']['first']['median']:.2g}") == welfare


def test_a_scenario_without_an_attack_is_refused_with_a_clear_error(tmp_path):
    paper = ROOT / "configs" / "paper.toml"
    proc = subprocess.run(
        [*PRIVGRID, "experiment", "perturbation", str(paper), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"privgrid: error: {paper}: the scenario has no [attack] table"
    assert not (tmp_path / "x").exists()


# --- one session on the wire against its draw ------------------------------------------------
@pytest.mark.parametrize(
    ("seed", "found"),
    [(7, True), (19, False)],
    ids=["session-0-recovered", "session-12-plateau-rule-misfires"],
)
def test_a_session_run_on_the_wire_gives_what_its_in_process_draw_says(grid_factory, seed, found):
    """I6 at (σ_b, r, w) = (3, 0.3, 8), as ``privgrid experiment collusion`` runs it (plain
    mode, pair checks, masked LM leg, the probe attack). Session 12 starts pinned at its played
    Pmax, so the coordinator takes that bound for both plateaus, and finds no (a, b)."""
    grid = grid_factory(
        COLLUSION,
        privacy={"mode": "plain", "pair_checks": True, "lm_leg": "masked"},
        scenario={"seed": seed},
        attack={"compare_honest": True},
        agents={"S1": {"privacy_noise": I6_LEVELS["i6-high"]}},
    )
    drawn = draw_sessions(grid.scenario, 1)[0]
    assert (drawn.estimates["b"] is not None) is found
    grid.start_all()
    code = grid.wait(MO_ID, timeout=600)
    for pid in participants(grid.scenario):
        grid.wait(pid, timeout=60)
    assert code == 0, grid.log(MO_ID)[-2000:]
    grid.report()  # as `privgrid run` does once every process has exited
    wire = json.loads((grid.folder / "attack.json").read_text())
    for q in ("a", "b", "pmax", "pmin"):
        if drawn.estimates[q] is None:
            assert wire["estimates"][q] is None, q
        else:
            assert wire["estimates"][q] == pytest.approx(drawn.estimates[q], rel=1e-7), q
            assert wire["errors"][q] == pytest.approx(drawn.errors[q], rel=1e-6, abs=1e-9), q
    assert wire["honest"]["welfare_loss_vs_optimum"] == pytest.approx(drawn.welfare_loss, rel=1e-9)
