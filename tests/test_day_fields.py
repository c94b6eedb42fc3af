"""Every key of a day scenario given a bad value: the error names the file, the field and why.

The convention of tests/test_scenario_fields.py for the keys a day scenario adds
(``[day]``, ``[households]``, ``[grid_supply]``, ``network.case = "simbench:<code>"``) and
the ordinary keys it refuses (``[[agents]]``, ``market.pairs``). Each row edits one value of
configs/day-rural1.toml and loads it as ``privgrid solve`` does (:func:`prepare_day`, which
also converts the grid: the rows that get that far use the cached SimBench conversion).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from privgrid.feeder.day import prepare_day
from privgrid.scenario import ScenarioError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DAY = tomllib.loads((CONFIGS / "day-rural1.toml").read_text())
INF = float("inf")

#: (case id, where, bad value, field named in the error, reason the error gives).
CASES: list[tuple[str, tuple[Any, ...], Any, str, str]] = [
    ("network.case", ("network", "case"), "ieee14", "network.case", "should match pattern"),
    (
        "network.case-unknown",
        ("network", "case"),
        "simbench:1-LV-rural9--2-sw",
        "network.case",
        "valid LV and MV codes: 1-MV-rural--0-sw, 1-MV-rural--0-no_sw,",
    ),
    (
        "day.start",
        ("day", "start"),
        "2017-03-01T00:00",
        "day.start",
        "must lie in the profile year, 2016-01-01T00:00 … 2016-12-31T23:45 (got 2017-03-01T00:00)",
    ),
    ("day.start-early", ("day", "start"), "2015-12-31T23:45", "day.start", "profile year"),
    ("day.start-boundary", ("day", "start"), "2016-06-21T00:05", "day.start", "15-minute"),
    ("day.start-type", ("day", "start"), "noon", "day.start", "valid datetime"),
    ("day.intervals", ("day", "intervals"), 0, "day.intervals", "greater than or equal to 1"),
    (
        "day.intervals-past",
        ("day",),
        {"start": "2016-12-31T00:00", "intervals": 97},
        "day.intervals",
        "must be in 1 … 96: 97 intervals of 15 minutes from 2016-12-31T00:00 run past the end "
        "of the profile year (2017-01-01T00:00)",
    ),
    ("day.interval_minutes", ("day", "interval_minutes"), 20, "day.interval_minutes", "15, 30"),
    ("day.warm_start", ("day", "warm_start"), "yes", "day.warm_start", "valid boolean"),
    ("day.measure_cold", ("day", "measure_cold"), 1, "day.measure_cold", "valid boolean"),
    ("day.rating_scale", ("day", "rating_scale"), 0.0, "day.rating_scale", "greater than 0"),
    ("day.pause_s", ("day", "pause_s"), -1.0, "day.pause_s", "greater than or equal to 0"),
    ("day.pv_scale", ("day", "pv_scale"), -1.0, "day.pv_scale", "greater than or equal to 0"),
    ("day.load_scale", ("day", "load_scale"), INF, "day.load_scale", "finite"),
    ("day.unknown", ("day", "length"), 3, "day.length", "unknown key"),
    (
        "households.flexible_share",
        ("households", "flexible_share"),
        1.0,
        "households.flexible_share",
        "less than 1",
    ),
    (
        "households.flex_price",
        ("households", "flex_price"),
        0.0,
        "households.flex_price",
        "greater than 0",
    ),
    (
        "households.reference_price",
        ("households", "reference_price"),
        "low",
        "households.reference_price",
        "valid number",
    ),
    (
        "households.connection_kw",
        ("households", "connection_kw"),
        -3.0,
        "households.connection_kw",
        "greater than 0",
    ),
    (
        "households.connection_kw-too-small",
        ("households", "connection_kw"),
        5.0,
        "households",
        "household H25 (bus 6) in interval 0023 (2016-06-21T05:30): preferred net injection "
        "5.024 kW (PV 5.024 − load 0) lies outside its bounds [0, 5] kW (connection_kw = 5)",
    ),
    (
        "households.nearest",
        ("households", "nearest"),
        -1,
        "households.nearest",
        "greater than or equal to 0",
    ),
    (
        "grid_supply.retail_price",
        ("grid_supply", "retail_price"),
        INF,
        "grid_supply.retail_price",
        "finite",
    ),
    (
        "grid_supply.feed_in_price",
        ("grid_supply", "feed_in_price"),
        0.5,
        "grid_supply.feed_in_price",
        "must not exceed retail_price (0.5 > 0.3)",
    ),
    (
        "grid_supply.curvature",
        ("grid_supply", "curvature"),
        0.0,
        "grid_supply.curvature",
        "greater than 0",
    ),
    (
        "market.pairs",
        ("market", "pairs"),
        "sellers-buyers",
        "market.pairs",
        "come from the grid (households.nearest)",
    ),
    ("agents", ("agents",), [{"id": "S1"}], "agents", "come from the grid: remove [[agents]]"),
    ("day-missing", ("day",), None, "day", "required field is missing"),
    ("households-type", ("households",), 3, "households", "must be a table (got 3)"),
    ("grid_supply-type", ("grid_supply",), "x", "grid_supply", "must be a table (got 'x')"),
]


def bad_day(tmp_path: Path, where: tuple[Any, ...], value: Any) -> Path:
    data = copy.deepcopy(DAY)
    node: Any = data
    for key in where[:-1]:
        node = node.setdefault(key, {})
    last = where[-1]
    if value is None:
        node.pop(last, None)
        if last == "day":  # still a day file to the loader: keep the [day] marker absent
            data["day"] = {}
            del data["day"]
    elif isinstance(value, dict):
        node.setdefault(last, {}).update(value)
    else:
        node[last] = value
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.mark.parametrize(
    ("where", "value", "field", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES if case[0] != "day-missing"],
)
def test_a_bad_day_value_is_reported_with_file_field_and_reason(
    tmp_path, where, value, field, reason
):
    path = bad_day(tmp_path, where, value)
    with pytest.raises(ScenarioError) as info:
        prepare_day(path)
    lines = str(info.value).splitlines()
    prefix = f"{path}: {field}: "
    named = [line for line in lines if line.startswith(prefix)]
    assert named, f"no line starts with {prefix!r}: {lines}"
    assert any(reason in line.removeprefix(prefix) for line in named), (reason, named)


def test_a_day_section_without_its_keys_names_them():
    from privgrid.feeder.schema import parse_day

    data = copy.deepcopy(DAY)
    data["day"] = {}
    with pytest.raises(ScenarioError) as info:
        parse_day(data, "x.toml")
    assert "x.toml: day.start: required field is missing" in str(info.value)
    assert "x.toml: day.intervals: required field is missing" in str(info.value)


def test_every_day_key_has_a_case():
    from privgrid.feeder.schema import (
        DayNetwork,
        DaySection,
        GridSupplySection,
        HouseholdsSection,
    )

    sections = {
        "network": DayNetwork,
        "day": DaySection,
        "households": HouseholdsSection,
        "grid_supply": GridSupplySection,
    }
    keys = {f"{name}.{key}" for name, model in sections.items() for key in model.model_fields}
    covered = {case[0].split("-")[0] for case in CASES}
    missing = sorted(k for k in keys if k not in covered)
    assert not missing, f"no bad-value case for {missing}"
