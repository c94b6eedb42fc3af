"""A day on a feeder, in process: every interval's market cleared, warm-started, recorded.

``privgrid solve DAY.toml --out DIR`` runs :func:`prepare_day` (every check, before anything
is written) and :func:`run_day`. The run folder:

- ``grid.m``: the feeder as a MATPOWER case, buses 1..n;
- ``feeder.json``: the feeder's buses (with coordinates), branches (ratings, SimBench names)
  and elements — what the plots and later tools read instead of SimBench;
- ``intervals/NNNN/scenario.toml``: the interval's market as an ordinary, self-contained
  scenario (``privgrid solve`` accepts it as it is), and ``results.json`` in the ordinary
  results schema;
- ``day.json`` and ``day.csv``: per agent its bus and SimBench elements; per interval its
  start, rounds (warm and cold), welfare and gap, volumes, congestion rent, loading, the AC
  check and the ledger block, and each household's load, PV and net injection;
- ``keys/`` and ``ledger.sqlite``: one genesis, then one block per interval;
- ``plots/``: :mod:`privgrid.feeder.plots`.

Units: kW of average power over the interval; prices per kWh (agents' costs are rates per
hour, so the market's prices are per kWh whatever the interval length); money per interval
(rate × hours) in day.json and day.csv; energy in kWh. ``results.json`` and the ledger's
blocks keep the market's own units: prices per kWh and amounts per hour at the interval's
average power (multiply by ``interval_minutes / 60`` for the interval's money).
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from privgrid.feeder.acflow import ACCheck
from privgrid.feeder.agents import (
    FEEDIN,
    GRID_AGENTS,
    RETAIL,
    Household,
    base_pairs,
    households,
)
from privgrid.feeder.feeder import Feeder, Window, window
from privgrid.feeder.intervals import (
    IntervalInputs,
    grid_offers,
    household_offers,
    interval_scenario,
    label,
)
from privgrid.feeder.ledger import DayLedger, Registration, envelope
from privgrid.feeder.matpower import write_case
from privgrid.feeder.schema import DayScenario, load_day, parse_day, read_toml
from privgrid.feeder.simbench import SimbenchError, Source, load_source
from privgrid.grid.distance import electrical_distances
from privgrid.grid.network import Network, name_branches
from privgrid.market.central import InfeasibleMarketError
from privgrid.market.feasibility import check_feasible
from privgrid.market.negotiation import NegotiationState, negotiate
from privgrid.market.setup import MarketSetup, agent_costs, build_setup, played_costs
from privgrid.market.warm import carry_over
from privgrid.results import CONVERGED, NOT_CONVERGED
from privgrid.runfolder import write_atomic
from privgrid.scenario import ScenarioError, parse_scenario
from privgrid.solve import clear

DAY_SCHEMA = 1
GRID_CASE = "grid.m"
#: What every interval is held to (docs/feeder.md): the relative welfare gap and the overload.
GAP_TARGET = 1e-4
OVERLOAD_TARGET_KW = 1e-3


@dataclass
class PreparedDay:
    """A checked day: everything :func:`run_day` needs, nothing written yet."""

    day: DayScenario
    source: Source
    homes: list[Household]
    window: Window
    network: Network
    line_names: list[str]  # in the feeder's branch order
    limits: dict[str, float]
    pairs: list[tuple[str, str]]
    intervals: list[IntervalInputs]
    buses: dict[str, int]  # agent id → bus number

    @property
    def feeder(self) -> Feeder:
        return self.source.feeder


def feeder_network(feeder: Feeder) -> Network:
    """The DC network of ``feeder``, exactly as ``grid.m`` loads (same naming rule)."""
    rows = [(br.from_bus, br.to_bus, br.x_pu, 1.0) for br in feeder.branches]
    buses = tuple(b.number for b in feeder.buses)
    return Network(Path(GRID_CASE).stem, buses, feeder.slack, name_branches(rows))


def branch_names(feeder: Feeder) -> list[str]:
    """Each feeder branch's name in the network, in the feeder's order: the rule of
    :func:`~privgrid.grid.network.name_branches` (``"<from>-<to>"``; sorted by the two buses,
    a parallel branch ``#2`` in input order)."""
    order = sorted(
        range(len(feeder.branches)),
        key=lambda i: (feeder.branches[i].from_bus, feeder.branches[i].to_bus),
    )
    seen: dict[tuple[int, int], int] = {}
    names = [""] * len(feeder.branches)
    for i in order:
        br = feeder.branches[i]
        count = seen.get((br.from_bus, br.to_bus), 0) + 1
        seen[(br.from_bus, br.to_bus)] = count
        names[i] = f"{br.from_bus}-{br.to_bus}" + (f"#{count}" if count > 1 else "")
    return names


def prepare_day(path: str | Path, privacy: str | None = None) -> PreparedDay:
    """Load and check a day scenario: the SimBench code, the window, every household's offer
    in every interval. ``privacy``: ``privgrid run --privacy``'s override of the mode.
    Raises :class:`ScenarioError` naming file, field and reason."""
    if privacy is None:
        day = load_day(path)
    else:
        data = read_toml(path)
        data.setdefault("privacy", {})["mode"] = privacy
        day = parse_day(data, f"{path} with --privacy {privacy}")
    try:
        source = load_source(day.network.code)
    except SimbenchError as exc:
        raise ScenarioError.single(day.source, "network.case", str(exc)) from None
    feeder = source.feeder
    d = day.day
    win = window(
        source.year,
        d.start,
        d.intervals,
        d.interval_minutes,
        load_scale=d.load_scale,
        pv_scale=d.pv_scale,
    )
    homes = households(feeder)
    network = feeder_network(feeder)
    names = branch_names(feeder)
    limits = {
        name: br.rating_kva * d.rating_scale
        for name, br in zip(names, feeder.branches, strict=True)
    }
    k = min(day.households.nearest, len(homes) - 1)
    pairs = base_pairs(homes, network, electrical_distances(network), k)
    params = day.household_params()
    storage = {h.id: h.storage_kw(feeder) for h in homes}
    intervals = []
    for t, start in enumerate(win.starts):
        stamp = start.strftime("%Y-%m-%dT%H:%M")
        loads = {h.id: h.load_kw(win.load_kw[t]) for h in homes}
        pv = {h.id: h.pv_kw(win.sgen_kw[t]) for h in homes}
        offers = household_offers(day, homes, storage, loads, pv, t + 1, stamp, params)
        offers.update(grid_offers(day, offers))
        intervals.append(IntervalInputs(t + 1, stamp, loads, pv, offers))
    buses = {h.id: h.bus for h in homes} | {g: feeder.slack for g in GRID_AGENTS}
    return PreparedDay(day, source, homes, win, network, names, limits, pairs, intervals, buses)


@dataclass
class Interval:
    """One interval's market, built and checked."""

    inputs: IntervalInputs
    folder: Path
    setup: MarketSetup


def _build_intervals(prepared: PreparedDay, out: Path) -> list[Interval]:
    """Write grid.m and every interval's scenario, and check each as ``privgrid solve``
    would (fields, network, feasibility)."""
    write_case(prepared.feeder, out / GRID_CASE)
    built = []
    for inputs in prepared.intervals:
        folder = out / "intervals" / label(inputs.index)
        folder.mkdir(parents=True)
        doc = interval_scenario(
            prepared.day,
            inputs,
            prepared.buses,
            prepared.pairs,
            prepared.limits,
            f"../../{GRID_CASE}",
        )
        path = folder / "scenario.toml"
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
        scenario = parse_scenario(doc, path)
        setup = build_setup(scenario)
        try:
            check_feasible(setup, agent_costs(scenario))
        except InfeasibleMarketError as exc:
            raise ScenarioError.single(
                prepared.day.source,
                "day",
                f"interval {label(inputs.index)} ({inputs.start}) cannot clear: {exc}",
            ) from None
        built.append(Interval(inputs, folder, setup))
    return built


def prepare_folder(prepared: PreparedDay, out: Path) -> list[Interval]:
    """What both ways of clearing a day write before the first interval clears: the run folder
    ``out`` (new or empty) with ``grid.m``, every interval's scenario (each checked as
    ``privgrid solve`` would, feasibility included) and ``feeder.json``.

    Raises:
        ScenarioError: ``out`` is not empty, or an interval's market cannot clear; what was
            written is removed again.
    """
    if out.exists() and any(out.iterdir()):
        raise ScenarioError.single(out, "--out", "the run folder exists and is not empty")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        intervals = _build_intervals(prepared, out)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():  # it was empty: everything here is ours
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise
    feeder = prepared.feeder
    write_atomic(out / "feeder.json", json.dumps(feeder.to_dict(), indent=1) + "\n")
    return intervals


def registrations(prepared: PreparedDay, intervals: Sequence[Interval]) -> list[Registration]:
    """Every agent of the day as genesis registers it: its bus and the envelope of its bounds
    over the intervals it takes part in (households first, then the grid agents)."""
    agent_ids = [h.id for h in prepared.homes] + list(GRID_AGENTS)
    bounds = envelope(
        [{a.id: (a.pmin, a.pmax) for a in i.setup.scenario.agents} for i in intervals]
    )
    return [
        Registration(aid, prepared.buses[aid], *bounds[aid]) for aid in agent_ids if aid in bounds
    ]


def run_day(
    prepared: PreparedDay,
    out: Path,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Clear every interval into the run folder ``out`` (new or empty); return day.json.

    A failure before the first interval clears (a market that cannot clear) removes what
    was written and raises :class:`ScenarioError`.
    """
    intervals = prepare_folder(prepared, out)
    day = prepared.day
    ledger = DayLedger(out, day.name, registrations(prepared, intervals), day.ledger.quorum)
    ac = ACCheck(prepared.source.net_path, prepared.feeder)
    rows: list[dict[str, Any]] = []
    cleared: list[tuple[MarketSetup, NegotiationState]] = []  # the last two intervals'
    started = time.perf_counter()
    try:
        for interval in intervals:
            row, state = _clear_interval(prepared, interval, cleared[-2:], ledger, ac)
            cleared = [*cleared[-1:], (interval.setup, state)]
            rows.append(row)
            if progress is not None:
                progress(row)
    finally:
        ledger.close()
    return write_day(prepared, out, rows, time.perf_counter() - started, plots=plots)


def write_day(
    prepared: PreparedDay,
    out: Path,
    rows: list[dict[str, Any]],
    wall: float,
    *,
    plots: bool = True,
) -> dict[str, Any]:
    """``day.json``, ``day.csv`` and ``plots/`` of a cleared day (both ways); day.json's
    content is returned."""
    document = _day_document(prepared, rows, wall)
    write_atomic(out / "day.json", json.dumps(document, indent=1, allow_nan=False) + "\n")
    _write_csv(out / "day.csv", rows)
    if plots:
        from privgrid.feeder.plots import write_day_plots

        write_day_plots(out / "plots", document, prepared.feeder, prepared.line_names)
    return document


def _clear_interval(
    prepared: PreparedDay,
    interval: Interval,
    cleared: list[tuple[MarketSetup, NegotiationState]],
    ledger: DayLedger,
    ac: ACCheck,
) -> tuple[dict[str, Any], NegotiationState]:
    """``cleared``: the previous interval's setup and final state, after the one before it's
    (none for the first interval, one for the second)."""
    day = prepared.day
    setup = interval.setup
    t0 = time.perf_counter()
    initial = None
    if day.day.warm_start and cleared:
        before = cleared[-2] if len(cleared) == 2 else None
        initial = carry_over(*cleared[-1], setup, before)
    results, state = clear(setup, initial=initial)
    cold_rounds: int | None = results["rounds"] if initial is None else None
    if initial is not None and day.day.measure_cold:
        cold_rounds = cold_start_rounds(setup)
    write_atomic(
        interval.folder / "results.json",
        json.dumps(results, indent=2, allow_nan=False) + "\n",
    )
    ok = bool(results["converged"] and results["kkt"]["passed"])
    if ok:
        block = ledger.record(setup, state, results["rounds"], label(interval.inputs.index))
    else:
        block = NO_BLOCK
    row = interval_row(
        prepared,
        interval.inputs,
        results,
        ac,
        warm=initial is not None,
        cold_rounds=cold_rounds,
        block=block,
        time_s=time.perf_counter() - t0,
    )
    return row, state


#: day.json's ``ledger`` of an interval without a block.
NO_BLOCK: dict[str, Any] = {
    "height": None,
    "block": None,
    "committed": False,
    "decision": "no block: the interval did not converge or failed its checks",
}


def cold_start_rounds(setup: MarketSetup) -> int:
    """The rounds the interval's market takes from round 0 (``[day] measure_cold``)."""
    return negotiate(setup, played_costs(setup.scenario)).rounds


def interval_row(
    prepared: PreparedDay,
    inputs: IntervalInputs,
    results: Mapping[str, Any],
    ac: ACCheck,
    *,
    warm: bool,
    cold_rounds: int | None,
    block: Mapping[str, Any],
    time_s: float,
) -> dict[str, Any]:
    """day.json's row of one interval from its results (the ordinary schema, the optimum
    filled in), whoever cleared it: volumes, loading, the AC check, the households' figures.
    """
    day = prepared.day
    hours = day.day.hours
    flows = {ln["id"]: ln for ln in results["lines"]}
    dc = [flows[name]["flow"] for name in prepared.line_names]
    limits = [prepared.limits[name] for name in prepared.line_names]
    net = {a["id"]: a["total"] for a in results["agents"]}
    injections: dict[int, tuple[float, float]] = {}
    for h, kvar in zip(prepared.homes, _household_kvar(prepared, inputs.index - 1), strict=True):
        p, q = injections.get(h.bus, (0.0, 0.0))
        injections[h.bus] = (p + net.get(h.id, 0.0), q - kvar)
    ac_row = ac.run(injections, dc, limits)
    volumes = _volumes(results, hours)
    loading = [abs(f) / lim * 100 for f, lim in zip(dc, limits, strict=True)]
    overload = max(max(abs(f) - lim, 0.0) for f, lim in zip(dc, limits, strict=True))
    theta = {a["id"]: a["theta"] for a in results["agents"]}
    homes = {
        h.id: {
            "load_kw": inputs.load_kw[h.id],
            "pv_kw": inputs.pv_kw[h.id],
            "preferred_kw": inputs.offers[h.id].preferred,
            "net_kw": net.get(h.id, 0.0),
            "price": theta.get(h.id),
            "active": h.id in net,
        }
        for h in prepared.homes
    }
    return {
        "index": inputs.index,
        "start": inputs.start,
        "converged": results["converged"],
        "kkt_passed": results["kkt"]["passed"],
        "warm": warm,
        "rounds": results["rounds"],
        "cold_rounds": cold_rounds,
        "welfare": results["social_welfare"] * hours,
        "optimal_welfare": _scaled(results["optimal_social_welfare"], hours),
        "welfare_gap": results["welfare_gap"],
        "welfare_loss": _loss(results, hours),
        **volumes,
        "max_loading_pct": max(loading, default=0.0),
        "max_overload_kw": overload,
        "grid_kw": {g: net.get(g, 0.0) for g in GRID_AGENTS},
        "time_s": time_s,
        "ac": ac_row,
        "ledger": dict(block),
        "line_flows_kw": dict(zip(prepared.line_names, dc, strict=True)),
        "households": homes,
    }


def _loss(results: Mapping[str, Any], hours: float) -> float | None:
    """The optimum's welfare minus the cleared one, money per interval (absolute)."""
    best = results["optimal_social_welfare"]
    return None if best is None else (best - results["social_welfare"]) * hours


def _scaled(value: float | None, hours: float) -> float | None:
    return None if value is None else value * hours


def _household_kvar(prepared: PreparedDay, t: int) -> list[float]:
    kvar = prepared.window.load_kvar[t]
    return [float(sum(kvar[i] for i in h.loads)) for h in prepared.homes]


def _volumes(results: Mapping[str, Any], hours: float) -> dict[str, Any]:
    """Energy traded locally and with the grid (kWh), the local price (per kWh) and the
    congestion rent (money per interval).

    From net positions, which the optimum fixes (its split into bilateral trades is not
    unique: prosumers may pass energy along): imports are what RETAIL sells, exports what
    FEEDIN buys, and the local volume is what households sell to other households,
    ``Σ max(0, p_h) − exports``. The local price is the volume-weighted price of the trades
    between households; the rent is ``Σ (c_seller − c_buyer) P`` over all trades.
    """
    totals = {a["id"]: a["total"] for a in results["agents"]}
    imported = max(0.0, totals.get(RETAIL, 0.0))
    exported = max(0.0, -totals.get(FEEDIN, 0.0))
    sold = sum(max(0.0, v) for k, v in totals.items() if k not in GRID_AGENTS)
    local = max(0.0, sold - exported)
    volume = value = rent = 0.0
    for t in results["trades"]:
        power = t["power"]
        if t["seller"] not in GRID_AGENTS and t["buyer"] not in GRID_AGENTS:
            volume += power
            value += power * t["price"]
        rent += 2.0 * t["charge"] * power
    return {
        "local_kwh": local * hours,
        "import_kwh": imported * hours,
        "export_kwh": exported * hours,
        "local_price": value / volume if volume > 1e-9 else None,
        "congestion_rent": rent * hours,
    }


def _median(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None


def _day_document(prepared: PreparedDay, rows: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    day = prepared.day
    feeder = prepared.feeder
    agents: list[dict[str, Any]] = [
        {
            "id": h.id,
            "kind": "household",
            "bus": h.bus,
            "elements": h.elements(feeder),
            "storage_kw": h.storage_kw(feeder),
        }
        for h in prepared.homes
    ]
    agents += [
        {
            "id": g,
            "kind": "grid-supply",
            "bus": feeder.slack,
            "elements": {"loads": [], "pv": [], "storage": []},
            "storage_kw": 0.0,
        }
        for g in GRID_AGENTS
    ]
    warm = [r["rounds"] for r in rows if r["warm"]]
    cold = [r["cold_rounds"] for r in rows if r["cold_rounds"] is not None]
    gaps = [abs(r["welfare_gap"]) for r in rows if r["welfare_gap"] is not None]
    ac_errors = [r["ac"]["max_flow_error_kw"] for r in rows if r["ac"].get("converged")]
    summary = {
        "intervals": len(rows),
        "converged": sum(bool(r["converged"]) for r in rows),
        "blocks": sum(bool(r["ledger"]["committed"]) for r in rows),
        "max_welfare_gap": max(gaps, default=None),
        "max_welfare_loss": max(
            (abs(r["welfare_loss"]) for r in rows if r["welfare_loss"] is not None), default=None
        ),
        "max_overload_kw": max((r["max_overload_kw"] for r in rows), default=0.0),
        "within_targets": all(
            r["welfare_gap"] is not None
            and abs(r["welfare_gap"]) <= GAP_TARGET
            and r["max_overload_kw"] <= OVERLOAD_TARGET_KW
            for r in rows
        ),
        "median_rounds_warm": _median(warm),
        "median_rounds_cold": _median(cold),
        "warm_over_cold": (
            statistics.median(warm) / statistics.median(cold)
            if warm and cold and _median(cold)
            else None
        ),
        "local_kwh": sum(r["local_kwh"] for r in rows),
        "import_kwh": sum(r["import_kwh"] for r in rows),
        "export_kwh": sum(r["export_kwh"] for r in rows),
        "congestion_rent": sum(r["congestion_rent"] for r in rows),
        "peak_loading_pct": max((r["max_loading_pct"] for r in rows), default=0.0),
        "ac_max_flow_error_kw": max(ac_errors, default=None),
        "ac_max_loading_pct": max(
            (r["ac"]["max_loading_pct"] for r in rows if r["ac"].get("converged")), default=None
        ),
        "ac_vm_min_pu": min(
            (r["ac"]["vm_min_pu"] for r in rows if r["ac"].get("converged")), default=None
        ),
        "time_s": wall,
    }
    d = day.day
    cleared = summary["converged"] == summary["blocks"] == len(rows) == d.intervals
    return {
        "schema": DAY_SCHEMA,
        "scenario": day.name,
        # As a single run's results.json: converged (every interval cleared with its block),
        # not_converged; over the wire also failed or interrupted, with the reason in error.
        "status": CONVERGED if cleared else NOT_CONVERGED,
        "error": None,
        "case": day.network.case,
        "start": d.start.strftime("%Y-%m-%dT%H:%M"),
        "intervals": d.intervals,
        "interval_minutes": d.interval_minutes,
        "warm_start": d.warm_start,
        "units": {
            "power": "kW, average over the interval",
            "energy": "kWh",
            "price": "money per kWh",
            "money": "money per interval (welfare, congestion rent)",
        },
        "parameters": {
            "households": {
                **day.households.model_dump(),
                "reference_price": day.household_params().reference_price,
            },
            "grid_supply": day.grid_supply.model_dump(),
            "rating_scale": d.rating_scale,
            "pv_scale": d.pv_scale,
            "load_scale": d.load_scale,
            "market": day.market.model_dump(exclude={"pairs"}),
        },
        "lines": [
            {"id": name, "limit_kw": prepared.limits[name], "kind": br.kind, "element": br.name}
            for name, br in zip(prepared.line_names, feeder.branches, strict=True)
        ],
        "agents": agents,
        "pairs": [list(p) for p in prepared.pairs],
        "summary": summary,
        "per_interval": rows,
    }


CSV_COLUMNS = (
    "index",
    "start",
    "converged",
    "warm",
    "rounds",
    "cold_rounds",
    "welfare",
    "optimal_welfare",
    "welfare_gap",
    "welfare_loss",
    "local_kwh",
    "import_kwh",
    "export_kwh",
    "local_price",
    "congestion_rent",
    "max_loading_pct",
    "max_overload_kw",
    "time_s",
)
AC_COLUMNS = ("max_flow_error_kw", "max_loading_pct", "losses_kw", "vm_min_pu", "vm_max_pu")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CSV_COLUMNS, *(f"ac_{c}" for c in AC_COLUMNS), "block_height"])
        for r in rows:
            writer.writerow(
                [_cell(r[c]) for c in CSV_COLUMNS]
                + [_cell(r["ac"].get(c)) for c in AC_COLUMNS]
                + [_cell(r["ledger"]["height"] if r["ledger"]["committed"] else None)]
            )


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return value
