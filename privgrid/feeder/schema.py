"""Day scenario files: a feeder, a time window, the household model and the grid prices.

A day scenario is an ordinary scenario file with a ``[day]`` section, ``network.case =
"simbench:<code>"`` and no ``[[agents]]`` (they come from the grid). Its ``[market]``,
``[privacy]``, ``[timeouts]`` and ``[ledger]`` sections are the ordinary ones and are copied
into every interval's scenario; ``market.pairs`` is not allowed (pairs come from
``households.nearest``). Errors look like the ordinary loader's: ``<file>: day.intervals:
<reason>``. docs/scenarios.md documents every key and default.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from privgrid.feeder.feeder import STEP_MINUTES, YEAR_END, YEAR_START
from privgrid.feeder.household import HouseholdParams
from privgrid.scenario import (
    FieldValueError,
    LedgerSection,
    MarketSection,
    PrivacySection,
    ScenarioError,
    ScenarioInfo,
    StrictBool,
    TimeoutsSection,
)
from privgrid.scenario.errors import pydantic_errors
from privgrid.scenario.validation import read_toml

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Price = Annotated[float, Field(allow_inf_nan=False)]
_LAST_START = YEAR_END - timedelta(minutes=STEP_MINUTES)


class _Strict(BaseModel):
    """Unknown keys are errors and a loaded scenario does not change (as privgrid.scenario's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M")


class DayNetwork(_Strict):
    case: Annotated[str, Field(pattern=r"^simbench:\S+$")]

    @property
    def code(self) -> str:
        return self.case.removeprefix("simbench:")


class DaySection(_Strict):
    """The window of the profile year to clear, and how to scale the grid's data."""

    start: datetime
    intervals: Annotated[int, Field(ge=1)]
    interval_minutes: Literal[15, 30, 60] = 15
    warm_start: StrictBool = True
    #: Over the wire: seconds the MO waits after an interval's block before it opens the
    #: next interval — the idle time a real deployment has until the next quarter hour, in
    #: which Paillier pools fill (docs/feeder.md). 0: back to back. In process: ignored.
    pause_s: NonNegative = 0.0
    measure_cold: StrictBool = False
    rating_scale: Positive = 1.0
    pv_scale: NonNegative = 1.0
    load_scale: NonNegative = 1.0

    @field_validator("start")
    @classmethod
    def _in_profile_year(cls, value: datetime) -> datetime:
        if value.tzinfo is not None:
            raise ValueError("must be a local time (no time zone): the profiles' own clock")
        if not YEAR_START <= value <= _LAST_START:
            raise ValueError(
                f"must lie in the profile year, {_iso(YEAR_START)} … {_iso(_LAST_START)} "
                f"(got {_iso(value)})"
            )
        if (value - YEAR_START) % timedelta(minutes=STEP_MINUTES):
            raise ValueError(f"must be on a {STEP_MINUTES}-minute boundary (got {value})")
        return value

    @model_validator(mode="after")
    def _fits_the_year(self) -> DaySection:
        room = (YEAR_END - self.start) // timedelta(minutes=self.interval_minutes)
        if self.intervals > room:
            raise FieldValueError(
                "intervals",
                f"must be in 1 … {room}: {self.intervals} intervals of {self.interval_minutes} "
                f"minutes from {_iso(self.start)} run past the end of the profile year "
                f"({_iso(YEAR_END)})",
            )
        return self

    @property
    def hours(self) -> float:
        """The length of one interval in hours (money per interval = rate × hours)."""
        return self.interval_minutes / 60.0


class HouseholdsSection(_Strict):
    """The household model (privgrid/feeder/household.py) and the pairing."""

    flexible_share: Annotated[float, Field(ge=0, lt=1)] = 0.2
    flex_price: Positive = 0.2
    #: None: midway between the feed-in and the retail price.
    reference_price: Price | None = None
    connection_kw: Positive | None = None
    nearest: Annotated[int, Field(ge=0)] = 3


class GridSupplySection(_Strict):
    """The two grid-supply agents at the external grid (per kWh)."""

    retail_price: Price = 0.30
    feed_in_price: Price = 0.08
    curvature: Positive = 1e-4

    @model_validator(mode="after")
    def _spread(self) -> GridSupplySection:
        if self.feed_in_price > self.retail_price:
            raise FieldValueError(
                "feed_in_price",
                f"must not exceed retail_price ({self.feed_in_price} > {self.retail_price}): "
                "the grid would pay more for energy than it charges",
            )
        return self


class DayScenario(_Strict):
    scenario: ScenarioInfo
    network: DayNetwork
    day: DaySection
    households: HouseholdsSection = HouseholdsSection()
    grid_supply: GridSupplySection = GridSupplySection()
    market: MarketSection = MarketSection()
    privacy: PrivacySection = PrivacySection()
    timeouts: TimeoutsSection = TimeoutsSection()
    ledger: LedgerSection = LedgerSection()
    source: Path = Field(default=Path("<memory>"), exclude=True)

    @model_validator(mode="after")
    def _pause_below_the_silence(self) -> DayScenario:
        silence = self.timeouts.round + self.timeouts.finish
        if self.day.pause_s >= silence:
            raise FieldValueError(
                "day.pause_s",
                f"must be shorter than timeouts.round + timeouts.finish ({silence:g} s): "
                "participants give up after that long without a word between intervals",
            )
        return self

    @model_validator(mode="after")
    def _no_pairs(self) -> DayScenario:
        if "pairs" in self.market.model_fields_set:
            raise FieldValueError(
                "market.pairs",
                "a day's pairs come from the grid (households.nearest), not market.pairs",
            )
        return self

    @property
    def name(self) -> str:
        return self.scenario.name

    def household_params(self) -> HouseholdParams:
        h, g = self.households, self.grid_supply
        reference = h.reference_price
        if reference is None:
            reference = 0.5 * (g.retail_price + g.feed_in_price)
        return HouseholdParams(h.flexible_share, h.flex_price, reference, h.connection_kw)


def is_day(data: dict[str, Any]) -> bool:
    """Whether a parsed scenario document is a day scenario (it has a ``[day]`` section)."""
    return "day" in data


def parse_day(data: dict[str, Any], file: str | Path = "<memory>") -> DayScenario:
    file = str(file)
    if "agents" in data:
        raise ScenarioError.single(
            file, "agents", "a day scenario's agents come from the grid: remove [[agents]]"
        )
    try:
        return DayScenario.model_validate({**data, "source": Path(file)})
    except ValidationError as exc:
        raise ScenarioError(pydantic_errors(exc, data, file)) from None


def load_day(path: str | Path) -> DayScenario:
    """Read and validate a day scenario; raise :class:`ScenarioError` naming file and field."""
    return parse_day(read_toml(path), path)
