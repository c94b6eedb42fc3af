"""Network cases and PTDF: the check values of algorithm.md §3 and pypower's makePTDF."""

from pathlib import Path

import numpy as np
import pytest
from pandapower.converter.pypower.to_ppc import to_ppc
from pandapower.pypower.makePTDF import makePTDF

from privgrid.grid.cases import NAMED_CASES, CaseError, load_network
from privgrid.grid.ptdf import bilateral_ptdf, injection_shift_factors

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def ieee14():
    net = load_network("ieee14")
    return net, injection_shift_factors(net)


def test_ieee14_branches_are_named_and_ordered_as_the_case_file(ieee14):
    net, _ = ieee14
    assert net.branch_names[:8] == ["1-2", "1-5", "2-3", "2-4", "2-5", "3-4", "4-5", "4-7"]
    assert len(net.branches) == 20
    assert net.slack == 1
    by_name = {b.name: b for b in net.branches}
    assert by_name["4-7"].tap == pytest.approx(0.978)
    assert by_name["5-6"].x == pytest.approx(0.25202)


@pytest.mark.parametrize(
    ("line", "bus", "expected"),
    [("1-2", 2, -0.83802), ("2-3", 3, -0.53201), ("4-5", 4, 0.50257), ("7-8", 8, -1.0)],
)
def test_isf_check_values(ieee14, line, bus, expected):
    net, isf = ieee14
    assert isf[net.branch_index(line), net.bus_index(bus)] == pytest.approx(expected, abs=5e-6)


@pytest.mark.parametrize(
    ("seller_bus", "buyer_bus", "expected"),
    [
        (2, 3, (0.5594, -0.2268)),
        (5, 4, (0.0482, -0.8038)),
        (8, 9, (-0.0047, 0.0776)),
        (10, 3, (0.3974, -0.0827)),
    ],
)
def test_bilateral_ptdf_of_the_paper_trades(ieee14, seller_bus, buyer_bus, expected):
    net, isf = ieee14
    rows = [net.branch_index("2-3"), net.branch_index("4-5")]
    phi = bilateral_ptdf(
        isf, np.array([net.bus_index(seller_bus)]), np.array([net.bus_index(buyer_bus)])
    )
    assert phi[rows, 0] == pytest.approx(expected, abs=5e-5)
    # φ_mn = −φ_nm
    back = bilateral_ptdf(
        isf, np.array([net.bus_index(buyer_bus)]), np.array([net.bus_index(seller_bus)])
    )
    assert np.array_equal(back, -phi)


def test_slack_bus_column_is_zero(ieee14):
    net, isf = ieee14
    assert np.all(isf[:, net.bus_index(net.slack)] == 0)


@pytest.mark.parametrize("case", sorted(NAMED_CASES))
def test_isf_matches_pypower_makeptdf(case):
    """Our numpy ISF against pandapower's copy of MATPOWER's makePTDF, row by row."""
    import pandapower.networks as pn

    net = load_network(case)
    isf = injection_shift_factors(net)
    pp_net = getattr(pn, NAMED_CASES[case])()
    ppc = to_ppc(pp_net, init="flat")
    reference = makePTDF(ppc["baseMVA"], ppc["bus"].real, ppc["branch"].real)
    numbers = [int(n) for n in pp_net.bus.name]
    for row, branch in enumerate(ppc["branch"].real):
        f, t = numbers[int(branch[0])], numbers[int(branch[1])]
        candidates = [
            i
            for i, b in enumerate(net.branches)
            if (b.from_bus, b.to_bus) == (f, t) and b.x == pytest.approx(branch[3])
        ]
        assert candidates, f"branch {f}-{t} missing"
        ours = isf[candidates[0], [net.bus_index(n) for n in numbers]]
        np.testing.assert_allclose(ours, reference[row], atol=1e-12)


def test_ieee118_uses_its_own_slack_bus():
    assert load_network("ieee118").slack == 69


def test_matpower_file_with_parallel_lines_and_out_of_service_branch():
    net = load_network(str(DATA / "case4_parallel.m"))
    assert net.branch_names == ["1-2", "1-3", "2-4", "2-4#2", "3-4"]  # 3-2 is out of service
    isf = injection_shift_factors(net)
    # Power injected at bus 4 splits over the parallel lines inversely to their reactance.
    first, second = net.branch_index("2-4"), net.branch_index("2-4#2")
    ratio = isf[first, net.bus_index(4)] / isf[second, net.bus_index(4)]
    assert ratio == pytest.approx(0.30 / 0.15)
    # Kirchhoff: flows out of the slack add up to the injection withdrawn there.
    out_of_slack = isf[net.branch_index("1-2"), :] + isf[net.branch_index("1-3"), :]
    np.testing.assert_allclose(out_of_slack[1:], -1.0)


def test_relative_case_path_resolves_against_the_scenario_folder():
    net = load_network("case4_parallel.m", base_dir=DATA)
    assert net.name == "case4_parallel"


def test_unknown_case_is_a_clear_error(tmp_path):
    with pytest.raises(CaseError, match="unknown case 'ieee15'"):
        load_network("ieee15")
    with pytest.raises(CaseError, match="does not exist"):
        load_network(str(tmp_path / "nope.m"))
    bad = tmp_path / "bad.m"
    bad.write_text("function mpc = bad\nmpc.bus = [1 2 3];\n")
    with pytest.raises(CaseError, match="cannot read MATPOWER case"):
        load_network(str(bad))


def test_line_names_resolve_in_either_orientation():
    net = load_network("ieee118")
    # MATPOWER lists 86-87; pandapower stores the transformer high-voltage side first.
    assert net.resolve_branch("86-87") == "87-86"
    assert net.resolve_branch("87-86") == "87-86"
    assert net.resolve_branch("90-89#2") == "89-90#2"
    assert net.resolve_branch("1-118") is None
    assert net.resolve_branch("nonsense") is None
