"""A secure day over the wire fills its Paillier pools between intervals (issue #17,
docs/feeder.md): ``privgrid run`` of two night intervals of configs/day-rural1.toml on its own
Mosquitto, Paillier mode with 1024-bit test keys and ``privacy.pool_rounds`` > 0, one
long-lived process per ten participants — and the same day cleared in process (``privgrid
solve``) as the reference. tests/test_day_pools.py tests the same on the in-process day bus.

The day is made small and quick to clear (a secure round costs far more than a plain one):
each household trades with its one nearest household and the grid (``households.nearest =
1``), tolerances a hundred times the day config's and steps that suit them (28 rounds cold,
7 warm). ``market.max_rounds`` is just above interval 1's rounds: the pools' depth never
exceeds the rounds an interval can still run, so interval 1 ends with its pools almost
drained (at most 3 rounds' worth), and interval 2 needs more than that is left — what it
draws beyond comes from the fill between the intervals (``pool_ahead_hits``) or, had that
fill not run, from its own fill at its start. ``[day] pause_s`` gives the participants a
second of idle time between the intervals, as a real deployment has until the next quarter
hour; without it the fill depends on how fast the MO opens the next interval.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import load_strict_json
from tests.test_grid_day import ROOT, assert_same_trades, privgrid

pytestmark = [pytest.mark.grid, pytest.mark.timeout(600)]  # `privgrid run` over Mosquitto
INTERVALS = 2
POOL_ROUNDS = 8
#: The MO's pause between the intervals: idle time that does not depend on the machine's speed
#: (back to back, an idle agent may get no tick before the next interval opens).
PAUSE_S = 1.0


def secure_night(folder: Path) -> Path:
    """The module's day (module docstring): two night intervals, Paillier with pools."""
    data = tomllib.loads((ROOT / "configs" / "day-rural1.toml").read_text())
    data["day"].update(start="2016-06-21T02:00", intervals=INTERVALS, pause_s=PAUSE_S)
    data["households"] = {"nearest": 1}
    data["market"].update(epsilon_p=0.1, epsilon_lambda=0.01, tau=10.0, alpha=0.02, max_rounds=30)
    data["privacy"] = {
        "mode": "paillier",
        "key_bits": 1024,
        "insecure_test_keys": True,
        "pool_rounds": POOL_ROUNDS,
    }
    scenario = folder / "day.toml"
    scenario.write_text(tomli_w.dumps(data))
    return scenario


def results(folder: Path, index: int) -> dict[str, Any]:
    return load_strict_json(folder / "intervals" / f"{index:04d}" / "results.json")


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> tuple[Path, Path]:
    """The wire day's run folder and the in-process day's."""
    tmp = tmp_path_factory.mktemp("secureday")
    scenario = secure_night(tmp)
    solve = privgrid("solve", str(scenario), "--out", str(tmp / "solve"), timeout=300)
    assert solve.returncode == 0, solve.stderr[-2000:]
    run = privgrid(
        "run", str(scenario), "--out", str(tmp / "wire"), "--agents-per-process", "10", timeout=540
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "broker: mosquitto" in run.stderr and "Traceback" not in run.stderr
    return tmp / "wire", tmp / "solve"


def test_a_secure_day_with_pools_clears_the_trades_of_privgrid_solve(days):
    wire, solve = days
    day = load_strict_json(wire / "day.json")
    assert day["status"] == "converged" and day["error"] is None
    assert day["summary"]["intervals"] == day["summary"]["blocks"] == INTERVALS
    for i in range(1, INTERVALS + 1):
        ours, theirs = results(wire, i), results(solve, i)
        assert ours["status"] == theirs["status"] == "converged", i
        assert ours["mode"] == "paillier" and ours["proofs"]["made"] > 0
        assert ours["proofs"]["failed"] == 0
        assert_same_trades(ours, theirs, i)
        assert ours["ledger"]["committed"] and ours["ledger"]["height"] == i
    # what makes interval 1 end with its pools nearly drained (module docstring)
    rounds = [results(wire, i)["rounds"] for i in range(1, INTERVALS + 1)]
    assert 30 - 3 < rounds[0] <= 30 and rounds[1] > 3, rounds


def test_interval_2_draws_pool_entries_its_agents_made_between_the_intervals(days):
    """Each agent's counters of interval 2 (results.json ``participants``): entries drawn
    from its pools (``pool_hits``) and, of those, entries its idle ticks made between
    interval 1 and 2 (``pool_ahead_hits``); its log says how many it made ahead."""
    wire, _ = days
    plan = load_strict_json(wire / "plan.json")
    agents = [a["id"] for a in plan["agents"]]
    second = results(wire, 2)["participants"]
    assert set(agents) <= set(second)
    hits = {a: second[a]["pool_hits"] for a in agents}
    ahead = {a: second[a]["pool_ahead_hits"] for a in agents}
    assert all(hits.values()), hits  # every agent's exchange drew on its pools
    assert all(0 <= ahead[a] <= hits[a] for a in agents), (ahead, hits)
    assert sum(ahead.values()) > 0, ahead
    assert f"a pause of {PAUSE_S:g} s before interval 2" in (wire / "logs" / "MO.log").read_text()
    drew = [a for a in agents if ahead[a] > 0]
    made = re.compile(r"interval 2 begins after round \d+ \(.*, (\d+) pool entries made ahead\)")
    for a in drew:  # made between the intervals, as its log says
        found = made.search((wire / "logs" / f"{a}.log").read_text())
        assert found and int(found.group(1)) >= ahead[a], a
        assert second[a]["crypto_ahead"] > 0, a
