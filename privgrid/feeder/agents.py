"""Who trades on a feeder: one household per SimBench load, two grid-supply agents, the pairs.

- **Households**: one per load, at the load's bus, with the PV (static generators) and storage
  at that bus split evenly between the loads there. A bus with PV or storage but no load gets
  one agent of its own (``P<n>``; a producer with no load; MV grids have a few).
- **Grid supply**: ``RETAIL`` sells at the retail price and ``FEEDIN`` buys at the feed-in
  price, both at the external-grid bus, so everything they trade crosses the transformer
  (whose rating is a line limit like any other).
- **Pairs**: each household with its ``k`` electrically nearest households (the DC Thevenin
  reactance of :mod:`privgrid.grid.distance`; ties by id) and with both grid agents. The set
  is fixed for the day; an interval keeps the pairs whose two agents take part and can trade
  (a buyer cannot trade with a buyer), see :func:`interval_pairs`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privgrid.feeder.feeder import Feeder
from privgrid.grid.network import Network

RETAIL = "RETAIL"
FEEDIN = "FEEDIN"
GRID_AGENTS = (RETAIL, FEEDIN)


@dataclass(frozen=True)
class Household:
    """A household agent and the SimBench elements behind it (``share`` of each)."""

    id: str
    bus: int
    loads: tuple[int, ...]  # indices into feeder.loads (all of its power)
    sgens: tuple[tuple[int, float], ...]  # (index into feeder.sgens, share)
    storages: tuple[tuple[int, float], ...]

    def load_kw(self, loads: np.ndarray) -> float:
        return float(sum(loads[i] for i in self.loads))

    def pv_kw(self, sgens: np.ndarray) -> float:
        return float(sum(sgens[i] * share for i, share in self.sgens))

    def storage_kw(self, feeder: Feeder) -> float:
        return float(sum(feeder.storages[i].power_kw * share for i, share in self.storages))

    def elements(self, feeder: Feeder) -> dict[str, list[str]]:
        return {
            "loads": [feeder.loads[i].name for i in self.loads],
            "pv": [feeder.sgens[i].name for i, _ in self.sgens],
            "storage": [feeder.storages[i].name for i, _ in self.storages],
        }


def households(feeder: Feeder) -> list[Household]:
    """One household per load (ids ``H01``…, zero-padded so string order is load order)."""
    by_bus: dict[int, list[int]] = defaultdict(list)
    for i, load in enumerate(feeder.loads):
        by_bus[load.bus].append(i)
    sgens: dict[int, list[int]] = defaultdict(list)
    for i, sgen in enumerate(feeder.sgens):
        sgens[sgen.bus].append(i)
    storages: dict[int, list[int]] = defaultdict(list)
    for i, unit in enumerate(feeder.storages):
        storages[unit.bus].append(i)
    width = len(str(len(feeder.loads)))
    out = []
    for i, load in enumerate(feeder.loads):
        share = 1.0 / len(by_bus[load.bus])
        out.append(
            Household(
                f"H{i + 1:0{width}d}",
                load.bus,
                (i,),
                tuple((s, share) for s in sgens[load.bus]),
                tuple((s, share) for s in storages[load.bus]),
            )
        )
    orphans = sorted((set(sgens) | set(storages)) - set(by_bus))
    for bus in orphans:
        out.append(
            Household(
                f"P{bus}",
                bus,
                (),
                tuple((s, 1.0) for s in sgens[bus]),
                tuple((s, 1.0) for s in storages[bus]),
            )
        )
    return out


def base_pairs(
    homes: Sequence[Household], network: Network, distances: np.ndarray, k: int
) -> list[tuple[str, str]]:
    """The day's pairs: each household with its ``k`` nearest households, and with both grid
    agents. Each pair once, in the order of the agent list (households, then grid agents)."""
    order = {h.id: i for i, h in enumerate(homes)}
    chosen: set[tuple[str, str]] = set()
    for h in homes:
        col = network.bus_index(h.bus)
        others = sorted(
            (o for o in homes if o.id != h.id),
            key=lambda o: (float(distances[col, network.bus_index(o.bus)]), o.id),
        )
        for o in others[:k]:
            chosen.add((h.id, o.id) if order[h.id] < order[o.id] else (o.id, h.id))
    pairs = sorted(chosen, key=lambda p: (order[p[0]], order[p[1]]))
    return pairs + [(h.id, g) for h in homes for g in GRID_AGENTS]


def can_trade(pmin_a: float, pmax_a: float, pmin_b: float, pmax_b: float) -> bool:
    """Two agents can trade unless both only sell or both only buy (the scenario's roles)."""
    sells_only = (pmin_a >= 0, pmin_b >= 0)
    buys_only = (pmax_a <= 0, pmax_b <= 0)
    return not (all(sells_only) or all(buys_only))


def interval_pairs(
    pairs: Sequence[tuple[str, str]], bounds: dict[str, tuple[float, float]]
) -> list[tuple[str, str]]:
    """The day's pairs that trade in an interval: both agents take part (are in ``bounds``)
    and their roles can trade."""
    return [
        (n, m)
        for n, m in pairs
        if n in bounds and m in bounds and can_trade(*bounds[n], *bounds[m])
    ]
