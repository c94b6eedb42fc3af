"""Scenario validation: every rejection names the file, the field and the reason."""

import copy
import tomllib
from pathlib import Path

import pytest

from privgrid.market.central import InfeasibleMarketError
from privgrid.market.feasibility import check_feasible
from privgrid.market.fixedpoint import RESOLUTION
from privgrid.market.setup import agent_costs, build_setup
from privgrid.scenario import MIN_EPSILON, Role, ScenarioError, load_scenario, parse_scenario

CONFIGS = Path(__file__).parent.parent / "configs"
PAPER = tomllib.loads((CONFIGS / "paper.toml").read_text())


def write(tmp_path: Path, data: dict, name: str = "s.toml") -> Path:
    """Serialise a scenario dict as TOML (tiny writer: enough for scenario files)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"
        return repr(v)

    lines = []
    for section, body in data.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {value(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f'"{k}" = {value(v)}' for k, v in body.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def errors_of(tmp_path, data) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError) as info:
        scenario = load_scenario(path)
        build_setup(scenario)
    message = str(info.value)
    assert str(path) in message, message
    return message


def paper():
    return copy.deepcopy(PAPER)


def test_paper_scenario_loads_with_roles_pairs_and_defaults():
    scenario = load_scenario(CONFIGS / "paper.toml")
    assert scenario.name == "paper"
    assert [a.role for a in scenario.agents] == [Role.SELLER] * 4 + [Role.BUYER] * 3
    assert scenario.pairs[:4] == [("S1", "B1"), ("S1", "B2"), ("S1", "B3"), ("S2", "B1")]
    assert len(scenario.pairs) == 12
    m = scenario.market
    assert (m.alpha, m.beta, m.tau, m.rho, m.lambda0) == (0.225, 0.25, 2.0, 1.5, 0.0)
    assert m.steps == "adaptive"
    assert (m.epsilon_p, m.epsilon_lambda, m.max_rounds) == (1e-4, 1e-4, 5000)


def test_a_scenario_without_a_privacy_table_gets_the_secure_defaults(tmp_path):
    """The issue's defaults (docs/scenarios.md, [privacy]): Paillier with 2048-bit keys, small
    keys refused, abort on a violation, I4 pair checks on and I5 (masked LM leg) on."""
    assert "privacy" not in PAPER
    privacy = load_scenario(write(tmp_path, paper())).privacy
    assert privacy.mode == "paillier"
    assert privacy.key_bits == 2048
    assert privacy.insecure_test_keys is False
    assert privacy.on_violation == "abort"
    assert privacy.pair_checks is True
    assert privacy.lm_leg == "masked"
    assert (privacy.pool_rounds, privacy.verify, privacy.crypto_threads) == (0, "every_round", 0)


def test_negative_a_is_rejected_naming_the_agent_field(tmp_path):
    data = paper()
    data["agents"][2]["a"] = -0.5
    assert "agents[2] (S3).a: must be > 0" in errors_of(tmp_path, data)


def test_zero_a_is_rejected(tmp_path):
    data = paper()
    data["agents"][0]["a"] = 0.0
    assert "agents[0] (S1).a: must be > 0" in errors_of(tmp_path, data)


def test_pmin_above_pmax_is_rejected(tmp_path):
    data = paper()
    data["agents"][4]["pmin"] = 2.0
    message = errors_of(tmp_path, data)
    assert "agents[4] (B1)" in message and "pmin (2.0) must not exceed pmax (-1.0)" in message


def test_unknown_bus_is_rejected(tmp_path):
    data = paper()
    data["agents"][1]["bus"] = 99
    assert "agents[1] (S2).bus: bus 99 is not in case 'ieee14'" in errors_of(tmp_path, data)


def test_duplicate_ids_are_rejected(tmp_path):
    data = paper()
    data["agents"][1]["id"] = "S1"
    assert "duplicate agent id 'S1'" in errors_of(tmp_path, data)


def test_reserved_and_unsafe_ids_are_rejected(tmp_path):
    data = paper()
    data["agents"][0]["id"] = "LM"
    assert "agents[0] (LM).id: id 'LM' is reserved" in errors_of(tmp_path, data)
    data["agents"][0]["id"] = "S 1/x"
    assert "agents[0] (S 1/x).id: String should match pattern" in errors_of(tmp_path, data)


def test_unknown_keys_are_rejected_everywhere(tmp_path):
    data = paper()
    data["agents"][3]["colour"] = "red"
    assert "agents[3] (S4).colour: unknown key" in errors_of(tmp_path, data)
    data = paper()
    data["market"]["gamma"] = 1.0
    assert "market.gamma: unknown key" in errors_of(tmp_path, data)
    data = paper()
    data["extras"] = {"x": 1}
    assert "extras: unknown key" in errors_of(tmp_path, data)


def test_missing_required_field_is_named(tmp_path):
    data = paper()
    del data["agents"][5]["b"]
    assert "agents[5] (B2).b: required field is missing" in errors_of(tmp_path, data)


def test_unknown_line_name_is_rejected(tmp_path):
    data = paper()
    data["network"]["line_limits"] = {"2-3": 3.0, "3-9": 1.0}
    message = errors_of(tmp_path, data)
    assert "network.line_limits.'3-9': no line '3-9' in case 'ieee14'" in message


def test_non_positive_line_limit_is_rejected(tmp_path):
    data = paper()
    data["network"]["line_limits"] = {"2-3": 0.0}
    assert "network.line_limits.2-3: Input should be greater than 0" in errors_of(tmp_path, data)


def test_unknown_case_is_rejected(tmp_path):
    data = paper()
    data["network"] = {"case": "ieee15"}
    assert "network.case: unknown case 'ieee15'" in errors_of(tmp_path, data)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("alpha", 0.3, "tau * alpha = 0.6 must be < 0.5"),  # with the default tau = 2
        ("tau", 2.5, "tau * alpha = 0.5625 must be < 0.5"),  # with the default alpha = 0.225
        ("alpha", -0.1, "Input should be greater than 0"),
        ("beta", 1.0, "Input should be less than 1"),
        ("beta", 0.0, "Input should be greater than 0"),
        ("rho", 2.0, "Input should be less than 2"),
        ("rho", 0.9, "Input should be greater than or equal to 1"),
        ("epsilon_p", 0.0, "Input should be greater than 0"),
        ("max_rounds", 0, "Input should be greater than or equal to 1"),
    ],
)
def test_parameters_that_break_convergence_are_rejected(tmp_path, field, value, reason):
    data = paper()
    data["market"][field] = value
    message = errors_of(tmp_path, data)
    assert "market" in message and reason in message


def test_the_smallest_epsilon_is_100_times_the_fixed_point_resolution(tmp_path):
    """algorithm.md §7: keep q ≤ ε/100; q is the wire's 2^-32 (privgrid/market/fixedpoint.py)."""
    data = paper()
    data["market"] |= {"epsilon_p": 100 * RESOLUTION, "epsilon_lambda": 100 * RESOLUTION}
    assert load_scenario(write(tmp_path, data)).market.epsilon_p == MIN_EPSILON
    data["market"]["epsilon_lambda"] = 99 * RESOLUTION
    message = errors_of(tmp_path, data)
    assert "market.epsilon_lambda: must be ≥ 2.33e-08" in message
    assert "market.epsilon_p" not in message


