"""A day over the wire, the parts outside every participant: the plan and the evaluation.

``privgrid run DAY.toml`` prepares the run folder exactly as ``privgrid solve DAY.toml`` does
(:func:`~privgrid.feeder.day.prepare_folder`: ``grid.m``, every interval's scenario, checked
before anything starts), adds the identity keys and ``plan.json`` (:func:`write_plan`), and
starts one long-lived process per participant (:mod:`privgrid.launcher`). The MO writes each
interval's ``results.json`` as soon as the interval is committed, with what the protocol knows;
afterwards the evaluator — the simulation's oracle, which reads the private costs, SimBench and
pandapower, none of which a participant may — completes each interval with the centralised
optimum and the AC check, and writes day.json, day.csv and the plots with the same code as the
in-process day (:func:`evaluate_day`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from privgrid.feeder.acflow import ACCheck
from privgrid.feeder.day import (
    DAY_SCHEMA,
    NO_BLOCK,
    Interval,
    PreparedDay,
    cold_start_rounds,
    interval_row,
    registrations,
    write_day,
)
from privgrid.keys import init_participant_keys
from privgrid.market.central import InfeasibleMarketError, solve_central
from privgrid.market.setup import agent_costs
from privgrid.report import write_atomic
from privgrid.results import (
    CONVERGED,
    FAILED,
    INTERRUPTED,
    NOT_CONVERGED,
    dumps,
    optimal_block,
)
from privgrid.roles.dayplan import DayPlan
from privgrid.runtime import EXIT_INTERRUPTED, EXIT_NOT_CONVERGED, EXIT_OK
from privgrid.scenario import LM_ID, MO_ID

KEYS = "keys"


def write_plan(
    prepared: PreparedDay, out: Path, intervals: Sequence[Interval], keys: Path | None = None
) -> DayPlan:
    """The day's identity keys (``keys`` or ``out/keys/``, made once for the day; existing
    keys that match their roster are kept) and ``out/plan.json``."""
    agents = registrations(prepared, intervals)
    ids = {a.id for a in agents}
    pairs = [p for p in prepared.pairs if set(p) <= ids]  # households that trade at all
    init_participant_keys([*(a.id for a in agents), LM_ID, MO_ID], keys or out / KEYS)
    day = prepared.day
    plan = DayPlan.of_folder(
        out,
        name=day.name,
        warm_start=day.day.warm_start,
        quorum=day.ledger.quorum,
        agents=agents,
        pairs=pairs,
        intervals=[(i.inputs.start, i.folder / "scenario.toml") for i in intervals],
    )
    plan.write()
    return plan


def with_optimum(interval: Interval, results: Mapping[str, Any]) -> dict[str, Any]:
    """``results`` of a run (what the protocol knows) completed by the evaluator: the
    centralised optimum, the welfare gap and each agent's optimal total."""
    setup = interval.setup
    done = dict(results)
    if not results.get("trades") or results.get("social_welfare") is None:
        return done
    try:
        central = solve_central(setup, agent_costs(setup.scenario))
    except InfeasibleMarketError:
        return done
    welfare = float(results["social_welfare"])
    done["optimal_social_welfare"] = central.welfare
    done["welfare_gap"] = (central.welfare - welfare) / max(abs(central.welfare), 1e-12)
    done["optimal"] = optimal_block(central.theta, central.line_prices)
    agents = [dict(a) for a in results["agents"]]
    for row, total in zip(agents, central.totals, strict=True):
        row["optimal_total"] = float(total)
    done["agents"] = agents
    done.setdefault("timings", {})["central_s"] = central.solve_time
    return done


def read_results(path: Path) -> dict[str, Any] | None:
    """An interval's results.json, or None (absent, or not a whole JSON object yet)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and "status" in value else None


def evaluate_day(
    prepared: PreparedDay,
    out: Path,
    intervals: Sequence[Interval],
    wall: float,
    *,
    plots: bool = True,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any] | None:
    """The evaluator's pass over a wire day's run folder: each interval's results.json gets
    the optimum, then day.json, day.csv and plots as the in-process day writes them. Only the
    intervals the run recorded whole count (a failed day has fewer: its last interval's
    results.json stays as the MO wrote it); None if there are none."""
    ac = ACCheck(prepared.source.net_path, prepared.feeder)
    warm = prepared.day.day.warm_start
    rows = []
    for interval in intervals:
        path = interval.folder / "results.json"
        results = read_results(path)
        if results is None or results.get("social_welfare") is None:
            break  # not recorded, or not every party's final report in: nothing to judge
        started = time.perf_counter()
        results = with_optimum(interval, results)
        write_atomic(path, dumps(results) + "\n")
        first = interval.inputs.index == 1
        cold = None
        if first or not warm:
            cold = results["rounds"]
        elif prepared.day.day.measure_cold:
            cold = cold_start_rounds(interval.setup)
        ledger = results.get("ledger") or {}
        block = NO_BLOCK
        if ledger.get("committed"):
            block = {k: ledger.get(k) for k in ("height", "block", "committed", "decision")}
        timings = results.get("timings") or {}
        row = interval_row(
            prepared,
            interval.inputs,
            results,
            ac,
            warm=warm and not first,
            cold_rounds=cold,
            block=block,
            time_s=float(timings.get("total_s") or 0.0) + time.perf_counter() - started,
        )
        rows.append(row)
        if progress is not None:
            progress(row)
    if not rows:
        return None
    return write_day(prepared, out, rows, wall, plots=plots)


#: day.json's ``status`` of a wire day by its exit status (as a single run's results.json).
_STATUS = {
    EXIT_OK: CONVERGED,
    EXIT_NOT_CONVERGED: NOT_CONVERGED,
    EXIT_INTERRUPTED: INTERRUPTED,
}


def record_status(
    out: Path, document: dict[str, Any] | None, code: int, reason: str | None
) -> dict[str, Any]:
    """Write the day's ending into ``out/day.json`` (``status`` as a single run's results:
    converged, not_converged, failed, interrupted; ``error`` the one-line reason) and return
    the document. A day that recorded no interval still gets a day.json: its status, its
    error, no rows."""
    if document is None:
        document = {"schema": DAY_SCHEMA, "summary": None, "per_interval": []}
    document = {**document, "status": _STATUS.get(code, FAILED), "error": reason}
    write_atomic(out / "day.json", json.dumps(document, indent=1, allow_nan=False) + "\n")
    return document
