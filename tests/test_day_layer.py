"""A day's participants wired by hand (tests/day_bus.py: the product's day layers, real
channels, no broker): what the day layer owes the interval node it starts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

from privgrid.feeder.day import prepare_day, prepare_folder
from privgrid.feeder.wire import write_plan
from privgrid.roles.agent.node import AgentNode
from privgrid.wire.kinds import IntervalStart
from tests.day_bus import DayBus

ROOT = Path(__file__).resolve().parent.parent


def test_an_interval_node_counts_silence_from_when_its_interval_began(tmp_path):
    """Regression: an agent's interval node began with ``last_heard = 0``, so on a host whose
    monotonic clock was past the silence timeout its first tick (before any message of the
    interval) gave up at once — ``nothing heard for 12738 s`` on a wire day."""
    data = tomllib.loads((ROOT / "configs" / "day-rural1.toml").read_text())
    data["day"].update(start="2016-06-21T02:00", intervals=1)
    data["privacy"] = {"mode": "plain"}
    scenario = tmp_path / "day.toml"
    scenario.write_text(tomli_w.dumps(data))
    prepared = prepare_day(scenario)
    folder = tmp_path / "run"
    write_plan(prepared, folder, prepare_folder(prepared, folder))
    bus = DayBus(folder)
    began = 100_000.0  # the monotonic clock of a host that has been up a while
    bus.run(intercept=lambda m: not isinstance(m.body, IntervalStart), now=began)
    agents = [a for a in bus.agents.values() if isinstance(a.inner, AgentNode)]
    assert agents  # the interval began at every agent taking part
    for agent in agents:
        agent.tick(began + 5.0)
        assert agent.exit_code is None and agent.inner.exit_code is None, agent.me


def test_a_restarted_agent_keeps_what_its_last_market_ended_with(tmp_path):
    """The warm start of the next interval predicts from the last two markets' values
    (privgrid/market/warm.py); an agent restarted from its checkpoint must still have the
    older of the two, or its start — and the day — would differ from the in-process day's."""
    from privgrid.roles.agent.node import Held

    data = tomllib.loads((ROOT / "configs" / "day-rural1.toml").read_text())
    data["day"].update(start="2016-06-21T02:00", intervals=1)
    data["privacy"] = {"mode": "plain"}
    scenario = tmp_path / "day.toml"
    scenario.write_text(tomli_w.dumps(data))
    prepared = prepare_day(scenario)
    folder = tmp_path / "run"
    write_plan(prepared, folder, prepare_folder(prepared, folder))
    me, agent = next(iter(DayBus(folder).agents.items()))
    agent.ended = {"grid-supply": Held(1.5, 0.25, 0.2500001, -1.5)}
    agent.ended_index = 7
    restarted = DayBus(folder).agents[me]
    restarted.restore(agent.snapshot())
    assert restarted.ended == agent.ended and restarted.ended_index == 7
