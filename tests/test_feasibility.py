"""Infeasible scenarios are refused before any process starts, with an explanation.

The check (:mod:`privgrid.market.feasibility`) is an LP over the constraints of algorithm.md
§1–§2; these tests craft scenarios whose every agent passes the per-agent checks of the
loader, yet the market as a whole has no clearing point, and check that the error names the
file, the agents and the lines to blame — through the library, ``privgrid run`` and a role
process started by hand.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from privgrid.keys import init_keys
from privgrid.market.central import InfeasibleMarketError
from privgrid.market.feasibility import InfeasibleScenarioError, check_feasible, ensure_feasible
from privgrid.market.setup import build_setup
from privgrid.scenario import ScenarioError, load_scenario
from tests.test_configs import CONFIGS as MARKET_CONFIGS

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
PAPER = tomllib.loads((CONFIGS / "paper.toml").read_text())


def scenario_file(tmp_path: Path, edit, name: str = "bad.toml") -> Path:
    data = copy.deepcopy(PAPER)
    edit(data)
    path = tmp_path / name
    path.write_text(tomli_w.dumps(data))
    return path


def narrow_7_8(data: dict) -> None:
    """S3 (bus 8) must sell ≥ 1 kW, and bus 8 hangs on line 7-8 alone."""
    data["network"]["line_limits"] = {"8-7": 0.5}


def too_much_supply(data: dict) -> None:
    """Each seller's minimum fits the buyers (≤ 21 kW) but together 24 kW do not."""
    for agent in data["agents"][:4]:
        agent["pmin"], agent["pmax"] = 6.0, max(agent["pmax"], 6.0)


def too_much_demand(data: dict) -> None:
    """Each buyer's minimum fits the sellers (≤ 22 kW) but together 24 kW do not."""
    for agent in data["agents"][4:]:
        agent["pmin"], agent["pmax"] = -9.0, -8.0


def explain(path: Path) -> str:
    with pytest.raises(InfeasibleScenarioError) as info:
        check_feasible(build_setup(load_scenario(path)))
    assert isinstance(info.value, ScenarioError) and isinstance(info.value, InfeasibleMarketError)
    message = str(info.value)
    assert all(line.startswith(f"{path}: ") for line in message.splitlines()), message
    return message


def test_a_seller_cut_off_by_a_line_limit_is_explained_naming_the_line_and_the_seller(tmp_path):
    message = explain(scenario_file(tmp_path, narrow_7_8))
    assert "network.line_limits.'8-7': the agents' bounds can be met, but not within" in message
    assert "line 7-8 would have to carry 1 kW (limit 0.5 kW)" in message
    assert "agents[2] (S3).pmin: must sell at least 1 kW, but at most 0.5 kW" in message


def test_the_same_line_at_exactly_the_needed_capacity_is_feasible(tmp_path):
    path = scenario_file(tmp_path, lambda d: d["network"].update(line_limits={"7-8": 1.0}))
    check_feasible(build_setup(load_scenario(path)))  # no error: the boundary is feasible


def test_total_must_sell_beyond_what_the_buyers_can_take_is_explained(tmp_path):
    message = explain(scenario_file(tmp_path, too_much_supply))
    assert "sellers must sell 24 kW in total, the buyers and prosumers can take at most 21" in (
        message
    )
    assert ".pmin: must sell at least 6 kW" in message and "(S" in message


def test_total_must_buy_beyond_what_the_sellers_can_supply_is_explained(tmp_path):
    message = explain(scenario_file(tmp_path, too_much_demand))
    assert "buyers must buy 24 kW in total, the sellers and prosumers can supply at most 22" in (
        message
    )
    assert ".pmax: must buy at least 8 kW" in message and "(B" in message


@pytest.mark.parametrize("config", [p.name for p in MARKET_CONFIGS])
def test_every_shipped_config_is_feasible(config):
    """Single markets; a day's intervals are checked when the day is built (test_feeder_day)."""
    ensure_feasible(load_scenario(CONFIGS / config))


def test_privgrid_run_refuses_an_infeasible_scenario_before_starting_anything(tmp_path):
    path = scenario_file(tmp_path, narrow_7_8)
    out = tmp_path / "run"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "privgrid"), "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "agents[2] (S3).pmin: must sell at least 1 kW" in done.stderr
    assert "line 7-8 would have to carry" in done.stderr
    assert not out.exists(), "no run folder, no broker, no process: refused before the start"


@pytest.mark.parametrize("module", ["agents", "line_manager", "market_operator"])
def test_a_role_process_refuses_an_infeasible_scenario_at_start(tmp_path, module):
    path = scenario_file(tmp_path, too_much_supply)
    init_keys(load_scenario(path), tmp_path / "secrets")
    cmd = [
        sys.executable,
        "-m",
        module,
        "--scenario",
        str(path),
        "--keys",
        str(tmp_path / "secrets"),
    ]
    if module == "agents":
        cmd += ["--id", "B1"]
    env = {**os.environ, "PRIVGRID_BROKER_URL": "mqtt://127.0.0.1:9"}  # never reached
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "the sellers must sell 24 kW in total" in done.stderr
    assert "connected to" not in done.stderr


_APART = """
import sys
from pathlib import Path
from privgrid.process import ensure_feasible_apart
from privgrid.scenario import ScenarioError, load_scenario
try:
    ensure_feasible_apart(load_scenario(Path(sys.argv[1])))
    print("feasible")
except ScenarioError as exc:
    print(type(exc).__name__, str(exc))
print("scipy loaded:", "scipy.optimize" in sys.modules)
"""


@pytest.mark.parametrize("edit", [None, "too_much_supply"])
def test_a_role_process_checks_feasibility_in_a_child_and_never_loads_scipy(tmp_path, edit):
    """The LP's SciPy (≈ 45 MB) stays out of the participant: the check runs in a forked
    child, with the same verdict and message as in-process."""
    path = scenario_file(tmp_path, globals()[edit]) if edit else CONFIGS / "paper.toml"
    done = subprocess.run(
        [sys.executable, "-c", _APART, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    if edit is None:
        assert done.stdout.splitlines()[0] == "feasible"
    else:
        with pytest.raises(InfeasibleScenarioError) as in_process:
            ensure_feasible(load_scenario(path))
        verdict = "\n".join(done.stdout.splitlines()[:-1])
        assert verdict == f"InfeasibleScenarioError {in_process.value}"
    assert done.stdout.splitlines()[-1] == "scipy loaded: False"