def test_a_lying_decryptor_needs_paillier_also_after_the_privacy_override(tmp_path):
    """Plain mode has no decryption to lie about: the agent would silently stay honest."""
    from privgrid.launcher import Launcher, LaunchOptions, effective_scenario

    data = paper()
    data["agents"][0] |= {"behaviour": "lying-decryptor", "lie": 0.02}
    reason = "behaviour 'lying-decryptor' needs privacy.mode = 'paillier' (mode is 'plain'"
    data["privacy"] = {"mode": "plain"}
    assert f"agents[0] (S1).behaviour: {reason}" in errors_of(tmp_path, data)
    del data["privacy"]  # the default mode is paillier
    path = write(tmp_path, data)
    scenario = load_scenario(path)
    assert effective_scenario(scenario, "paillier")["privacy"]["mode"] == "paillier"
    prefix = f"{path} with --privacy plain: agents[0] (S1).behaviour: "
    with pytest.raises(ScenarioError) as info:
        effective_scenario(scenario, "plain")
    assert str(info.value).startswith(prefix + reason), str(info.value)
    out = tmp_path / "run"
    with pytest.raises(ScenarioError, match="with --privacy plain"):
        Launcher(LaunchOptions(path, "plain", out=out)).prepare()
    assert not out.exists()  # refused before the run folder was made


