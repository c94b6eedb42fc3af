"""Adaptive steps in a run: announced by the MO, used by everyone, bit for bit.

The market is the paper case with every cost divided by 20 (prices ~0.1 $/kW, a real feeder's
level, docs/market.md): the MO's step controller changes the exponent four times in this run,
so the steps really move. On the in-process bus (tests/bus.py: the product's runtime and nodes,
every message through the real channel) the MO's ``round`` broadcasts are read as the broker
relays them; each must announce exactly the exponent the in-process negotiation used in that
round, and the run must end with the in-process result, bit for bit. Over a real Mosquitto
with real processes, a restarted MO or LM resumes the controller (and its half-filled window)
from its checkpoint.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgpack
import pytest

from privgrid.keys import participants
from privgrid.market.negotiation import negotiate
from privgrid.market.setup import agent_costs, build_setup, played_costs
from privgrid.market.steps import StepController
from privgrid.scenario import LM_ID, MO_ID
from privgrid.wire import topics

pytestmark = pytest.mark.timeout(400)
ROOT = Path(__file__).resolve().parent.parent
PAPER = tomllib.loads((ROOT / "configs" / "paper.toml").read_text())
FEEDER_PRICED = {a["id"]: {"a": a["a"] / 20, "b": a["b"] / 20} for a in PAPER["agents"]}
WAIT = {"on_missing": "wait", "missing": 60.0}


def in_process(grid):
    """The reference: the same scenario negotiated in one process, with its step decisions."""
    setup = build_setup(grid.scenario)
    controller = StepController.for_market(grid.scenario.market)
    costs = agent_costs(grid.scenario)
    result = negotiate(
        setup, played_costs(grid.scenario), welfare_costs=costs, controller=controller
    )
    return result, controller


def announced_steps(grid) -> dict[int, int | None]:
    """The ``steps`` of every ``round`` broadcast (None if absent), as the broker relayed them."""
    announced: dict[int, int | None] = {}
    for topic, payload in grid.broker.published:
        if topic == topics.broadcast(grid.run_id, MO_ID, "round"):
            envelope = msgpack.unpackb(payload, strict_map_key=False)
            body = msgpack.unpackb(envelope["body"])  # round bodies are not sealed
            announced[envelope["round"]] = body.get("steps")
    return announced


def finish(grid, timeout: float = 300) -> int:
    code = grid.wait(MO_ID, timeout=timeout)
    for pid in participants(grid.scenario):
        grid.wait(pid, timeout=60)
    return code


def assert_bit_for_bit(results, result, setup) -> None:
    """Every trade, price and charge of the run equals the in-process state exactly."""
    g = setup.graph
    assert results["converged"] and results["rounds"] == result.rounds
    state = result.state
    for trade in results["trades"]:
        seller = g.trade(trade["seller"], trade["buyer"])
        assert trade["power"] == state.trades[seller], trade
        assert trade["price"] == state.prices[seller], trade
        assert trade["charge"] == state.charges[seller], trade
    assert results["kkt"]["passed"], results["kkt"]["failures"][:3]


def test_the_mo_announces_each_rounds_steps_and_the_run_equals_the_in_process_one(
    bus_factory,
):
    grid = bus_factory(privacy={"mode": "plain"}, agents=FEEDER_PRICED)
    assert grid.run(timeout=300) == 0, grid.log(MO_ID)[-3000:]
    announced = announced_steps(grid)
    result, controller = in_process(grid)
    used = {r.round: r.exponent for r in result.trace}
    assert announced == used  # every round, as the broker relayed it
    assert len(controller.history) >= 3 and len(set(used.values())) >= 4  # the steps moved
    for first_round, exponent in controller.history:
        assert f"steps from round {first_round}: exponent" in grid.log(MO_ID)
        assert used[first_round] == exponent
    assert_bit_for_bit(grid.results(), result, build_setup(grid.scenario))


@pytest.mark.parametrize("victim", [MO_ID, LM_ID])
def test_a_restarted_mo_or_lm_keeps_the_step_decisions(grid_factory, victim):
    """Killed at round 40 — after two changes, inside the window that leads to the third —
    and restarted from its checkpoint, the run makes the same step decisions."""
    grid = grid_factory(privacy={"mode": "plain"}, agents=FEEDER_PRICED, timeouts=WAIT)
    for pid in participants(grid.scenario):
        grid.extra_args[pid] = ["--state", str(grid.folder / "state")]
    result, controller = in_process(grid)
    assert [r for r, _ in controller.history][:3] == [11, 28, 55]  # 40 is mid-window
    grid.start_all()
    grid.wait_for_round(40)
    grid.kill(victim)
    grid.wait(victim, timeout=10)
    grid.wait_log("S1", f"{victim} left the run")
    grid.start(victim)
    assert finish(grid) == 0, grid.log(MO_ID)[-3000:]
    assert "resuming from checkpoint" in grid.log(victim)
    assert_bit_for_bit(grid.results(), result, build_setup(grid.scenario))
    for first_round, _ in controller.history:
        assert f"steps from round {first_round}: exponent" in grid.log(MO_ID)
