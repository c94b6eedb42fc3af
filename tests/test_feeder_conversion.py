"""SimBench conversion (privgrid/feeder/simbench.py, feeder.py, matpower.py): the facts of the
grids the day configs use, checked against the simbench package itself."""

from __future__ import annotations

import ast
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from privgrid.feeder.agents import RETAIL, base_pairs, households
from privgrid.feeder.day import branch_names, feeder_network
from privgrid.feeder.feeder import STEPS, YearProfiles, window
from privgrid.feeder.matpower import write_case
from privgrid.feeder.simbench import SimbenchError, check_code, load_source
from privgrid.grid.cases import load_network
from privgrid.grid.distance import electrical_distances
from privgrid.grid.ptdf import injection_shift_factors

ROOT = Path(__file__).resolve().parent.parent
RURAL1 = "1-LV-rural1--2-sw"


@pytest.fixture(scope="module")
def rural1():
    return load_source(RURAL1)


@pytest.fixture(scope="module")
def rural1_net(rural1):
    import pandapower as pp

    return pp.from_json(str(rural1.net_path))


def test_rural1_has_its_buses_lines_transformer_and_elements(rural1):
    f = rural1.feeder
    assert len(f.buses) == 15
    assert [b.number for b in f.buses] == list(range(1, 16))
    assert sum(br.kind == "line" for br in f.branches) == 13
    assert sum(br.kind == "trafo" for br in f.branches) == 1
    assert (len(f.loads), len(f.sgens), len(f.storages)) == (28, 8, 5)
    assert f.bus(f.slack).vn_kv == 20.0  # the external grid feeds the 20 kV side
    assert rural1.year.load_kw.shape == (STEPS, 28) == (35136, 28)
    assert all(b.x is not None and b.y is not None for b in f.buses)  # for the map


def test_ratings_are_rated_current_times_voltage_times_root3(rural1, rural1_net):
    f = rural1.feeder
    for br in f.branches:
        if br.kind == "line":
            line = rural1_net.line.loc[br.pp_index]
            vn = rural1_net.bus.vn_kv[line.from_bus]
            assert br.rating_kva == pytest.approx(line.max_i_ka * vn * math.sqrt(3) * 1000)
            assert br.rating_kva == pytest.approx(187.06, abs=0.01)
        else:
            assert br.rating_kva == pytest.approx(160.0)  # the 0.16 MVA transformer
            assert f.bus(br.from_bus).vn_kv == 20.0 and f.bus(br.to_bus).vn_kv == 0.4


def test_a_radial_feeders_ptdf_is_zero_or_plus_minus_one(rural1):
    network = feeder_network(rural1.feeder)
    isf = injection_shift_factors(network)
    assert set(np.unique(np.round(isf, 9))) <= {-1.0, 0.0, 1.0}
    assert len(network.branches) == len(network.buses) - 1  # a tree


def test_grid_m_loads_back_as_the_feeders_network(rural1, tmp_path):
    write_case(rural1.feeder, tmp_path / "grid.m")
    assert load_network("grid.m", tmp_path) == feeder_network(rural1.feeder)
    names = branch_names(rural1.feeder)
    assert sorted(names) == sorted(feeder_network(rural1.feeder).branch_names)


def test_households_split_pv_and_storage_evenly_between_the_loads_at_a_bus(rural1):
    homes = households(rural1.feeder)
    assert len(homes) == 28
    pv = np.arange(1.0, 9.0)
    assert sum(h.pv_kw(pv) for h in homes) == pytest.approx(pv.sum())
    total = sum(s.power_kw for s in rural1.feeder.storages)
    assert sum(h.storage_kw(rural1.feeder) for h in homes) == pytest.approx(total)


def test_pairs_are_the_nearest_households_and_both_grid_agents(rural1):
    network = feeder_network(rural1.feeder)
    homes = households(rural1.feeder)
    pairs = base_pairs(homes, network, electrical_distances(network), 3)
    for h in homes:
        partners = {m for p in pairs for m in p if h.id in p} - {h.id}
        assert {RETAIL, "FEEDIN"} <= partners
        assert len(partners - {RETAIL, "FEEDIN"}) >= 3
    assert len(set(map(frozenset, pairs))) == len(pairs)


def test_window_averages_the_15_minute_rows_of_each_interval():
    rows = np.arange(STEPS, dtype=float)[:, None]
    year = YearProfiles(rows, rows, 2 * rows)
    start = datetime(2016, 1, 1, 1, 0)  # row 4
    w = window(year, start, 2, 60, pv_scale=0.5)
    assert w.load_kw[:, 0].tolist() == [5.5, 9.5]  # rows 4..7 and 8..11
    assert w.sgen_kw[:, 0].tolist() == [5.5, 9.5]
    assert [s.hour for s in w.starts] == [1, 2]


def test_an_unknown_code_lists_the_valid_ones():
    with pytest.raises(
        SimbenchError, match=r"unknown SimBench code 'LV-rural1'.*1-LV-rural1--2-sw"
    ):
        check_code("LV-rural1")


def test_the_larger_feeder_is_semiurb4():
    f = load_source("1-LV-semiurb4--2-sw").feeder
    assert (len(f.buses), len(f.branches)) == (44, 43)
    assert (len(f.loads), len(f.sgens), len(f.storages)) == (58, 6, 4)
    assert [br.rating_kva for br in f.branches if br.kind == "trafo"] == [400.0]


def test_no_participant_code_imports_simbench_or_pandapower():
    """Role processes read grid.m and their interval's scenario; conversion stays outside."""
    pkg = ROOT / "privgrid"
    files = [*(pkg / "roles").rglob("*.py"), *(pkg / "wire").rglob("*.py")]
    files += [*(pkg / "market").rglob("*.py"), pkg / "runtime.py", pkg / "process.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("simbench", "pandapower", "privgrid.feeder")), (
                    path,
                    name,
                )
