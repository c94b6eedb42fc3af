"""The files of a run folder and how they are written: atomically, strict JSON, CSV.

Who writes what (docs/wire.md, "The run folder"):
- the MO: ``trace.csv`` live, one row per round (:class:`TraceFile`), and at its end
  ``protocol.json`` (:mod:`privgrid.protocol_record`) — protocol data only;
- ``privgrid report`` (:mod:`privgrid.report`): ``results.json``, the final ``trace.csv`` with
  the evaluator's welfare column, and ``plots/``.

No evaluation and no plotting here: the MO process needs these files and nothing heavier.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from privgrid.market.stopping import Residuals
from privgrid.results import dumps
from privgrid.roles.market_operator.node import TraceRow

RESULTS_FILE = "results.json"
PROTOCOL_FILE = "protocol.json"
TRACE_FILE = "trace.csv"
#: Files of ours in a run folder, removed before a fresh run writes its own: a failed run
#: must not leave the previous run's plots (or results) looking like its own.
OUTPUTS = (
    RESULTS_FILE,
    PROTOCOL_FILE,
    TRACE_FILE,
    "attack.json",
    "plots/convergence.png",
    "plots/trades.png",
)
TRACE_COLUMNS = ["round", "r_P", "r_L", "r_d", "r_C", "elapsed_s", "welfare"]


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    """``value`` as strict JSON (no NaN or Infinity: :func:`privgrid.results.dumps`)."""
    write_atomic(path, dumps(value) + "\n")


def write_results(folder: Path, results: Mapping[str, Any]) -> None:
    """``results.json`` as strict JSON."""
    write_json(folder / RESULTS_FILE, results)


def _trace_row(row: TraceRow, welfare_value: float | None) -> list[Any]:
    r = row.residuals
    return [
        row.round,
        r.reciprocity,
        r.line,
        r.dual,
        r.consensus,
        round(row.elapsed, 6),
        "" if welfare_value is None else welfare_value,
    ]


def write_trace(
    path: Path, trace: Sequence[TraceRow], welfare_trace: Sequence[float | None]
) -> None:
    """The end-of-run ``trace.csv``, with the evaluator's welfare column (replaces the live
    file of :class:`TraceFile` in one rename)."""
    rows = [TRACE_COLUMNS]
    rows += [_trace_row(row, w) for row, w in zip(trace, welfare_trace, strict=True)]
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    write_atomic(path, buffer.getvalue())


def read_trace(path: Path) -> list[TraceRow]:
    """The rows of a ``trace.csv`` (live or final); an absent or unreadable file has none."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return [
            TraceRow(
                int(r["round"]),
                Residuals(float(r["r_P"]), float(r["r_L"]), float(r["r_d"]), float(r["r_C"])),
                float(r["elapsed_s"]),
            )
            for r in rows
        ]
    except (OSError, KeyError, TypeError, ValueError):
        return []


class TraceFile:
    """``trace.csv`` written while the run goes on: one row appended (and flushed) per round,
    so another program can follow a live run. Rewritten whole at the first call, which also
    covers the rounds a restarted MO restored from its checkpoint; the welfare column stays
    empty until :func:`write_trace` at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0  # last round in the file
        self.started = False

    def sync(self, trace: Sequence[TraceRow]) -> None:
        """Append the rows of ``trace`` not in the file yet."""
        if not self.started:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(TRACE_COLUMNS)
            self.started = True
        new = [row for row in trace if row.round > self.written]
        if not new:
            return
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(_trace_row(row, None) for row in new)
            handle.flush()
        self.written = new[-1].round


def clear_outputs(folder: Path) -> None:
    """Remove the files a previous run left in ``folder`` (:data:`OUTPUTS`), nothing else."""
    for name in OUTPUTS:
        (folder / name).unlink(missing_ok=True)
