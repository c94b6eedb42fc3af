"""``protocol.json``: what the MO knows when its protocol work is done — protocol data only.

The MO writes it (strict JSON) as its last act: how the run ended, the residual trace, every
final report as it arrived (the fixed-point vectors, each party's own KKT checks and traffic
counters), the violations, the pairs dropped, the ledger's verdict, and its own counters and
clocks. Nothing in it needs a private cost. ``privgrid report`` (:mod:`privgrid.report`) turns
it and the scenario into ``results.json``, the final ``trace.csv`` and the plots; the
launcher, when the MO died before writing it, makes the record of the failure instead
(:meth:`ProtocolRecord.failed`), so both endings go through the same report code.

Reading checks every field: the final reports against their wire schema
(:meth:`privgrid.wire.body.Body.from_body`), the rest by type; a bad file is a
:class:`RecordError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from privgrid.market.stopping import Residuals
from privgrid.roles.market_operator.node import RunOutcome, TraceRow
from privgrid.runfolder import PROTOCOL_FILE, write_json
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import AgentFinal, LmFinal

VERSION = 1
F = TypeVar("F", AgentFinal, LmFinal)
_RESIDUALS = ("r_P", "r_L", "r_d", "r_C")


class RecordError(ValueError):
    """``protocol.json`` is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Clocks:
    """The MO's own clocks, in seconds (its process's, so only durations leave it)."""

    negotiation_s: float  # round 1 → the stop
    finish_s: float  # the stop → every final report (and the vote) in
    total_s: float  # round 1 → this record


@dataclass
class ProtocolRecord:
    """Everything the MO knows at the end (see the module docstring)."""

    run: str
    mode: str  # the privacy mode, as ``results.json`` names it
    converged: bool = False
    rounds: int = 0
    reason: str = ""
    error: str | None = None
    interrupted: bool = False
    trace: list[TraceRow] = field(default_factory=list)
    finals: dict[str, AgentFinal] = field(default_factory=dict)
    lm_final: LmFinal | None = None
    violations: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    ledger: dict[str, Any] | None = None
    #: The MO's traffic and timing counters; None when the MO died (they died with it).
    mo_stats: dict[str, float] | None = None
    clocks: Clocks | None = None  # None: the MO died before measuring them
    scenario_file: str | None = None  # the scenario the MO read (report's last resort)

    @classmethod
    def of_outcome(
        cls,
        outcome: RunOutcome,
        *,
        run: str,
        mode: str,
        interrupted: bool,
        ledger: dict[str, Any] | None,
        mo_stats: Mapping[str, float],
        now: float,
        scenario_file: str | None = None,
    ) -> ProtocolRecord:
        """The record of the MO's outcome; ``now`` is ``perf_counter`` at the end."""
        clocks = Clocks(
            negotiation_s=max(outcome.stopped - outcome.started, 0.0),
            finish_s=max(outcome.finished - outcome.stopped, 0.0),
            total_s=now - outcome.started if outcome.started else 0.0,
        )
        return cls(
            run=run,
            mode=mode,
            converged=outcome.converged,
            rounds=outcome.rounds,
            reason=outcome.reason,
            error=outcome.error,
            interrupted=interrupted,
            trace=list(outcome.trace),
            finals=dict(outcome.finals),
            lm_final=outcome.lm_final,
            violations=list(outcome.violations),
            dropped=list(outcome.dropped),
            ledger=ledger,
            mo_stats=dict(mo_stats),
            clocks=clocks,
            scenario_file=scenario_file,
        )

    @classmethod
    def failed(
        cls,
        *,
        run: str,
        mode: str,
        error: str,
        interrupted: bool = False,
        trace: Sequence[TraceRow] = (),
    ) -> ProtocolRecord:
        """A run whose MO could not write its record (killed, or refused its input): the
        rounds and residuals of the live ``trace.csv`` and the reason; nothing else is known."""
        return cls(
            run=run,
            mode=mode,
            rounds=trace[-1].round if trace else 0,
            reason="interrupted" if interrupted else "participant failed",
            error=error,
            interrupted=interrupted,
            trace=list(trace),
        )

    @property
    def measured(self) -> bool:
        """Whether the MO lived to count: its clocks and everyone's counters are known."""
        return self.clocks is not None

    # -- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "run": self.run,
            "mode": self.mode,
            "converged": self.converged,
            "rounds": self.rounds,
            "reason": self.reason,
            "error": self.error,
            "interrupted": self.interrupted,
            "trace": [
                {
                    "round": row.round,
                    **dict(zip(_RESIDUALS, _residuals(row.residuals), strict=True)),
                    "elapsed_s": row.elapsed,
                }
                for row in self.trace
            ],
            "finals": {agent: final.to_body() for agent, final in self.finals.items()},
            "lm_final": None if self.lm_final is None else self.lm_final.to_body(),
            "violations": self.violations,
            "dropped": [list(p) for p in self.dropped],
            "ledger": self.ledger,
            "mo_stats": self.mo_stats,
            "clocks": None if self.clocks is None else vars(self.clocks),
            "scenario_file": self.scenario_file,
        }

    def write(self, folder: Path) -> Path:
        """``folder/protocol.json`` (atomic, strict JSON: a residual that is not finite is
        ``null``)."""
        path = folder / PROTOCOL_FILE
        write_json(path, self.to_json())
        return path

    @classmethod
    def read(cls, folder: Path) -> ProtocolRecord:
        """The record in ``folder``.

        Raises:
            RecordError: there is none, or it is not a well-formed record.
        """
        path = folder / PROTOCOL_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecordError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise RecordError(f"{path}: not JSON ({exc})") from None
        return cls.from_json(data, str(path))

    @classmethod
    def from_json(cls, data: Any, where: str = PROTOCOL_FILE) -> ProtocolRecord:
        reader = _Reader(where)
        data = reader.obj(data, "")
        if data.get("version") != VERSION:
            raise RecordError(f"{where}: version {data.get('version')!r} is not {VERSION}")
        clocks = data.get("clocks")
        return cls(
            run=reader.text(data, "run"),
            mode=reader.text(data, "mode"),
            converged=reader.flag(data, "converged"),
            rounds=reader.count(data, "rounds"),
            reason=reader.text(data, "reason"),
            error=reader.optional_text(data, "error"),
            interrupted=reader.flag(data, "interrupted"),
            trace=[reader.trace_row(row, i) for i, row in enumerate(reader.items(data, "trace"))],
            finals={
                str(agent): reader.body(AgentFinal, body, f"finals.{agent}")
                for agent, body in reader.obj(data.get("finals"), "finals").items()
            },
            lm_final=None
            if data.get("lm_final") is None
            else reader.body(LmFinal, data["lm_final"], "lm_final"),
            violations=[reader.obj(v, "violations[]") for v in reader.items(data, "violations")],
            dropped=[reader.pair(p) for p in reader.items(data, "dropped")],
            ledger=None if data.get("ledger") is None else reader.obj(data["ledger"], "ledger"),
            mo_stats=None if data.get("mo_stats") is None else reader.numbers(data["mo_stats"]),
            clocks=None if clocks is None else reader.clocks(clocks),
            scenario_file=reader.optional_text(data, "scenario_file"),
        )