def test_explicit_pairs_are_validated(tmp_path):
    data = paper()
    data["market"]["pairs"] = [["S1", "B1"], ["S1", "X9"]]
    assert "market.pairs[1]: unknown agent id(s) ['X9']" in errors_of(tmp_path, data)
    data["market"]["pairs"] = [["S1", "B1"], ["B1", "S1"]]
    assert "market.pairs[1]: duplicate pair B1-S1" in errors_of(tmp_path, data)
    data["market"]["pairs"] = [["S1", "S2"]]
    assert "market.pairs[0]: S1 and S2 are both sellers" in errors_of(tmp_path, data)
    data["market"]["pairs"] = [["S1", "S1"]]
    assert "market.pairs[0]: agent 'S1' cannot trade with itself" in errors_of(tmp_path, data)


def test_agent_without_partner_is_rejected(tmp_path):
    data = paper()
    data["market"]["pairs"] = [["S1", "B1"], ["S2", "B2"], ["S3", "B3"]]
    assert "agents[3] (S4): has no trading partner" in errors_of(tmp_path, data)


def test_explicit_pairs_are_oriented_seller_first():
    data = paper()
    data["market"]["pairs"] = [["B1", "S1"], ["S2", "B1"], ["S3", "B2"], ["S4", "B3"]]
    data["agents"][0]["pmax"] = 4.0  # keep every agent reachable through its partners
    scenario = parse_scenario(data)
    assert scenario.pairs[0] == ("S1", "B1")


def test_agent_whose_minimum_its_partners_cannot_absorb_is_rejected(tmp_path):
    data = paper()
    data["agents"][0]["pmin"] = 22.0  # buyers can take at most 7 + 6 + 8 = 21 kW
    data["agents"][0]["pmax"] = 30.0
    message = errors_of(tmp_path, data)
    assert "agents[0] (S1).pmin: must sell at least 22 kW" in message
    assert "can buy at most 21 kW" in message


def test_buyer_whose_partners_cannot_supply_is_rejected(tmp_path):
    data = paper()
    data["market"]["pairs"] = [["S1", "B1"], ["S2", "B2"], ["S3", "B3"], ["S4", "B3"]]
    data["agents"][5]["pmax"] = -5.0  # B2 needs ≥ 5 kW but S2 sells at most 4
    message = errors_of(tmp_path, data)
    assert "agents[5] (B2).pmax: must buy at least 5 kW" in message
    assert "can sell at most 4 kW" in message


def test_line_limits_that_make_the_market_infeasible_are_explained(tmp_path):
    data = paper()
    data["network"]["line_limits"] = {"7-8": 0.5}  # S3 (bus 8) must sell ≥ 1 kW over 7-8
    setup = build_setup(load_scenario(write(tmp_path, data)))
    with pytest.raises(InfeasibleMarketError, match=r"not within the line limits \(7-8 ≤ 0.5 kW\)"):
        check_feasible(setup, agent_costs(setup.scenario))


def test_toml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[scenario\nname = 'x'\n")
    with pytest.raises(ScenarioError, match=r"broken.toml: <syntax>: invalid TOML"):
        load_scenario(path)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ScenarioError, match=r"nope.toml: <file>: cannot read"):
        load_scenario(tmp_path / "nope.toml")


def test_several_errors_are_reported_together(tmp_path):
    data = paper()
    data["agents"][0]["a"] = -1.0
    data["agents"][1]["bus"] = "two"
    message = errors_of(tmp_path, data)
    assert "agents[0] (S1).a" in message and "agents[1] (S2).bus" in message


def test_prosumers_pair_with_everyone():
    data = paper()
    data["agents"].append({"id": "P1", "bus": 6, "a": 0.05, "b": 2.0, "pmin": -2.0, "pmax": 2.0})
    scenario = parse_scenario(data)
    prosumer_pairs = [p for p in scenario.pairs if "P1" in p]
    assert len(prosumer_pairs) == 7 and len(scenario.pairs) == 19


def test_the_same_line_in_both_orientations_is_rejected(tmp_path):
    data = paper()
    data["network"]["line_limits"] = {"2-3": 3.0, "3-2": 2.0}
    message = errors_of(tmp_path, data)
    assert "network.line_limits: the same line is listed twice" in message
