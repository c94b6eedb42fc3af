"""Reading a run folder while it is being written: only the files a monitor may read.

:class:`RunFolder` polls, and each poll reads only what changed since the last one:

- ``trace.csv``: the rows appended since (the MO appends and flushes one per round; it
  rewrites the file whole at its first row and at the end, which starts the trace over);
- ``results.json``: again when it changed (it is replaced in one rename, never half-written);
- ``logs/<participant>.log``: the lines appended since, counting WARNING and ERROR;
- ``scenario.toml``: once, keeping only its public part (:func:`public_scenario`);
- a day's ``intervals/NNNN/results.json`` as each appears, and ``day.json`` at the end.

Never read: ``secrets/`` (identity keys, every account's broker password), ``state/``
(checkpoints: each participant's private state), ``broker/`` (password hashes), ``keys/``
(a day's identity keys), ``ledger.sqlite``. :data:`NEVER_READ` names them and
:meth:`RunFolder.path` refuses them, so a slip cannot read one.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privgrid.dashboard.state import RunState, interval_from_results

#: Top-level entries of a run folder the dashboard must never open.
NEVER_READ = frozenset({"secrets", "state", "broker", "keys", "ledger.sqlite"})
#: At most this much of a growing log is read per poll (a chatty log cannot stall the page).
LOG_CHUNK = 1 << 20
_TEXT_LEVEL = re.compile(r"^\S+ (\S+) r=\S+(?: \[ADV\])? (WARNING|ERROR|CRITICAL)\s+(.*)$")


class ForbiddenPathError(ValueError):
    """The dashboard was about to read a file it must never read."""


def public_scenario(data: dict[str, Any]) -> dict[str, Any]:
    """What the page may know of a scenario: names, buses, pairs, tolerances, line limits —
    never an agent's cost (``a``, ``b``) or power range (``pmin``, ``pmax``)."""
    from privgrid.scenario import LM_ID, MO_ID, parse_scenario

    scenario = parse_scenario(data, "scenario.toml")
    market = scenario.market
    return {
        "name": scenario.name,
        "mode": scenario.privacy.mode,
        "case": scenario.network.case,
        "epsilon_p": market.epsilon_p,
        "epsilon_lambda": market.epsilon_lambda,
        "max_rounds": market.max_rounds,
        "line_limits": dict(scenario.network.line_limits),
        "agents": [{"id": a.id, "bus": a.bus} for a in scenario.agents],
        "others": [LM_ID, MO_ID],
        "pairs": [list(p) for p in scenario.pairs],
    }


@dataclass
class _Tail:
    """Follows one growing file: the bytes appended since the last read, whole lines only."""

    path: Path
    inode: int | None = None
    offset: int = 0
    rest: bytes = b""

    def read(self) -> tuple[list[str], bool]:
        """(new complete lines, whether the file was replaced and is read from the start)."""
        try:
            info = self.path.stat()
        except OSError:
            return [], False
        replaced = self.inode is not None and (
            info.st_ino != self.inode or info.st_size < self.offset
        )
        if replaced or self.inode is None:
            self.inode, self.offset, self.rest = info.st_ino, 0, b""
        if info.st_size == self.offset:
            return [], replaced
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(LOG_CHUNK)
        self.offset += len(chunk)
        data = self.rest + chunk
        *lines, self.rest = data.split(b"\n")
        return [ln.decode("utf-8", "replace") for ln in lines], replaced


@dataclass
class _LogCount:
    tail: _Tail
    warnings: int = 0
    errors: int = 0
    last: str | None = None


