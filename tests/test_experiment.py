"""``privgrid experiment collusion``: the leakage table the issue asks for, regenerated for real.

One command run on configs/collusion.toml (its own Mosquitto, real processes, 1024-bit test
keys — the command's default) with the two cheapest variants: ``plain`` (a full probe and
release, ~380 rounds) and ``hardened-free`` (Paillier, aborted by the pair checks at the start
of the attack). The table's wording for runs that tell less is checked on made-up outcomes.
"""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from privgrid.cli import main
from privgrid.experiment import VARIANT_NAMES, Variant, summarise, table

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parent.parent
COLLUSION = ROOT / "configs" / "collusion.toml"
PRIVGRID = [sys.executable, "-m", "privgrid.cli"]
#: The columns the issue names: mode × {Pmax, Pmin, a, b errors, rounds honest → attacked,
#: welfare change, checks fired}.
COLUMNS = (
    "variant",
    "Pmax err",
    "Pmin err",
    "a err",
    "b err",
    "rounds honest → attacked",
    "welfare change",
    "checks fired",
)
NUMBER = re.compile(r"^-?\d+(\.\d+)?(e[-+]\d+)?$")


def parse_table(text: str) -> dict[str, dict[str, str]]:
    """The markdown table as {variant label: {column: cell}}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) >= 3, text  # header, rule, at least one row
    head = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(head), line
        rows[cells[0]] = dict(zip(head, cells, strict=True))
    return rows


def column(row: dict[str, str], name: str) -> str:
    """The cell whose header starts with ``name`` (headers may add a qualifier in brackets)."""
    matches = [cell for header, cell in row.items() if header.startswith(name)]
    assert len(matches) == 1, (name, list(row))
    return matches[0]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The command, run once for the module: (output folder, what it printed)."""
    out = tmp_path_factory.mktemp("experiment") / "out"
    proc = subprocess.run(
        [
            *PRIVGRID,
            "experiment",
            "collusion",
            str(COLLUSION),
            "--out",
            str(out),
            "--only",
            "plain",
            "--only",
            "hardened-free",
            "--seeds",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.grid
def test_the_command_writes_the_leakage_table_with_numbers(experiment):
    out, printed = experiment
    text = (out / "collusion.md").read_text()
    assert printed.strip() == text.strip()  # what it prints is what it wrote
    assert "Paillier keys: 1024 bits" in text
    header = next(line for line in text.splitlines() if line.startswith("|"))
    for name in COLUMNS:
        assert f"| {name}" in header, name
    rows = parse_table(text)
    labels = {v["variant"]: v["label"] for v in json.loads((out / "collusion.json").read_text())}
    assert set(labels) == {"plain", "hardened-free"}

    # plain: the probe and the release ran to the end; every estimate is exact (the leak).
    plain = rows[labels["plain"]]
    for name in ("Pmax err", "Pmin err", "a err", "b err"):
        cell = column(plain, name)
        assert NUMBER.match(cell), (name, cell)
        assert float(cell) < 1e-6, (name, cell)
    honest, attacked = column(plain, "rounds honest → attacked").split(" → ")
    assert int(honest) < int(attacked)  # the probe costs rounds
    welfare = column(plain, "welfare change")
    assert NUMBER.match(welfare) and abs(float(welfare)) <= 1e-4, welfare
    assert column(plain, "checks fired") == "0"  # compliant colluders pass the pair checks

    # hardened-free: the pair checks fire in the first deviating round and the run aborts.
    start = tomllib.loads(COLLUSION.read_text())["attack"]["start_round"]
    free = rows[labels["hardened-free"]]
    assert column(free, "rounds honest → attacked") == f"aborted in round {start}"
    fired, first = column(free, "checks fired").split(", ")
    assert int(fired) > 0 and first == f"first in round {start}"
    assert "None" not in text


@pytest.mark.grid
def test_the_command_draws_the_plot(experiment):
    out, _ = experiment
    png = (out / "collusion.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000  # a drawn figure, not an empty canvas


def test_unknown_variant_names_are_refused_before_any_run(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["experiment", "collusion", str(COLLUSION), "--out", str(out), "--only", "nope"],
    )
    assert result.exit_code == 2, result.output
    message = result.output
    assert "--only" in message and "'nope'" in message
    for name in VARIANT_NAMES:
        assert name in message
    assert not out.exists()  # nothing ran


# --- the table's wording, on made-up outcomes --------------------------------------------------
VARIANT = Variant("hardened-free", "hardened, colluders send free shares", lambda data: None)


def attack_report(first_round: int | None, failures: int) -> dict[str, Any]:
    errors = dict.fromkeys(("pmax", "pmin", "a", "b", "passive_a", "passive_b"))
    return {
        "errors": errors,
        "detection": {"pair_check_failures": failures, "first_round": first_round},
        "honest": {"rounds": 131, "welfare_loss_vs_optimum": None},
    }


def row_text(outcome: dict[str, Any]) -> str:
    return table([summarise(VARIANT, [outcome])]).splitlines()[2]


def test_an_aborted_run_with_an_attack_report_names_its_first_violation_round():
    results = {"rounds": 20, "violations": [{"round": 20, "reason": "pair check"}]}
    text = row_text({"seed": 0, "exit": 3, "results": results, "attack": attack_report(20, 3)})
    assert "| aborted in round 20 |" in text
    assert "| 3, first in round 20 |" in text


def test_an_aborted_run_without_attack_report_takes_the_round_from_its_results():
    results = {"rounds": 12, "violations": [{"round": 12, "reason": "decryption proof refused"}]}
    text = row_text({"seed": 0, "exit": 3, "results": results, "attack": None})
    assert "| aborted in round 12 |" in text
    assert "None" not in text


def test_a_run_that_died_before_reporting_says_so():
    text = row_text({"seed": 0, "exit": 3, "results": None, "attack": None})
    assert "| aborted before the attack reported |" in text
    assert "None" not in text
