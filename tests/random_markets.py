"""Random small feasible markets on IEEE 14: one definition for the property test and benchmarks.

Sellers, buyers and prosumers on random buses with 0–2 line limits. Sellers must sell and
buyers must buy something (bounds strictly away from 0), so every marginal value is unique and
comparable with the QP's duals (algorithm.md §4, "for non-degenerate data").

:func:`market` builds the scenario data from any source of draws: hypothesis in
``tests/test_property.py`` (:func:`hypothesis_draws`), a seeded generator in
``benchmarks/steps.py`` and ``tests/test_steps.py`` (:func:`seeded_market`), so the
benchmark's "random scenarios" are exactly the property test's distribution.

Markets whose optimal line prices exceed :data:`MAX_LINE_PRICE` (energy prices here are 1–4
$/kW) are left out by :func:`usable`: their limits nearly make the market infeasible, and the
method, whose line prices move by σ·overload per round, creeps to them linearly over tens of
thousands of rounds (algorithm.md §9, "slow linear convergence, not failure"; docs/market.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

IEEE14_LINES = "1-2 1-5 2-3 2-4 2-5 3-4 4-5 4-7 4-9 5-6 6-11 6-12 6-13 7-8 7-9 9-10 9-14 10-11"
IEEE14_LINES = [*IEEE14_LINES.split(), "12-13", "13-14"]
MAX_LINE_PRICE = 10.0


class Draws(Protocol):
    """Where the random numbers come from."""

    def real(self, lo: float, hi: float) -> float:
        """A real in [lo, hi], rounded to 3 decimals."""

    def integer(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""

    def subset(self, items: Sequence[str], max_size: int) -> list[str]:
        """Up to ``max_size`` distinct items."""


def agent(draws: Draws, kind: str, index: int) -> dict[str, Any]:
    bus = draws.integer(1, 14)
    if kind == "S":
        pmin = draws.real(0.2, 2.0)
        return {
            "id": f"S{index}",
            "bus": bus,
            "a": draws.real(0.02, 0.1),
            "b": draws.real(0.5, 1.5),
            "pmin": pmin,
            "pmax": pmin + draws.real(1.0, 6.0),
        }
    if kind == "B":
        pmax = -draws.real(0.2, 2.0)
        return {
            "id": f"B{index}",
            "bus": bus,
            "a": draws.real(0.02, 0.1),
            "b": draws.real(2.0, 4.0),
            "pmin": pmax - draws.real(1.0, 6.0),
            "pmax": pmax,
        }
    return {
        "id": f"P{index}",
        "bus": bus,
        "a": draws.real(0.05, 0.3),
        "b": draws.real(1.5, 3.0),
        "pmin": -draws.real(0.5, 4.0),
        "pmax": draws.real(0.5, 4.0),
    }


def market(draws: Draws, market: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scenario data: 1–4 sellers, 1–4 buyers, 0–2 prosumers, 0–2 line limits."""
    counts = {"S": draws.integer(1, 4), "B": draws.integer(1, 4), "P": draws.integer(0, 2)}
    agents = [agent(draws, kind, i + 1) for kind, n in counts.items() for i in range(n)]
    lines = draws.subset(IEEE14_LINES, 2)
    limits = {line: draws.real(0.3, 6.0) for line in lines}
    return {
        "scenario": {"name": "random", "seed": 0},
        "network": {"case": "ieee14", "line_limits": limits},
        "agents": agents,
        "market": dict(market or {}),
    }


class SeededDraws:
    """:class:`Draws` from Python's seeded generator (the same numbers on every platform)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def real(self, lo: float, hi: float) -> float:
        return round(self.rng.uniform(lo, hi), 3)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def subset(self, items: Sequence[str], max_size: int) -> list[str]:
        return self.rng.sample(list(items), self.rng.randint(0, max_size))


def hypothesis_draws(draw: Callable[[Any], Any]) -> Draws:
    """:class:`Draws` from a hypothesis ``draw`` (inside ``@st.composite``)."""
    from hypothesis import strategies as st

    class _Draws:
        def real(self, lo: float, hi: float) -> float:
            return draw(st.floats(lo, hi, allow_nan=False).map(lambda x: round(x, 3)))

        def integer(self, lo: int, hi: int) -> int:
            return draw(st.integers(lo, hi))

        def subset(self, items: Sequence[str], max_size: int) -> list[str]:
            return draw(st.lists(st.sampled_from(list(items)), max_size=max_size, unique=True))

    return _Draws()


def seeded_market(seed: int, market_keys: dict[str, Any] | None = None) -> dict[str, Any]:
    data = market(SeededDraws(seed), market_keys)
    data["scenario"]["name"] = f"random-{seed}"
    return data


def usable(data: dict[str, Any]) -> bool:
    """A valid, feasible market whose optimal line prices stay ≤ :data:`MAX_LINE_PRICE`."""
    from privgrid.market.central import InfeasibleMarketError, solve_central
    from privgrid.market.feasibility import check_feasible
    from privgrid.market.setup import agent_costs, build_setup
    from privgrid.scenario import ScenarioError, parse_scenario

    try:
        scenario = parse_scenario(data)
        setup = build_setup(scenario)
        check_feasible(setup, agent_costs(scenario))
    except (ScenarioError, InfeasibleMarketError):
        return False
    eta = solve_central(setup, agent_costs(scenario)).line_prices
    return max([0.0, *eta.up, *eta.down]) <= MAX_LINE_PRICE


def seeded_markets(count: int, market_keys: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The first ``count`` usable markets of seeds 0, 1, 2, … (deterministic)."""
    found: list[dict[str, Any]] = []
    seed = 0
    while len(found) < count:
        data = seeded_market(seed, market_keys)
        if usable(data):
            found.append(data)
        seed += 1
    return found
