"""Every field of a scenario file, given a bad value: the error names the file, the field and why.

One row per (field, bad value), covering every section and key of docs/scenarios.md —
``[scenario]``, ``[network]`` (``case``, ``line_limits``), ``[[agents]]`` (every key, including
``privacy_noise`` and the lying-decryptor options), ``[market]`` (``pairs`` in its three forms
and every parameter), ``[privacy]``, ``[timeouts]``, ``[attack]``, ``[market_operator]``,
``[ledger]`` and the top level, where each section itself gets a wrong type (and ``[scenario]``
and ``[[agents]]`` go missing). Each row edits one value of a valid scenario (the paper case;
the collusion case for ``[attack]``), writes it as TOML and loads it the way a run does
(:func:`load_scenario`, then :func:`build_setup` for the network checks). The error must be a
:class:`ScenarioError` with a line ``<file>: <field>: <reason>``.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from privgrid.market.setup import build_setup
from privgrid.scenario import ScenarioError, load_scenario

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PAPER = tomllib.loads((CONFIGS / "paper.toml").read_text())
COLLUSION = tomllib.loads((CONFIGS / "collusion.toml").read_text())
INF, NAN = float("inf"), float("nan")
#: Replace the whole section or item at the path (``pairs``, ``privacy_noise``, new sections)
#: instead of merging a table into it.
REPLACED = ("pairs", "privacy_noise", "weather")
#: A value for ``("agents",)``: keep only the first agent (too few agents).
FIRST_ONLY = "<keep the first agent only>"

#: (case id, where, bad value, field named in the error, reason the error gives).
#: ``where``: keys into the TOML document; a table value is merged into the item there; None
#: deletes the key.
CASES: list[tuple[str, tuple[Any, ...], Any, str, str]] = [
    # [scenario]
    ("scenario.name-empty", ("scenario", "name"), "", "scenario.name", "at least 1 character"),
    ("scenario.name-space", ("scenario", "name"), "a b", "scenario.name", "should match pattern"),
    ("scenario.seed", ("scenario", "seed"), "one", "scenario.seed", "valid integer"),
    ("scenario.unknown", ("scenario", "colour"), "red", "scenario.colour", "unknown key"),
    # [network]
    ("network.case", ("network", "case"), "ieee999", "network.case", "ieee999"),
    ("network.case-type", ("network", "case"), 14, "network.case", "valid string"),
    (
        "network.case-simbench",
        ("network", "case"),
        "simbench:1-LV-rural1--2-sw",
        "network.case",
        "a SimBench grid needs a day scenario ([day] section",
    ),
    (
        "network.line_limits-negative",
        ("network", "line_limits", "2-3"),
        -1.0,
        "network.line_limits.2-3",
        "greater than 0",
    ),
    (
        "network.line_limits-inf",
        ("network", "line_limits", "2-3"),
        INF,
        "network.line_limits.2-3",
        "finite",
    ),
    (
        "network.line_limits-unknown",
        ("network", "line_limits", "3-9"),
        1.0,
        "network.line_limits.'3-9'",
        "no line '3-9'",
    ),
    (
        "network.line_limits-type",
        ("network", "line_limits"),
        3.0,
        "network.line_limits",
        "valid dictionary",
    ),
    # [[agents]]
    ("agents.id-reserved", ("agents", 0, "id"), "LM", "agents[0] (LM).id", "reserved"),
    ("agents.id-pattern", ("agents", 0, "id"), "S 1", "agents[0] (S 1).id", "should match pattern"),
    (
        "agents.id-duplicate",
        ("agents", 1, "id"),
        "S1",
        "agents[1] (S1).id",
        "duplicate agent id 'S1'",
    ),
    ("agents.bus-unknown", ("agents", 0, "bus"), 99, "agents[0] (S1).bus", "bus 99 is not in case"),
    ("agents.bus-type", ("agents", 0, "bus"), "two", "agents[0] (S1).bus", "valid integer"),
    ("agents.a", ("agents", 2, "a"), -0.5, "agents[2] (S3).a", "must be > 0"),
    ("agents.a-nan", ("agents", 2, "a"), NAN, "agents[2] (S3).a", "finite"),
    ("agents.b", ("agents", 0, "b"), "cheap", "agents[0] (S1).b", "valid number"),
    ("agents.b-inf", ("agents", 0, "b"), INF, "agents[0] (S1).b", "finite"),
    (
        "agents.pmin",
        ("agents", 0, "pmin"),
        8.0,
        "agents[0] (S1).pmin",
        "pmin (8.0) must not exceed pmax (7.0)",
    ),
    ("agents.pmin-type", ("agents", 0, "pmin"), "low", "agents[0] (S1).pmin", "valid number"),
    ("agents.pmax", ("agents", 4, "pmax"), NAN, "agents[4] (B1).pmax", "finite"),
    ("agents.pmax-type", ("agents", 4, "pmax"), "high", "agents[4] (B1).pmax", "valid number"),
    (
        "agents.pmax-zero",
        ("agents", 0),
        {"pmin": 0.0, "pmax": 0.0},
        "agents[0] (S1).pmax",
        "can neither sell nor buy",
    ),
    (
        "agents.behaviour",
        ("agents", 0, "behaviour"),
        "greedy",
        "agents[0] (S1).behaviour",
        "'honest' or 'lying-decryptor'",
    ),
    (
        "agents.lie-honest",
        ("agents", 0, "lie"),
        0.1,
        "agents[0] (S1).lie",
        "apply only to behaviour 'lying-decryptor'",
    ),
    (
        "agents.lie-zero",
        ("agents", 0),
        {"behaviour": "lying-decryptor", "lie": 0.0},
        "agents[0] (S1).lie",
        "non-zero lie",
    ),
    (
        "agents.lie_from_round",
        ("agents", 0),
        {"behaviour": "lying-decryptor", "lie_from_round": 0},
        "agents[0] (S1).lie_from_round",
        "greater than or equal to 1",
    ),
    (
        "agents.privacy_noise.sigma_b",
        ("agents", 0, "privacy_noise"),
        {"sigma_b": -1.0},
        "agents[0] (S1).privacy_noise.sigma_b",
        "greater than or equal to 0",
    ),
    (
        "agents.privacy_noise.r",
        ("agents", 0, "privacy_noise"),
        {"r": 1.0},
        "agents[0] (S1).privacy_noise.r",
        "less than 1",
    ),
    (
        "agents.privacy_noise.w",
        ("agents", 0, "privacy_noise"),
        {"w": -0.1},
        "agents[0] (S1).privacy_noise.w",
        "greater than or equal to 0",
    ),
    (
        "agents.privacy_noise-type",
        ("agents", 0, "privacy_noise"),
        3,
        "agents[0] (S1).privacy_noise",
        "must be a table (got 3)",
    ),
    (
        "agents.privacy_noise-unknown",
        ("agents", 0, "privacy_noise"),
        {"q": 1.0},
        "agents[0] (S1).privacy_noise.q",
        "unknown key",
    ),
    ("agents.unknown", ("agents", 0, "colour"), "red", "agents[0] (S1).colour", "unknown key"),
    ("agents.missing", ("agents", 0, "a"), None, "agents[0] (S1).a", "required field is missing"),
    # [market]
    (
        "market.pairs-form",
        ("market", "pairs"),
        5,
        "market.pairs",
        "must be 'sellers-buyers', a list",
    ),
    ("market.pairs-name", ("market", "pairs"), "everyone", "market.pairs", "sellers-buyers"),
    (
        "market.pairs-unknown-id",
        ("market", "pairs"),
        [["S1", "X9"]],
        "market.pairs[0]",
        "unknown agent id(s) ['X9']",
    ),
    (
        "market.pairs-self",
        ("market", "pairs"),
        [["S1", "S1"]],
        "market.pairs[0]",
        "cannot trade with itself",
    ),
    (
        "market.pairs-sellers",
        ("market", "pairs"),
        [["S1", "S2"]],
        "market.pairs[0]",
        "both sellers",
    ),
    (
        "market.pairs.nearest-zero",
        ("market", "pairs"),
        {"nearest": 0},
        "market.pairs.nearest",
        "must be ≥ 1",
    ),
    (
        "market.pairs.nearest-large",
        ("market", "pairs"),
        {"nearest": 9},
        "market.pairs.nearest",
        "must be ≤ 4",
    ),
    ("market.alpha", ("market", "alpha"), 0.0, "market.alpha", "greater than 0"),
    ("market.beta", ("market", "beta"), 1.0, "market.beta", "less than 1"),
    ("market.tau", ("market", "tau"), 0.0, "market.tau", "greater than 0"),
    ("market.tau-alpha", ("market", "tau"), 3.0, "market.tau", "tau * alpha = 0.675 must be < 0.5"),
    ("market.rho", ("market", "rho"), 2.0, "market.rho", "less than 2"),
    ("market.steps", ("market", "steps"), "auto", "market.steps", "'adaptive' or 'fixed'"),
    ("market.lambda0", ("market", "lambda0"), NAN, "market.lambda0", "finite"),
    ("market.epsilon_p", ("market", "epsilon_p"), 0.0, "market.epsilon_p", "greater than 0"),
    (
        "market.epsilon_lambda",
        ("market", "epsilon_lambda"),
        -1e-4,
        "market.epsilon_lambda",
        "greater than 0",
    ),
    (
        "market.epsilon_p-resolution",
        ("market", "epsilon_p"),
        1e-10,
        "market.epsilon_p",
        "must be ≥ 2.33e-08 (got 1e-10): 100 × the fixed-point resolution q = 2^-32",
    ),
    (
        "market.epsilon_lambda-resolution",
        ("market", "epsilon_lambda"),
        2e-8,
        "market.epsilon_lambda",
        "algorithm.md §7: q ≤ ε/100",
    ),
    (
        "market.max_rounds",
        ("market", "max_rounds"),
        0,
        "market.max_rounds",
        "greater than or equal to 1",
    ),
    ("market.max_rounds-type", ("market", "max_rounds"), 1.5, "market.max_rounds", "integer"),
    ("market.unknown", ("market", "gamma"), 1.0, "market.gamma", "unknown key"),
    # [privacy]
    ("privacy.mode", ("privacy", "mode"), "rsa", "privacy.mode", "'plain' or 'paillier'"),
    (
        "privacy.key_bits-small",
        ("privacy", "key_bits"),
        512,
        "privacy.key_bits",
        "greater than or equal to 1024",
    ),
    (
        "privacy.key_bits-insecure",
        ("privacy", "key_bits"),
        1024,
        "privacy.key_bits",
        "key_bits = 1024 is below 2048",
    ),
    (
        "privacy.insecure_test_keys",
        ("privacy", "insecure_test_keys"),
        "yes",
        "privacy.insecure_test_keys",
        "valid boolean (got 'yes')",
    ),
    (
        "privacy.on_violation",
        ("privacy", "on_violation"),
        "ignore",
        "privacy.on_violation",
        "'abort' or 'drop_pair'",
    ),
    (
        "privacy.pair_checks",
        ("privacy", "pair_checks"),
        "sometimes",
        "privacy.pair_checks",
        "valid boolean",
    ),
    (
        "privacy.lm_leg",
        ("privacy", "lm_leg"),
        "carrier",
        "privacy.lm_leg",
        "'masked', 'paillier' or 'sealed'",
    ),
    (
        "privacy.lm_leg-plain",
        ("privacy",),
        {"mode": "plain", "lm_leg": "paillier"},
        "privacy.lm_leg",
        "lm_leg = 'paillier' needs mode = 'paillier'",
    ),
    (
        "privacy.pool_rounds",
        ("privacy", "pool_rounds"),
        -1,
        "privacy.pool_rounds",
        "greater than or equal to 0",
    ),
    (
        "privacy.crypto_threads",
        ("privacy", "crypto_threads"),
        65,
        "privacy.crypto_threads",
        "less than or equal to 64",
    ),
    (
        "privacy.verify",
        ("privacy", "verify"),
        "never",
        "privacy.verify",
        "'every_round' or 'batch'",
    ),
    # [timeouts]
    ("timeouts.start", ("timeouts", "start"), 0.0, "timeouts.start", "greater than 0"),
    ("timeouts.round", ("timeouts", "round"), -5.0, "timeouts.round", "greater than 0"),
    ("timeouts.finish", ("timeouts", "finish"), INF, "timeouts.finish", "finite"),
    (
        "timeouts.on_missing",
        ("timeouts", "on_missing"),
        "retry",
        "timeouts.on_missing",
        "'abort' or 'wait'",
    ),
    ("timeouts.missing", ("timeouts", "missing"), 0.0, "timeouts.missing", "greater than 0"),
    # [attack]
    ("attack.target", ("attack", "target"), "X9", "attack.target", "unknown agent 'X9'"),
    ("attack.colluders-empty", ("attack", "colluders"), [], "attack.colluders", "at least 1 item"),
    (
        "attack.colluders-target",
        ("attack", "colluders"),
        ["S1"],
        "attack.colluders[0]",
        "is the target itself",
    ),
    (
        "attack.colluders-not-a-neighbour",
        ("attack",),
        {"target": "B1", "colluders": ["S1", "B2"]},  # buyers do not trade with each other
        "attack.colluders[1]",
        "B2 does not trade with the target B1",
    ),
    (
        "attack.colluders-unknown",
        ("attack", "colluders"),
        ["B1", "X9"],
        "attack.colluders[1]",
        "unknown agent 'X9'",
    ),
    (
        "attack.colluders-twice",
        ("attack", "colluders"),
        ["B1", "B1"],
        "attack.colluders",
        "listed twice",
    ),
    ("attack.strategy", ("attack", "strategy"), "loud", "attack.strategy", "'passive' or 'probe'"),
    (
        "attack.start_round",
        ("attack", "start_round"),
        0,
        "attack.start_round",
        "greater than or equal to 1",
    ),
    ("attack.ramp_step", ("attack", "ramp_step"), 0.0, "attack.ramp_step", "greater than 0"),
    (
        "attack.plateau_window",
        ("attack", "plateau_window"),
        1,
        "attack.plateau_window",
        "greater than or equal to 2",
    ),
    ("attack.plateau_tol", ("attack", "plateau_tol"), -1.0, "attack.plateau_tol", "greater than 0"),
    (
        "attack.hold_rounds",
        ("attack", "hold_rounds"),
        1,
        "attack.hold_rounds",
        "greater than or equal to 2",
    ),
    (
        "attack.probe_levels",
        ("attack", "probe_levels"),
        1,
        "attack.probe_levels",
        "greater than or equal to 2",
    ),
    (
        "attack.probe_prices",
        ("attack", "probe_prices"),
        [20.0],
        "attack.probe_prices",
        "at least two prices",
    ),
    ("attack.shares", ("attack", "shares"), "some", "attack.shares", "'compliant' or 'free'"),
    ("attack.release", ("attack", "release"), "maybe", "attack.release", "valid boolean"),
    (
        "attack.compare_honest",
        ("attack", "compare_honest"),
        3,
        "attack.compare_honest",
        "valid boolean",
    ),
    (
        "attack.coalition",
        ("attack", "coalition"),
        "a/b",
        "attack.coalition",
        "should match pattern",
    ),
    # [market_operator], [ledger]
    (
        "market_operator.behaviour",
        ("market_operator", "behaviour"),
        "lazy",
        "market_operator.behaviour",
        "'honest', 'tamper-trade'",
    ),
    (
        "ledger.quorum-zero",
        ("ledger", "quorum"),
        0,
        "ledger.quorum",
        "must be 'all' or a whole number ≥ 1 (got 0)",
    ),
    (
        "ledger.quorum-word",
        ("ledger", "quorum"),
        "most",
        "ledger.quorum",
        "must be 'all' or a whole number ≥ 1 (got 'most')",
    ),
    # top level: the sections themselves
    ("top.unknown-section", ("weather",), {"sun": True}, "weather", "unknown key"),
    (
        "top.day-section",
        ("day",),
        {"start": "2016-06-21T00:00", "intervals": 4},
        "day",
        "a day on a feeder ([day]) is cleared by `privgrid solve FILE --out DIR`",
    ),
    ("scenario-type", ("scenario",), 5, "scenario", "must be a table (got 5)"),
    ("scenario-missing", ("scenario",), None, "scenario", "required field is missing"),
    ("network-type", ("network",), "x", "network", "must be a table (got 'x')"),
    ("agents-one", ("agents",), FIRST_ONLY, "agents", "at least 2 items"),
    ("agents-type", ("agents",), "x", "agents", "must be an array of tables ([[agents]])"),
    ("agents-missing", ("agents",), None, "agents", "required field is missing"),
    ("market-type", ("market",), "x", "market", "must be a table (got 'x')"),
    ("privacy-type", ("privacy",), 5, "privacy", "must be a table (got 5)"),
    ("timeouts-type", ("timeouts",), "x", "timeouts", "must be a table (got 'x')"),
    ("attack-type", ("attack",), 3, "attack", "must be a table (got 3)"),
    ("market_operator-type", ("market_operator",), [], "market_operator", "must be a table"),
    ("ledger-type", ("ledger",), "x", "ledger", "must be a table (got 'x')"),
]


def bad_scenario(tmp_path: Path, where: tuple[Any, ...], value: Any) -> Path:
    data = copy.deepcopy(COLLUSION if where[0] == "attack" else PAPER)
    if where == ("agents",) and value == FIRST_ONLY:
        data["agents"] = data["agents"][:1]  # fewer than two agents
    else:
        node: Any = data
        for key in where[:-1]:
            node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
        last = where[-1]
        if value is None:
            del node[last]
        elif isinstance(value, dict) and last not in REPLACED:
            target = node[last] if isinstance(last, int) else node.setdefault(last, {})
            target.update(value)
        else:
            node[last] = value
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.mark.parametrize(
    ("where", "value", "field", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_a_bad_value_is_reported_with_file_field_and_reason(tmp_path, where, value, field, reason):
    path = bad_scenario(tmp_path, where, value)
    with pytest.raises(ScenarioError) as info:
        build_setup(load_scenario(path))
    lines = str(info.value).splitlines()
    prefix = f"{path}: {field}: "
    named = [line for line in lines if line.startswith(prefix)]
    assert named, f"no line starts with {prefix!r}: {lines}"
    assert any(reason in line.removeprefix(prefix) for line in named), (reason, named)
    assert all(e.file == str(path) and e.field and e.reason for e in info.value.errors)


def test_every_documented_key_has_a_case():
    """The table above covers every key the scenario model knows (a new key needs a row)."""
    from privgrid.scenario import (
        AgentSection,
        AttackSection,
        LedgerSection,
        MarketOperatorSection,
        MarketSection,
        NetworkSection,
        PrivacyNoise,
        PrivacySection,
        Scenario,
        ScenarioInfo,
        TimeoutsSection,
    )

    sections = {
        "scenario": ScenarioInfo,
        "network": NetworkSection,
        "agents": AgentSection,
        "agents.privacy_noise": PrivacyNoise,
        "market": MarketSection,
        "privacy": PrivacySection,
        "timeouts": TimeoutsSection,
        "attack": AttackSection,
        "market_operator": MarketOperatorSection,
        "ledger": LedgerSection,
    }
    keys = {f"{name}.{key}" for name, model in sections.items() for key in model.model_fields}
    keys |= {name for name in Scenario.model_fields if name != "source"}
    assert {"scenario", "agents", "privacy", "agents.privacy_noise", "market.pairs"} <= keys
    # A key is covered only by a case of its own (id "<key>" or "<key>-<what>"): a case for
    # privacy.mode does not cover a bad value of the [privacy] table itself.
    covered = {case[0].split("-")[0] for case in CASES}
    missing = sorted(k for k in keys if k not in covered)
    assert not missing, f"no bad-value case for {missing}"
