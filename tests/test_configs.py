"""Every scenario in configs/ negotiates to the centralised optimum."""

import tomllib
from pathlib import Path

import pytest

from privgrid.feeder.schema import is_day
from privgrid.market.setup import agent_costs, build_setup
from privgrid.scenario import load_scenario
from tests.market_checks import assert_matches_central
from tests.rounds import ROUNDS

#: Single-market scenarios; the day scenarios ([day]) are tests/test_feeder_day.py's.
CONFIGS = sorted(
    p
    for p in (Path(__file__).parent.parent / "configs").glob("*.toml")
    if not is_day(tomllib.loads(p.read_text()))
)


def test_the_shipped_configs_are_the_expected_ones():
    names = {p.stem for p in CONFIGS}
    assert {"paper", "paper-unconstrained", "ieee30-40", "ieee118-100"} <= names
    assert names == set(ROUNDS)  # each one's round count is pinned (tests/rounds.py)


#: The 118-bus markets take minutes in-process: ``make test`` runs them, ``make check`` not.
SLOW = ("ieee118",)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.slow) if p.stem.startswith(SLOW) else p
        for p in CONFIGS
    ],
    ids=[p.stem for p in CONFIGS],
)
def test_config_negotiates_to_the_central_optimum(path):
    scenario = load_scenario(path)
    setup = build_setup(scenario)
    result, central = assert_matches_central(setup, agent_costs(scenario))
    if setup.limited.size:  # the scale configs promise binding limits
        assert (central.line_prices.up + central.line_prices.down > 1e-3).any()
    assert result.rounds == ROUNDS[path.stem] < scenario.market.max_rounds
