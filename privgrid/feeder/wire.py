"""A day over the wire, the parts outside every participant: the plan and the evaluation.

``privgrid run DAY.toml`` prepares the run folder exactly as ``privgrid solve DAY.toml`` does
(:func:`~privgrid.feeder.day.prepare_folder`: ``grid.m``, every interval's scenario, checked
before anything starts), adds the identity keys and ``plan.json`` (:func:`write_plan`), and
starts one long-lived process per participant (:mod:`privgrid.launcher`). The MO writes each
interval's ``protocol.json`` as soon as the interval is committed — protocol data only, as the
MO of a single run; once every process has exited, the evaluator — the simulation's oracle,
which reads the private costs, SimBench and pandapower, none of which a participant may —
makes each interval's ``results.json`` from it with ``privgrid report``'s code (welfare, the
centralised optimum), adds the AC check and writes day.json, day.csv and the plots with the same
code as the in-process day (:func:`evaluate_day`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from privgrid.protocol_record import ProtocolRecord, RecordError
from privgrid.report import build
from privgrid.results import CONVERGED, FAILED, INTERRUPTED, NOT_CONVERGED
from privgrid.roles.dayplan import DayPlan
from privgrid.runfolder import PROTOCOL_FILE, TRACE_FILE, write_atomic, write_results, write_trace
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
        pause_s=day.day.pause_s,
    )
    plan.write()
    return plan


def interval_results(interval: Interval, cold: bool) -> dict[str, Any] | None:
    """The evaluator's results of one interval from the record its MO wrote
    (``protocol.json``), as ``privgrid report`` makes a single run's: written to the
    interval's ``results.json`` and ``trace.csv`` and returned; None if there is no record
    (the interval was never finished). ``cold``: the interval began from zero, so a cold
    replay may reproduce it and give the trace its welfare column.

    Raises:
        RecordError: the record is malformed.
    """
    if not (interval.folder / PROTOCOL_FILE).is_file():
        return None
    record = ProtocolRecord.read(interval.folder)
    results, welfare_trace = build(interval.setup, record, replay=cold)
    write_trace(interval.folder / TRACE_FILE, record.trace, welfare_trace)
    write_results(interval.folder, results)
    return results


@dataclass(frozen=True)
class DayEvaluation:
    """What the evaluator made of a wire day's run folder."""

    #: day.json's content as written (None: no interval was recorded whole, nothing written).
    document: dict[str, Any] | None
    #: Why the evaluation stopped short of the recorded intervals: an interval whose
    #: ``protocol.json`` cannot be read (its file, field and reason); None if it did not.
    error: str | None = None


def evaluate_day(
    prepared: PreparedDay,
    out: Path,
    intervals: Sequence[Interval],
    wall: float,
    *,
    plots: bool = True,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> DayEvaluation:
    """The evaluator's pass over a wire day's run folder, after every process has exited:
    each interval's ``results.json`` from its MO's record (welfare, the optimum — the private
    costs are read here, never by a participant), then day.json, day.csv and plots as the
    in-process day writes them. Only the intervals the run recorded whole count (a failed day
    has fewer: its failed interval's results.json says how it ended, unjudged). A record that
    cannot be read ends the evaluation there, as a failed interval ends the day: the
    intervals before it are written, and :attr:`DayEvaluation.error` says which file, which
    field and why (the malformed record is left as it is, with no results.json)."""
    ac = ACCheck(prepared.source.net_path, prepared.feeder)
    warm = prepared.day.day.warm_start
    rows = []
    error = None
    for interval in intervals:
        first = interval.inputs.index == 1
        try:  # its total_s: the MO's clock to its record, plus this evaluation
            results = interval_results(interval, cold=first or not warm)
        except RecordError as exc:
            error = f"interval {interval.inputs.index} could not be evaluated: {exc}"
            break
        started = time.perf_counter()  # the rest of this interval's evaluation (AC check)
        if results is None or results.get("social_welfare") is None:
            break  # not recorded, or not every party's final report in: nothing to judge
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
        return DayEvaluation(None, error)
    return DayEvaluation(write_day(prepared, out, rows, wall, plots=plots), error)


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