def _residuals(r: Residuals) -> tuple[float, float, float, float]:
    return (r.reciprocity, r.line, r.dual, r.consensus)


class _Reader:
    """Typed access to a decoded record, each failure a :class:`RecordError` naming the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, name: str, what: str) -> RecordError:
        return RecordError(f"{self.where}: {name or 'the record'} {what}")

    def obj(self, value: Any, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(name, "is not an object")
        return value

    def items(self, data: Mapping[str, Any], name: str) -> list[Any]:
        value = data.get(name)
        if not isinstance(value, list):
            raise self.fail(name, "is not a list")
        return value

    def text(self, data: Mapping[str, Any], name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str):
            raise self.fail(name, "is not a string")
        return value

    def optional_text(self, data: Mapping[str, Any], name: str) -> str | None:
        return None if data.get(name) is None else self.text(data, name)

    def flag(self, data: Mapping[str, Any], name: str) -> bool:
        value = data.get(name)
        if not isinstance(value, bool):
            raise self.fail(name, "is not true or false")
        return value

    def count(self, data: Mapping[str, Any], name: str) -> int:
        value = data.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(name, "is not a count")
        return value

    def number(self, value: Any, name: str, *, missing: float | None = None) -> float:
        if value is None and missing is not None:
            return missing  # a value that was not finite (strict JSON wrote it as null)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.fail(name, "is not a number")
        return float(value)

    def numbers(self, value: Any) -> dict[str, float]:
        return {
            str(k): self.number(v, f"mo_stats.{k}") for k, v in self.obj(value, "mo_stats").items()
        }

    def trace_row(self, value: Any, i: int) -> TraceRow:
        row = self.obj(value, f"trace[{i}]")
        residuals = [
            self.number(row.get(k), f"trace[{i}].{k}", missing=math.inf) for k in _RESIDUALS
        ]
        return TraceRow(
            self.count(row, "round"),
            Residuals(*residuals),
            self.number(row.get("elapsed_s"), f"trace[{i}].elapsed_s"),
        )

    def pair(self, value: Any) -> tuple[str, str]:
        ids = isinstance(value, list) and len(value) == 2
        if not ids or not all(isinstance(x, str) for x in value):
            raise self.fail("dropped[]", "is not a pair of ids")
        return (value[0], value[1])

    def clocks(self, value: Any) -> Clocks:
        data = self.obj(value, "clocks")
        names = ("negotiation_s", "finish_s", "total_s")
        return Clocks(*(self.number(data.get(n), f"clocks.{n}") for n in names))

    def body(self, cls: type[F], value: Any, name: str) -> F:
        try:
            return cls.from_body(value)
        except Rejected as exc:
            raise self.fail(name, f"is not a final report ({exc.reason})") from None