class RunFolder:
    """One run folder (of ``privgrid run``, a compose run or a day), polled into a state."""

    def __init__(self, folder: Path, state: RunState, now: Callable[[], float]) -> None:
        self.folder = folder
        self.state = state
        self.now = now
        self.trace = _Tail(self.path("trace.csv"))
        self.trace_header: list[str] | None = None
        self.results_stamp: tuple[int, int] | None = None
        self.logs: dict[str, _LogCount] = {}
        self.scenario_read = False
        self.public: dict[str, Any] | None = None  # the scenario's public part, once read
        self.intervals_seen: set[str] = set()
        self.day_stamp: tuple[int, int] | None = None

    def path(self, relative: str) -> Path:
        """A path in the run folder, refusing the folders the dashboard must never read."""
        first = Path(relative).parts[0]
        if first in NEVER_READ:
            raise ForbiddenPathError(f"the dashboard never reads {relative}")
        return self.folder / relative

    @property
    def is_day(self) -> bool:
        return self.path("intervals").is_dir() or self.path("feeder.json").is_file()

    def poll(self) -> None:
        """Read what changed since the last poll into the state."""
        if not self.scenario_read:
            self._read_scenario()
        if self.is_day:
            self._poll_day()
            return
        self._poll_trace()
        self._poll_results()
        self._poll_logs()

    # -- one market ------------------------------------------------------------------------
    def _read_scenario(self) -> None:
        path = self.path("scenario.toml")
        if self.is_day or not path.is_file():
            return
        try:
            public = public_scenario(tomllib.loads(path.read_text(encoding="utf-8")))
        except Exception:  # half-written or invalid: the MO will say so; try again later
            return
        self.state.set_scenario(public)
        self.public = public
        self.scenario_read = True

    def _poll_trace(self) -> None:
        lines, replaced = self.trace.read()
        if replaced:
            self.trace_header = None
        rows = []
        for row in csv.reader(io.StringIO("\n".join(lines))):
            if not row:
                continue
            if row[0] == "round":
                self.trace_header = row
                continue
            try:
                rows.append([float(x) for x in row[:6]])
            except ValueError:
                continue
        if rows or replaced:
            self.state.set_trace(rows, replace=replaced)

    def _stamp(self, path: Path) -> tuple[int, int] | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def _poll_results(self) -> None:
        path = self.path("results.json")
        stamp = self._stamp(path)
        if stamp is None or stamp == self.results_stamp:
            return
        results = _read_json(path)
        if isinstance(results, dict) and "status" in results:
            self.results_stamp = stamp
            self.state.set_results(results, self.now())

    def _poll_logs(self) -> None:
        for pid in self.state.participants:
            count = self.logs.get(pid)
            if count is None:
                count = self.logs[pid] = _LogCount(_Tail(self.path(f"logs/{pid}.log")))
            lines, replaced = count.tail.read()
            if replaced:
                count.warnings = count.errors = 0
            for line in lines:
                level, message = _problem(line)
                if level is None:
                    continue
                if level == "WARNING":
                    count.warnings += 1
                else:
                    count.errors += 1
                count.last = message[:300]
            self.state.set_log_counts(pid, count.warnings, count.errors, count.last)

    # -- a day -----------------------------------------------------------------------------
    def _poll_day(self) -> None:
        intervals = self.path("intervals")
        labels = sorted(p.name for p in intervals.iterdir()) if intervals.is_dir() else []
        starts = None
        day_path = self.path("day.json")
        stamp = self._stamp(day_path)
        if stamp is not None and stamp != self.day_stamp:
            day = _read_json(day_path)
            if isinstance(day, dict):
                self.day_stamp = stamp
                starts = {int(r["index"]): str(r["start"]) for r in day.get("per_interval", [])}
                self.state.scenario = day.get("scenario")
        self.state.set_day(len(labels) or None, starts)
        latest = None
        for label in labels:
            if label in self.intervals_seen:
                continue
            results = _read_json(self.path(f"intervals/{label}/results.json"))
            if not isinstance(results, dict) or "status" not in results:
                continue
            self.intervals_seen.add(label)
            index = int(label) if label.isdigit() else len(self.intervals_seen)
            self.state.set_interval(interval_from_results(index, label, results), self.now())
            latest = results
            if self.state.epsilon_p is None:
                self._interval_tolerances(label)
        if latest is not None:
            self.state.set_day_lines(latest.get("lines") or [])
        if starts:
            self.state.set_day(len(labels) or None, starts)

    def _interval_tolerances(self, label: str) -> None:
        try:
            data = tomllib.loads(self.path(f"intervals/{label}/scenario.toml").read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return
        from privgrid.scenario.schema import MarketSection, PrivacySection

        fields = MarketSection.model_fields
        market = data.get("market", {})
        self.state.epsilon_p = market.get("epsilon_p", fields["epsilon_p"].default)
        self.state.epsilon_lambda = market.get("epsilon_lambda", fields["epsilon_lambda"].default)
        self.state.max_rounds = market.get("max_rounds", fields["max_rounds"].default)
        default_mode = PrivacySection.model_fields["mode"].default
        self.state.mode = data.get("privacy", {}).get("mode", default_mode)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _problem(line: str) -> tuple[str | None, str]:
    """(WARNING/ERROR, message) of a log line in the text or JSON format, else (None, "")."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None, ""
        level = str(record.get("level", ""))
        if level in ("WARNING", "ERROR", "CRITICAL"):
            return ("WARNING" if level == "WARNING" else "ERROR"), str(record.get("msg", ""))
        return None, ""
    match = _TEXT_LEVEL.match(line)
    if match is None:
        return None, ""
    level = match.group(2)
    return ("WARNING" if level == "WARNING" else "ERROR"), match.group(3).strip()
