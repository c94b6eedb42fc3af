"""A day's participants wired by hand (tests/day_bus.py: the product's day layers, real
channels, no broker): what the day layer owes the interval node it starts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import msgpack

from privgrid.logs import ParticipantLog
from privgrid.privacy import PrivacyMode
from privgrid.roles.agent.node import AgentNode
from privgrid.roles.daylayer import DayLayer
from privgrid.roles.dayplan import DayPlan
from privgrid.runtime import Action, Node
from privgrid.scenario import load_scenario
from privgrid.wire.channel import Message
from privgrid.wire.kinds import IntervalStart
from tests.day_bus import DayBus, night_run_folder

ROOT = Path(__file__).resolve().parent.parent


def test_an_interval_node_counts_silence_from_when_its_interval_began(tmp_path):
    """Regression: an agent's interval node began with ``last_heard = 0``, so on a host whose
    monotonic clock was past the silence timeout its first tick (before any message of the
    interval) gave up at once — ``nothing heard for 12738 s`` on a wire day."""
    _, folder, _ = night_run_folder(tmp_path)
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

    _, folder, _ = night_run_folder(tmp_path)
    me, agent = next(iter(DayBus(folder).agents.items()))
    agent.ended = {"grid-supply": Held(1.5, 0.25, 0.2500001, -1.5)}
    agent.ended_index = 7
    restarted = DayBus(folder).agents[me]
    restarted.restore(agent.snapshot())
    assert restarted.ended == agent.ended and restarted.ended_index == 7


# --- a participant's figures over a day ---------------------------------------------------------
class _Market(Node):
    """An interval node as far as figures go: the exchange of an agent, which reports the
    mode's crypto totals as they stand (the mode's counters are shared by every interval's
    exchange) and its own pool count."""

    def __init__(self, me: str, log: ParticipantLog, mode: PrivacyMode, own: float) -> None:
        super().__init__(me, log)
        self.mode = mode
        self.own = own

    def peers(self) -> set[str]:
        return set()

    def start(self, now: float) -> list[Action]:
        return []

    def handle(self, message: Message, now: float) -> list[Action]:
        return []

    def tick(self, now: float) -> list[Action]:
        return []

    def counters(self) -> dict[str, float]:
        return {**self.mode.counters.as_stats(), "pool_left": 7.0, "own": self.own}

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        pass


class _Day(DayLayer):
    def peers(self) -> set[str]:
        return set()

    def start(self, now: float) -> list[Action]:
        return []

    def begin_interval(self, opening: int, body: IntervalStart, now: float) -> list[Action]:
        return []

    def rebuild(self, index: int, opening: int, state: Mapping[str, Any]) -> Node:
        return _Market(self.me, self.log, self.mode, 0.0)


def _day_participant() -> _Day:
    scenario = load_scenario(ROOT / "configs" / "paper.toml")
    log = ParticipantLog(logging.getLogger("test.day.figures"), "S1")
    day = _Day(
        "S1", log, cast(DayPlan, None), PrivacyMode(scenario, "S1", "run", log), scenario.timeouts
    )
    # What the runtime reports (Participant.stats): the channel's and the node's figures.
    day.stats = lambda: {**day.counters(), "crypto_s": day.crypto_seconds()}
    return day


def test_each_interval_counts_its_own_crypto_time_and_the_day_counts_it_once():
    """The mode's counters run on from interval to interval, and every interval's exchange
    reports them as they stand: the day layer used to add those reports up, so that interval
    1's crypto time counted again in every later interval of the participant's day totals (3
    intervals of 1 s each came to 6 s). The work between two intervals (pools filled ahead)
    counts in the interval it prepares, before the first interval in the first."""
    day = _day_participant()
    counters = day.mode.counters
    counters.add_time("ahead", 0.25)  # before the first interval
    reports = []
    for index in (1, 2, 3):
        day.switch(index, 100 * index, _Market("S1", day.log, day.mode, own=float(index)))
        counters.add_time("offer", 1.0)
        counters.count("proofs_made", 4)
        reports.append(day.interval_stats())  # the interval's final report
        counters.add_time("ahead", 0.5)  # between intervals: for the next one
    assert [r["crypto_offer"] for r in reports] == [1.0, 1.0, 1.0]
    assert [r["proofs_made"] for r in reports] == [4.0, 4.0, 4.0]
    assert [r["crypto_ahead"] for r in reports] == [0.25, 0.5, 0.5]
    assert [r["crypto_s"] for r in reports] == [1.25, 1.5, 1.5]
    assert [r["own"] for r in reports] == [1.0, 2.0, 3.0]  # the nodes' own figures: summed
    assert [r["pool_left"] for r in reports] == [7.0, 7.0, 7.0]  # the present, not a sum
    totals = day.stats()
    assert totals["crypto_offer"] == 3.0 and totals["proofs_made"] == 12.0
    assert totals["crypto_ahead"] == 1.75 and totals["crypto_s"] == 4.75
    assert totals["own"] == 6.0
    for key in ("crypto_offer", "crypto_ahead", "proofs_made", "own"):  # nothing left out
        assert sum(r[key] for r in reports) + (0.5 if key == "crypto_ahead" else 0) == totals[key]


def test_a_restarted_participant_goes_on_counting_from_its_last_report():
    """The last report's figures are in the checkpoint: the interval after a restart begins
    where the one before the crash left off."""
    day = _day_participant()
    day.switch(1, 100, _Market("S1", day.log, day.mode, own=0.0))
    day.mode.counters.add_time("offer", 1.0)
    day.interval_stats()
    state = msgpack.unpackb(msgpack.packb(day.snapshot()), raw=False)
    restarted = _day_participant()
    restarted.restore(state)
    assert restarted.reported == day.reported and restarted.baseline == day.baseline
