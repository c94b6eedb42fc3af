"""The plan of a day over the wire: what every participant process of the day reads.

``privgrid run DAY.toml`` prepares the day's run folder exactly as ``privgrid solve`` does
(``grid.m``, every ``intervals/NNNN/scenario.toml``, checked before anything starts) and adds
``plan.json``: the day's name, whether intervals are warm-started, the genesis registration
(every agent of the day with the envelope of its bounds), the day's pair set and, per interval,
its start time, scenario file and the scenario's SHA-256. A participant reads the plan once and
an interval's scenario when that interval begins; it never reads the day file or SimBench
(no role process imports :mod:`privgrid.feeder`, simbench or pandapower).

Paths in the plan are relative to its folder (the run folder), so the folder can move.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privgrid.ledger.genesis import AgentRegistration, Quorum
from privgrid.scenario import Scenario, ScenarioError, load_scenario

PLAN_FILE = "plan.json"
PLAN_VERSION = 1


@dataclass(frozen=True)
class PlannedInterval:
    """One market of the day."""

    index: int  # 1-based
    start: str  # ISO time of the interval's start
    scenario: str  # path of its scenario file, relative to the plan's folder
    sha256: str  # hex SHA-256 of that file


@dataclass(frozen=True)
class DayPlan:
    """A day as its participants see it (see the module docstring)."""

    name: str
    warm_start: bool
    quorum: Quorum
    agents: tuple[AgentRegistration, ...]
    pairs: tuple[tuple[str, str], ...]
    intervals: tuple[PlannedInterval, ...]
    source: Path  # the plan file
    #: Seconds the MO waits between an interval's end and the next one's start (``[day]
    #: pause_s``): idle time for the participants' precomputation.
    pause_s: float = 0.0

    # -- reading and writing ---------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path) -> DayPlan:
        """Read and check a plan file.

        Raises:
            ScenarioError: the file cannot be read or a field is wrong (file, field, reason).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ScenarioError.single(path, "<file>", f"cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise ScenarioError.single(path, "<syntax>", f"not JSON: {exc}") from None
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls, data: Any, path: Path) -> DayPlan:
        field = _Fields(path)
        data = field.obj(data, "plan")
        if data.get("plan") != PLAN_VERSION:
            raise ScenarioError.single(path, "plan", f"version {data.get('plan')!r} unknown")
        quorum = data.get("quorum")
        if quorum != "all" and not (isinstance(quorum, int) and not isinstance(quorum, bool)):
            raise ScenarioError.single(path, "quorum", "must be 'all' or a number of votes")
        agents = tuple(
            AgentRegistration(
                field.text(a, f"agents[{i}].id"),
                field.integer(a, f"agents[{i}].bus"),
                field.number(a, f"agents[{i}].pmin"),
                field.number(a, f"agents[{i}].pmax"),
            )
            for i, a in enumerate(field.items(data, "agents"))
        )
        ids = {a.id for a in agents}
        pairs = []
        for i, pair in enumerate(field.items(data, "pairs")):
            if not (isinstance(pair, list) and len(pair) == 2 and set(pair) <= ids):
                raise ScenarioError.single(path, f"pairs[{i}]", "is not a pair of agent ids")
            pairs.append((str(pair[0]), str(pair[1])))
        intervals = tuple(
            PlannedInterval(
                field.integer(item, f"intervals[{i}].index"),
                field.text(item, f"intervals[{i}].start"),
                field.text(item, f"intervals[{i}].scenario"),
                field.text(item, f"intervals[{i}].sha256"),
            )
            for i, item in enumerate(field.items(data, "intervals"))
        )
        if [i.index for i in intervals] != list(range(1, len(intervals) + 1)) or not intervals:
            raise ScenarioError.single(path, "intervals", "must be numbered 1, 2, … in order")
        pause = field.number(data, "pause_s") if "pause_s" in data else 0.0
        if not 0.0 <= pause < float("inf"):
            raise ScenarioError.single(path, "pause_s", "must be a finite number ≥ 0")
        return cls(
            field.text(data, "name"),
            field.flag(data, "warm_start"),
            quorum,
            agents,
            tuple(pairs),
            intervals,
            path,
            pause,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": PLAN_VERSION,
            "name": self.name,
            "warm_start": self.warm_start,
            "pause_s": self.pause_s,
            "quorum": self.quorum,
            "agents": [
                {"id": a.id, "bus": a.bus, "pmin": a.pmin, "pmax": a.pmax} for a in self.agents
            ],
            "pairs": [list(p) for p in self.pairs],
            "intervals": [
                {"index": i.index, "start": i.start, "scenario": i.scenario, "sha256": i.sha256}
                for i in self.intervals
            ],
        }

    def write(self) -> None:
        """Write the plan to :attr:`source` (strict JSON)."""
        text = json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n"
        self.source.write_text(text, encoding="utf-8")

    @classmethod
    def of_folder(
        cls,
        folder: Path,
        *,
        name: str,
        warm_start: bool,
        quorum: Quorum,
        agents: Sequence[AgentRegistration],
        pairs: Sequence[tuple[str, str]],
        intervals: Sequence[tuple[str, Path]],
        pause_s: float = 0.0,
    ) -> DayPlan:
        """The plan of a prepared run folder: ``intervals`` is (start, scenario file) per
        interval in order; the digests are taken from the files as they are now."""
        planned = tuple(
            PlannedInterval(
                i + 1, start, path.relative_to(folder).as_posix(), file_digest(path).hex()
            )
            for i, (start, path) in enumerate(intervals)
        )
        return cls(
            name,
            warm_start,
            quorum,
            tuple(agents),
            tuple(pairs),
            planned,
            folder / PLAN_FILE,
            pause_s,
        )

    # -- what participants ask ---------------------------------------------------------------
    @property
    def agent_ids(self) -> list[str]:
        return [a.id for a in self.agents]

    def partners(self, agent: str) -> set[str]:
        """Everyone ``agent`` may trade with on some interval of the day."""
        return {m for pair in self.pairs if agent in pair for m in pair if m != agent}

    def interval(self, index: int) -> PlannedInterval:
        if not 1 <= index <= len(self.intervals):
            raise ScenarioError.single(self.source, "intervals", f"no interval {index}")
        return self.intervals[index - 1]

    def scenario_path(self, index: int) -> Path:
        return self.source.parent / self.interval(index).scenario

    def digest(self, index: int) -> bytes:
        """The SHA-256 the plan records for interval ``index``'s scenario file."""
        return bytes.fromhex(self.interval(index).sha256)

    def load(self, index: int) -> Scenario:
        """Interval ``index``'s scenario, after checking the file is the one planned.

        Raises:
            ScenarioError: the file changed since the plan was made, or it is invalid.
        """
        path = self.scenario_path(index)
        try:
            actual = file_digest(path)
        except OSError as exc:
            raise ScenarioError.single(path, "<file>", f"cannot read: {exc.strerror}") from None
        if actual != self.digest(index):
            raise ScenarioError.single(
                path, "<file>", f"differs from the one {self.source.name} planned (SHA-256)"
            )
        return load_scenario(path)


