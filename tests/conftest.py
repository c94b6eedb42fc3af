"""Shared fixtures: grids on a real Mosquitto (started here, on a free loopback port)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.grid_harness import Grid, make_grid

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


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
