"""``pairs = {nearest = k}``: the electrical distance and the sparse pairing built on it."""

import copy
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from privgrid.grid.cases import load_network
from privgrid.grid.distance import bus_distance, electrical_distances, thevenin_reactance
from privgrid.grid.network import Branch, Network
from privgrid.grid.ptdf import injection_shift_factors
from privgrid.launcher import effective_scenario
from privgrid.market.pairs import Role, nearest_pairs
from privgrid.market.setup import agent_costs, build_setup
from privgrid.scenario import ScenarioError, load_scenario, parse_scenario
from tests.market_checks import assert_matches_central
from tests.test_scenario import write

CONFIGS = Path(__file__).parent.parent / "configs"
DATA = Path(__file__).parent / "data"
PAPER = tomllib.loads((CONFIGS / "paper.toml").read_text())


def paper(**market):
    data = copy.deepcopy(PAPER)
    data["market"] = market
    return data


# --- the distance ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ieee118():
    net = load_network("ieee118")
    return net, electrical_distances(net)


def test_distance_is_a_metric(ieee118):
    _, D = ieee118
    assert np.array_equal(D, D.T)
    assert np.all(np.diag(D) == 0)
    off = D[~np.eye(len(D), dtype=bool)]
    assert off.min() > 0
    # Triangle inequality over every triple (allowing the rounding of 1e-10).
    assert np.all(D[:, None, :] <= D[:, :, None] + D[None, :, :] + 2e-10)


def test_distance_is_the_ptdf_weighted_reactance(ieee118):
    """d(i, j) = Σ_l φ_l,ij² / b_l, computed independently from the ISF of ptdf.py."""
    net, D = ieee118
    isf = injection_shift_factors(net)
    b = np.array([br.susceptance for br in net.branches])
    phi = isf[:, :, None] - isf[:, None, :]  # L × B × B: trade i → j
    expected = np.einsum("lij,l->ij", phi**2, 1.0 / b)
    np.testing.assert_allclose(D, expected, atol=1e-9)


def test_distance_does_not_depend_on_the_slack_bus(ieee118):
    net, D = ieee118
    other = replace(net, slack=10)
    assert not np.array_equal(thevenin_reactance(other), thevenin_reactance(net))
    np.testing.assert_allclose(electrical_distances(other), D, atol=2e-10)


def test_distance_by_hand_on_series_and_parallel_branches():
    """case4_parallel: 1-2 (x 0.1), 2-4 twice (0.15 ∥ 0.30 = 0.1), 1-3 (0.2), 3-4 (0.25 with
    tap 0.95: x·tap = 0.2375). Between 1 and 4: (0.1 + 0.1) ∥ (0.2 + 0.2375)."""
    net = load_network(str(DATA / "case4_parallel.m"))
    upper, lower = 0.1 + 0.1, 0.2 + 0.25 * 0.95
    assert bus_distance(net, 1, 4) == pytest.approx(upper * lower / (upper + lower), abs=1e-10)
    assert bus_distance(net, 4, 1) == bus_distance(net, 1, 4)
    # A radial chain adds up its reactances.
    chain = Network(
        "chain",
        (1, 2, 3),
        2,
        (Branch("1-2", 1, 2, 0.1, 1.0), Branch("2-3", 2, 3, 0.3, 1.0)),
    )
    assert bus_distance(chain, 1, 3) == pytest.approx(0.4, abs=1e-10)
    assert bus_distance(chain, 1, 1) == 0.0


def test_a_disconnected_network_is_an_error():
    island = Network(
        "island",
        (1, 2, 3, 4),
        1,
        (Branch("1-2", 1, 2, 0.1, 1.0), Branch("3-4", 3, 4, 0.1, 1.0)),
    )
    with pytest.raises(ValueError, match="not connected"):
        electrical_distances(island)


# --- the pairing -------------------------------------------------------------------------------


def test_each_buyer_gets_its_k_nearest_sellers():
    scenario = load_scenario(CONFIGS / "ieee118-100-nearest.toml")
    k = scenario.market.pairs.nearest
    net = load_network(scenario.network.case)
    bus = {a.id: a.bus for a in scenario.agents}
    sellers = [a.id for a in scenario.agents if a.role == Role.SELLER]
    buyers = [a.id for a in scenario.agents if a.role == Role.BUYER]
    pairs = scenario.pairs
    assert len(set(pairs)) == len(pairs)  # each pair once
    assert all(s in sellers and b in buyers for s, b in pairs)  # seller first
    partners = {a: {m for p in pairs for m in p if a in p and m != a} for a in bus}
    for b in buyers:
        ranked = sorted(sellers, key=lambda s: (bus_distance(net, bus[b], bus[s]), s))
        assert set(ranked[:k]) <= partners[b], b
        # Anyone else is an unpicked seller that came to its nearest buyer.
        for s in partners[b] - set(ranked[:k]):
            assert partners[s] == {b}
            nearest = min(buyers, key=lambda x: (bus_distance(net, bus[s], bus[x]), x))
            assert nearest == b
    assert all(partners[s] for s in sellers)  # every seller trades