def file_digest(path: Path) -> bytes:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).digest()


def is_plan(path: str | Path) -> bool:
    """Whether ``path`` names a day's plan (``privgrid run``'s ``plan.json``), not a scenario."""
    return Path(path).suffix == ".json"


class _Fields:
    """Typed access to the decoded plan; a failure names the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, name: str, what: str) -> ScenarioError:
        return ScenarioError.single(self.path, name, what)

    def obj(self, value: Any, name: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(name, "is not an object")
        return value

    def items(self, data: Mapping[str, Any], name: str) -> list[Any]:
        value = data.get(name)
        if not isinstance(value, list):
            raise self.fail(name, "is not a list")
        return value

    def text(self, data: Any, name: str) -> str:
        value = self.obj(data, name).get(name.rsplit(".", 1)[-1])
        if not isinstance(value, str) or not value:
            raise self.fail(name, "is not a non-empty string")
        return value

    def integer(self, data: Any, name: str) -> int:
        value = self.obj(data, name).get(name.rsplit(".", 1)[-1])
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(name, "is not an integer")
        return value

    def number(self, data: Any, name: str) -> float:
        value = self.obj(data, name).get(name.rsplit(".", 1)[-1])
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.fail(name, "is not a number")
        return float(value)

    def flag(self, data: Mapping[str, Any], name: str) -> bool:
        value = data.get(name)
        if not isinstance(value, bool):
            raise self.fail(name, "is not true or false")
        return value
