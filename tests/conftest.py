"""Shared fixtures: grids on a real Mosquitto (started here, on a free loopback port), and the
strict-JSON check of every results file a test leaves behind; each test's tier (tests/tiers.py)."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import tiers
from tests.bus import BusGrid
from tests.grid_harness import Grid, make_grid, write_scenario

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

#: Files privgrid writes for people and other programs: strict JSON, whoever wrote them.
STRICT_JSON_FILES = ("results.json", "protocol.json", "attack.json", "collusion.json")


@pytest.hookimpl(tryfirst=True)  # before -m selects: `fast` must be there by then
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test's tier follows from what it uses (tests/tiers.py); the rest is ``fast``."""
    for item in items:
        tiers.classify(item)


def pytest_sessionstart(session: pytest.Session) -> None:
    tiers.start_guard()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with tiers.watching(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with tiers.watching(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    with tiers.watching(item):
        return (yield)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (a strict parser rejects it)")


def loads_strict_json(text: str) -> Any:
    """Parse ``text`` as strict JSON: ``NaN``, ``Infinity`` and ``-Infinity`` are errors."""
    return json.loads(text, parse_constant=_refuse_constant)


def paillier_pair(run: str) -> tuple[Any, Any]:
    """S1's and B1's 1024-bit Paillier keys for ``run``, each holding the other's public key
    (the channel's part of the announcement is not what such tests test)."""
    from privgrid.privacy.paillier import PaillierKeys
    from privgrid.wire.kinds import KeyAnnouncement

    s1, b1 = PaillierKeys("S1", run, 1024, 1024), PaillierKeys("B1", run, 1024, 1024)
    base = KeyAnnouncement(x25519=bytes(32), created=0.0)
    s1.accept("B1", b1.announcement(base))
    b1.accept("S1", s1.announcement(base))
    return s1, b1


def load_strict_json(path: Path) -> Any:
    """:func:`loads_strict_json` of a file."""
    return loads_strict_json(path.read_text(encoding="utf-8"))


def _not_strict(folder: Path) -> list[str]:
    bad = []
    for name in STRICT_JSON_FILES:
        for path in sorted(folder.rglob(name)):
            try:
                load_strict_json(path)
            except ValueError as exc:
                bad.append(f"{path}: {exc}")
    return bad


@pytest.fixture(autouse=True)
def every_results_file_is_strict_json(tmp_path: Path) -> Iterator[None]:
    """After every test: each results.json, attack.json and collusion.json under the test's
    tmp_path parses with a strict parser (a failed run's unknown values are null, not NaN)."""
    yield
    bad = _not_strict(tmp_path)
    assert not bad, "not strict JSON:\n" + "\n".join(bad)


@pytest.fixture(scope="session", autouse=True)
def every_results_file_of_the_session_is_strict_json(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """The same at the end of the session, over every temporary folder: this also covers the
    files written by module- and session-scoped fixtures (tmp_path_factory)."""
    yield
    bad = _not_strict(tmp_path_factory.getbasetemp())
    assert not bad, "not strict JSON:\n" + "\n".join(bad)


@pytest.fixture
def grid_factory(tmp_path: Path) -> Iterator:
    """``grid_factory(scenario, intruder=False, **section_overrides) -> Grid``; torn down after."""
    grids: list[Grid] = []

    def make(scenario_path: str | Path = CONFIGS / "paper.toml", **kwargs) -> Grid:
        folder = tmp_path / f"grid{len(grids)}"
        grid = make_grid(folder, Path(scenario_path), **kwargs)
        grids.append(grid)
        return grid

    yield make
    for grid in grids:
        grid.stop()


@pytest.fixture
def bus_factory(tmp_path: Path) -> Iterator:
    """``bus_factory(scenario, faults=None, run=None, **section_overrides) -> BusGrid``:
    the whole grid in this process on the in-process bus (tests/bus.py), every message
    through the real channel; the same overrides as ``grid_factory``."""
    count = 0

    def make(scenario_path: str | Path = CONFIGS / "paper.toml", **kwargs) -> BusGrid:
        nonlocal count
        folder = tmp_path / f"bus{count}"
        count += 1
        options = {k: kwargs.pop(k) for k in ("faults", "run") if k in kwargs}
        scenario_file, scenario = write_scenario(folder, Path(scenario_path), **kwargs)
        return BusGrid(folder, scenario_file, scenario, **options)

    yield make