def test_nearest_with_every_seller_is_sellers_buyers():
    assert parse_scenario(paper(pairs={"nearest": 4})).pairs == parse_scenario(PAPER).pairs


def test_nearest_pairs_are_deterministic_and_independent_of_listing_order():
    data = paper(pairs={"nearest": 2})
    first = parse_scenario(data).pairs
    shuffled = copy.deepcopy(data)
    shuffled["agents"] = list(reversed(shuffled["agents"]))
    assert sorted(parse_scenario(shuffled).pairs) == sorted(first)
    assert parse_scenario(copy.deepcopy(data)).pairs == first


def test_ties_go_to_the_smaller_id_and_unpicked_sellers_to_their_nearest_buyer():
    # Sellers S2 and S10 on one bus (a tie for every buyer), S3 far away on bus 8.
    members = [
        ("S2", 13, Role.SELLER),
        ("S10", 13, Role.SELLER),
        ("S3", 8, Role.SELLER),
        ("B1", 14, Role.BUYER),
        ("B2", 7, Role.BUYER),
    ]
    net = load_network("ieee14")

    def distance(i, j):
        return bus_distance(net, i, j)

    assert distance(14, 13) < distance(14, 8) and distance(7, 8) < distance(7, 13)
    pairs = nearest_pairs(members, 1, distance)
    # B1 picks S10 ("S10" < "S2"); B2 picks S3; S2, picked by no one, goes to its nearest buyer.
    assert pairs == [("S2", "B1"), ("S10", "B1"), ("S3", "B2")]


def test_prosumers_pick_and_are_picked_but_never_themselves():
    data = paper(pairs={"nearest": 2})
    data["agents"] += [
        {"id": "P1", "bus": 14, "a": 0.05, "b": 2.0, "pmin": -2.0, "pmax": 2.0},
        {"id": "P2", "bus": 13, "a": 0.05, "b": 2.0, "pmin": -2.0, "pmax": 2.0},
    ]
    scenario = parse_scenario(data)
    pairs = scenario.pairs
    assert all(n != m for n, m in pairs)
    # P1 and P2 are each other's nearest supply (neighbouring buses): one pair, listed once.
    assert [p for p in pairs if set(p) == {"P1", "P2"}] == [("P1", "P2")]
    for p in ("P1", "P2"):
        assert sum(p in pair for pair in pairs) >= 2
    # Limit: 4 sellers + 2 prosumers, less the prosumer itself.
    data["market"]["pairs"] = {"nearest": 6}
    with pytest.raises(ScenarioError, match="must be ≤ 5, the number of sellers and prosumers"):
        parse_scenario(data, "p.toml")


@pytest.mark.parametrize(
    ("pairs", "field", "reason"),
    [
        ({"nearest": 0}, "market.pairs.nearest", "must be ≥ 1"),
        ({"nearest": 5}, "market.pairs.nearest", "must be ≤ 4, the number of sellers"),
        ({"nearest": 2, "k": 1}, "market.pairs.k", "unknown key"),
        ({"nearest": "two"}, "market.pairs.nearest", "Input should be a valid integer"),
        (3, "market.pairs", "must be 'sellers-buyers', a list of [seller, buyer] pairs"),
        ("everyone", "market.pairs", "Input should be 'sellers-buyers'"),
    ],
)
def test_bad_pairs_name_the_file_and_the_field(tmp_path, pairs, field, reason):
    path = write(tmp_path, paper(pairs=pairs))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert f"{path}: {field}: {reason}" in str(info.value)
    assert len(info.value.errors) == 1  # one form of the union, not all three


def test_nearest_checks_the_buses_before_ranking(tmp_path):
    data = paper(pairs={"nearest": 2})
    data["agents"][1]["bus"] = 99
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError, match=r"agents\[1\] \(S2\)\.bus: bus 99 is not in case"):
        load_scenario(path)


def test_a_seller_its_nearest_partners_cannot_absorb_suggests_a_larger_k(tmp_path):
    data = paper(pairs={"nearest": 1})  # S1's only partner is B1 (the paper's all had four)
    data["agents"][0]["pmin"] = 6.5  # S1 must sell 6.5 kW …
    data["agents"][4]["pmin"] = -5.0  # … but B1 buys at most 5
    assert load_scenario(write(tmp_path, paper(pairs={"nearest": 3}) | {"agents": data["agents"]}))
    with pytest.raises(ScenarioError, match=r"agents\[0\] \(S1\)\.pmin: .*raise market\.pairs"):
        load_scenario(write(tmp_path, data))


def test_nearest_survives_the_launchers_effective_scenario(tmp_path):
    scenario = load_scenario(write(tmp_path, paper(pairs={"nearest": 2})))
    data = effective_scenario(scenario, "plain")
    assert data["market"]["pairs"] == {"nearest": 2}
    assert parse_scenario(data).pairs == scenario.pairs


def test_a_nearest_market_negotiates_to_the_central_optimum():
    scenario = parse_scenario(paper(pairs={"nearest": 2}))
    setup = build_setup(scenario)
    assert len(setup.graph.pairs) < 12
    assert_matches_central(setup, agent_costs(scenario))
