"""Shipped network data: equal to pandapower's conversion, loaded without heavy imports."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from privgrid.grid.cases import (
    NAMED_CASES,
    CaseError,
    convert_named,
    data_file,
    load_network,
    network_from_data,
    network_to_data,
)

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("case", sorted(NAMED_CASES))
def test_shipped_data_equals_a_fresh_pandapower_conversion(case):
    """The drift guard: regenerate with pandapower and compare bit for bit.

    If this fails after a pandapower upgrade, run scripts/make_case_data.py and review the diff.
    """
    fresh = convert_named(case)
    shipped = load_network(case)
    assert shipped == fresh  # name, buses, slack, every branch's name, ends, x and tap
    assert [b.x for b in shipped.branches] == [b.x for b in fresh.branches]  # exact floats
    stored = json.loads(data_file(case).read_text())
    expected = network_to_data(fresh, stored["source"])
    assert stored == expected


@pytest.mark.slow
def test_case_data_script_reports_the_files_up_to_date():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_case_data.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("up to date") == len(NAMED_CASES)


def test_the_agent_path_imports_no_heavy_library():
    """An agent process imports its modules, loads the scenario and builds the market setup
    (network, PTDF); none of that may pull in pandapower, pandas, scipy, matplotlib or cvxpy
    (they cost each agent process ~150 MB and seconds of start-up)."""
    code = f"""
import sys
import privgrid.roles.agent.process
from privgrid.market.setup import build_setup
from privgrid.scenario import load_scenario
for name in ("ieee118-100.toml", "ieee118-100-nearest.toml", "paper.toml"):
    setup = build_setup(load_scenario({str(ROOT / "configs")!r} + "/" + name))
    assert setup.ptdf.shape[1] == 2 * len(setup.graph.pairs)
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{
    "pandapower", "pandas", "scipy", "matplotlib", "cvxpy", "networkx", "matpowercaseframes"
}})
print("heavy:", heavy)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "heavy: []", out.stdout + out.stderr


def test_network_data_round_trips_parallel_lines_and_taps():
    net = load_network(str(DATA / "case4_parallel.m"))
    again = network_from_data(json.loads(json.dumps(network_to_data(net, "test"))), "x.json")
    assert again == net
    assert again.branch_names == ["1-2", "1-3", "2-4", "2-4#2", "3-4"]
    assert again.branches[4].tap == 0.95


def test_malformed_network_data_names_the_file_and_the_problem():
    good = network_to_data(load_network("ieee14"), "test")
    renamed = json.loads(json.dumps(good))
    renamed["branches"][0][0] = "2-1"
    with pytest.raises(CaseError, match=r"bad\.json: branch names or order"):
        network_from_data(renamed, "bad.json")
    newer = {**good, "format": 99}
    with pytest.raises(CaseError, match=r"bad\.json: data format 99"):
        network_from_data(newer, "bad.json")
    missing = {k: v for k, v in good.items() if k != "slack"}
    with pytest.raises(CaseError, match=r"bad\.json: malformed network data"):
        network_from_data(missing, "bad.json")
    unknown_slack = {**good, "slack": 99}
    with pytest.raises(CaseError, match=r"bad\.json: slack bus 99"):
        network_from_data(unknown_slack, "bad.json")
    unsorted = {**good, "buses": list(reversed(good["buses"]))}
    with pytest.raises(CaseError, match=r"bad\.json: buses must be unique and ascending"):
        network_from_data(unsorted, "bad.json")


def test_networks_are_values():
    """Equality is what the drift test relies on: a changed reactance must make it unequal."""
    net = load_network("ieee14")
    changed = replace(net, branches=(replace(net.branches[0], x=0.06), *net.branches[1:]))
    assert changed != net
