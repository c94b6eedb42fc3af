"""One interval's market as an ordinary scenario: explicit agents, pairs and line limits.

The scenario is self-contained — ``network.case`` is the relative path of the run folder's
``grid.m`` — so ``privgrid solve intervals/0001/scenario.toml`` clears it on its own, and a
participant process of a later wire run reads exactly this file.

Units: agents' ``a`` and ``b`` are cost rates (money per hour: ``a`` per kW² h, ``b`` per kWh),
so prices come out per kWh whatever the interval length; the interval's money is the rate ×
its hours (day.json does that). Bounds are kW of average power over the interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from privgrid.feeder.agents import FEEDIN, RETAIL, Household, interval_pairs
from privgrid.feeder.household import HouseholdParams, Offer, PreferredOutsideBoundsError, offer
from privgrid.feeder.schema import DayScenario
from privgrid.scenario import ScenarioError


@dataclass(frozen=True)
class IntervalInputs:
    """What one interval's market is made of, before it becomes a scenario."""

    index: int  # 1-based
    start: str  # ISO time
    load_kw: dict[str, float]  # per household
    pv_kw: dict[str, float]
    offers: dict[str, Offer]  # every agent that takes part (households and grid agents)


def label(index: int) -> str:
    """The interval's folder name: ``0001``…"""
    return f"{index:04d}"


def household_offers(
    day: DayScenario,
    homes: Sequence[Household],
    storage_kw: Mapping[str, float],
    loads: Mapping[str, float],
    pv: Mapping[str, float],
    index: int,
    start: str,
    params: HouseholdParams,
) -> dict[str, Offer]:
    """Every household's offer for one interval; an offer outside its bounds is an error
    naming the household and the interval."""
    offers = {}
    for h in homes:
        try:
            offers[h.id] = offer(loads[h.id], pv[h.id], storage_kw[h.id], params)
        except PreferredOutsideBoundsError as exc:
            raise ScenarioError.single(
                day.source,
                "households",
                f"household {h.id} (bus {h.bus}) in interval {label(index)} ({start}): {exc}",
            ) from None
    return offers


def grid_offers(day: DayScenario, homes: Mapping[str, Offer]) -> dict[str, Offer]:
    """RETAIL can supply whatever the households could take, FEEDIN take whatever they could
    give; an agent with nothing to trade (e.g. FEEDIN at night without storage) sits out."""
    g = day.grid_supply
    demand = sum(max(0.0, -o.pmin) for o in homes.values() if not o.idle)
    supply = sum(max(0.0, o.pmax) for o in homes.values() if not o.idle)
    offers = {}
    if demand > 0:
        offers[RETAIL] = Offer(0.0, 0.0, demand, g.curvature, g.retail_price)
    if supply > 0:
        offers[FEEDIN] = Offer(0.0, -supply, 0.0, g.curvature, g.feed_in_price)
    return offers


def interval_scenario(
    day: DayScenario,
    inputs: IntervalInputs,
    buses: Mapping[str, int],
    pairs: Sequence[tuple[str, str]],
    line_limits: Mapping[str, float],
    case: str,
) -> dict[str, Any]:
    """The interval's scenario document (ready for ``tomli_w``). Agents that sit the
    interval out (nothing to trade) are not in it; nor are pairs that cannot trade."""
    active = {aid: o for aid, o in inputs.offers.items() if not o.idle}
    bounds = {aid: (o.pmin, o.pmax) for aid, o in active.items()}
    agents = [
        {"id": aid, "bus": buses[aid], "a": o.a, "b": o.b, "pmin": o.pmin, "pmax": o.pmax}
        for aid, o in active.items()
    ]
    market = day.market.model_dump(exclude={"pairs"})
    doc: dict[str, Any] = {
        "scenario": {
            "name": f"{day.name}-{label(inputs.index)}",
            "seed": day.scenario.seed,
        },
        "network": {"case": case, "line_limits": dict(line_limits)},
        "agents": agents,
        "market": {**market, "pairs": [list(p) for p in interval_pairs(pairs, bounds)]},
        "privacy": day.privacy.model_dump(),
        "timeouts": day.timeouts.model_dump(),
        "ledger": day.ledger.model_dump(),
    }
    return doc
