"""A converted feeder as pure data: buses, branches with ratings, elements and their profiles.

Produced once by :mod:`privgrid.feeder.simbench` (which needs pandapower) and read by
everything else (which does not). Buses are numbered 1..n; bus numbers, not pandapower
indices, are what the rest of privgrid uses. Power is in kW, energy in kWh, ratings in kVA.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

#: SimBench's profiles: one year, 2016 (a leap year), in 15-minute steps.
PROFILE_YEAR = 2016
STEP_MINUTES = 15
YEAR_START = datetime(PROFILE_YEAR, 1, 1)
STEPS = 366 * 24 * 60 // STEP_MINUTES  # 35,136
YEAR_END = YEAR_START + timedelta(minutes=STEP_MINUTES * STEPS)


@dataclass(frozen=True)
class Bus:
    number: int  # 1..n
    name: str  # SimBench's bus name
    vn_kv: float
    x: float | None  # coordinates (longitude, latitude in SimBench), None if absent
    y: float | None
    pp_index: int  # the pandapower bus this number stands for (the AC check needs it)


@dataclass(frozen=True)
class Branch:
    """A line or transformer, oriented as pandapower stores it (from-bus, or HV side, first)."""

    from_bus: int
    to_bus: int
    x_pu: float  # series reactance on a 1 MVA base (the DC model needs only this)
    r_pu: float
    rating_kva: float  # line: max_i_ka × vn_kv × √3 × 1000; transformer: sn_mva × 1000
    kind: str  # "line" or "trafo"
    name: str  # SimBench's element name
    pp_index: int


@dataclass(frozen=True)
class Element:
    """A load, static generator or storage unit at a bus."""

    name: str
    bus: int
    profile: str  # SimBench's profile name ("" if none)
    kind: str  # load: its profile family; sgen: its type (PV, Wind, …); storage: its type
    power_kw: float = 0.0  # storage: rated power (sn_mva); sgen: installed power
    energy_kwh: float = 0.0  # storage: max_e_mwh


@dataclass(frozen=True)
class Feeder:
    """One SimBench grid, static data only (profiles are :class:`YearProfiles`)."""

    code: str
    buses: tuple[Bus, ...]
    slack: int  # bus number of the external grid
    branches: tuple[Branch, ...]
    loads: tuple[Element, ...]
    sgens: tuple[Element, ...]
    storages: tuple[Element, ...]

    def bus(self, number: int) -> Bus:
        return self.buses[number - 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "slack": self.slack,
            "buses": [asdict(b) for b in self.buses],
            "branches": [asdict(b) for b in self.branches],
            "loads": [asdict(e) for e in self.loads],
            "sgens": [asdict(e) for e in self.sgens],
            "storages": [asdict(e) for e in self.storages],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Feeder:
        return cls(
            data["code"],
            tuple(Bus(**b) for b in data["buses"]),
            int(data["slack"]),
            tuple(Branch(**b) for b in data["branches"]),
            tuple(Element(**e) for e in data["loads"]),
            tuple(Element(**e) for e in data["sgens"]),
            tuple(Element(**e) for e in data["storages"]),
        )


@dataclass(frozen=True)
class YearProfiles:
    """SimBench's absolute profiles for the whole year, kW (rows: 15-minute steps)."""

    load_kw: np.ndarray  # STEPS × loads
    load_kvar: np.ndarray  # STEPS × loads
    sgen_kw: np.ndarray  # STEPS × sgens


@dataclass(frozen=True)
class Window:
    """The profiles of the day's intervals, averaged to the interval length (kW)."""

    starts: tuple[datetime, ...]
    load_kw: np.ndarray  # intervals × loads
    load_kvar: np.ndarray
    sgen_kw: np.ndarray  # intervals × sgens


def step_of(moment: datetime) -> int:
    """The profile row of ``moment`` (which must lie on a 15-minute boundary)."""
    return int((moment - YEAR_START) / timedelta(minutes=STEP_MINUTES))


def window(
    year: YearProfiles,
    start: datetime,
    intervals: int,
    interval_minutes: int,
    *,
    load_scale: float = 1.0,
    pv_scale: float = 1.0,
) -> Window:
    """Average the 15-minute rows over each interval (15: as is; 30, 60: 2 or 4 rows)."""
    per = interval_minutes // STEP_MINUTES
    first = step_of(start)
    rows = slice(first, first + intervals * per)

    def mean(values: np.ndarray) -> np.ndarray:
        block = values[rows]
        return block.reshape(intervals, per, block.shape[1]).mean(axis=1)

    starts = tuple(start + timedelta(minutes=interval_minutes * i) for i in range(intervals))
    return Window(
        starts,
        mean(year.load_kw) * load_scale,
        mean(year.load_kvar) * load_scale,
        mean(year.sgen_kw) * pv_scale,
    )


def line_rating_kva(max_i_ka: float, vn_kv: float) -> float:
    """A line's thermal rating: ``√3 · V · I`` (kA × kV = MVA, × 1000 = kVA)."""
    return math.sqrt(3.0) * vn_kv * max_i_ka * 1000.0
