"""Proof-of-Solution checks: the optimum passes; each kind of perturbation fails, named."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from privgrid.market.agent_step import AgentCost
from privgrid.market.central import solve_central
from privgrid.market.kkt import AgentView, Tolerances, check_agent, check_solution
from privgrid.market.line_step import LinePrices
from privgrid.market.setup import agent_costs, build_setup
from privgrid.scenario import load_scenario

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.fixture(scope="module")
def optimum():
    """The centralised optimum of scenario B as a full solution (P, λ, c, η, θ)."""
    scenario = load_scenario(CONFIGS / "paper.toml")
    setup = build_setup(scenario)
    costs = agent_costs(scenario)
    central = solve_central(setup, costs)
    charges = setup.G.T @ (central.line_prices.up - central.line_prices.down)
    return (
        setup,
        costs,
        {
            "trades": central.trades,
            "prices": central.prices,
            "charges": charges,
            "line_prices": central.line_prices,
            "theta": central.theta,
        },
    )


def check(optimum, **changes):
    setup, costs, solution = optimum
    return check_solution(setup, costs, **{**solution, **changes})


def failed_conditions(report):
    return {c.condition for c in report.failures}


def trade(setup, owner, partner):
    return setup.graph.trade(owner, partner)


def test_the_optimum_passes_every_condition(optimum):
    report = check(optimum)
    assert report.passed, report.failures
    conditions = {c.condition for c in report.checks}
    assert conditions == {
        "A1-total-bounds",
        "A1-trade-sign",
        "A2-dual-sign",
        "A2-complementarity",
        "A3-stationarity",
        "A4-reciprocity",
        "A4-price-agreement",
        "L1-line-limit",
        "L2-dual-sign",
        "L2-complementarity",
        "L3-charge",
    }


def test_stationarity_violation_is_named(optimum):
    setup, _, sol = optimum
    prices = sol["prices"].copy()
    t = trade(setup, "S1", "B2")
    prices[[t, setup.graph.mirror[t]]] += 0.05  # both sides agree, but it is not θ
    report = check(optimum, prices=prices)
    failed = {(c.condition, c.subject) for c in report.failures}
    assert ("A3-stationarity", "trade S1-B2") in failed
    assert ("A3-stationarity", "trade B2-S1") in failed
    assert "A4-price-agreement" not in failed_conditions(report)


def test_bound_violation_is_named(optimum):
    setup, _, sol = optimum
    trades = sol["trades"].copy()
    t = trade(setup, "S3", "B1")  # S3 sits at its Pmax of 6 kW
    trades[t] += 0.05
    trades[setup.graph.mirror[t]] -= 0.05
    report = check(optimum, trades=trades)
    failure = next(c for c in report.failures if c.condition == "A1-total-bounds")
    assert failure.subject == "agent S3"
    assert failure.value == pytest.approx(0.05, abs=1e-6)
    assert failure.tolerance == pytest.approx(1e-3)


def test_trade_sign_violation_is_named(optimum):
    setup, _, sol = optimum
    trades = sol["trades"].copy()
    t = trade(setup, "B3", "S2")
    trades[t] = 0.2  # a buyer selling
    assert "A1-trade-sign" in failed_conditions(check(optimum, trades=trades))


def test_reciprocity_violation_is_named(optimum):
    setup, _, sol = optimum
    trades = sol["trades"].copy()
    trades[trade(setup, "S2", "B3")] += 0.01
    failed = {(c.condition, c.subject) for c in check(optimum, trades=trades).failures}
    assert ("A4-reciprocity", "pair S2-B3") in failed
    assert ("A4-reciprocity", "pair B3-S2") in failed


def test_price_disagreement_is_named(optimum):
    setup, _, sol = optimum
    prices = sol["prices"].copy()
    prices[trade(setup, "S4", "B1")] += 0.01
    assert "A4-price-agreement" in failed_conditions(check(optimum, prices=prices))


def test_line_dual_sign_violation_is_named(optimum):
    _, _, sol = optimum
    eta = sol["line_prices"]
    bad = LinePrices(eta.up - np.array([0.0, 0.01]), eta.down)  # η⁺ of 4-5 negative
    failures = check(optimum, line_prices=bad).failures
    assert any(c.condition == "L2-dual-sign" and c.subject == "line 4-5" for c in failures)


def test_agent_bound_dual_sign_violation_is_named(optimum):
    setup, _, sol = optimum
    theta = sol["theta"].copy()
    theta[setup.graph.index("S3")] = 1.0  # at Pmax, but θ < a·Pmax + b = 1.24: μ⁺ < 0
    failures = check(optimum, theta=theta).failures
    assert any(c.condition == "A2-dual-sign" and c.subject == "agent S3" for c in failures)


def test_line_complementarity_violation_is_named(optimum):
    _, _, sol = optimum
    eta = sol["line_prices"]
    bad = LinePrices(eta.up, eta.down + np.array([0.5, 0.0]))  # η⁻ > 0 on 2-3, F = +3
    failures = check(optimum, line_prices=bad).failures
    assert any(c.condition == "L2-complementarity" and c.subject == "line 2-3" for c in failures)


def test_agent_complementarity_violation_is_named(optimum):
    setup, _, sol = optimum
    theta = sol["theta"].copy()
    theta[setup.graph.index("S1")] += 0.01  # S1 is strictly inside its bounds
    failures = check(optimum, theta=theta).failures
    assert any(c.condition == "A2-complementarity" and c.subject == "agent S1" for c in failures)


def test_wrong_charge_is_named(optimum):
    setup, _, sol = optimum
    charges = sol["charges"].copy()
    t = trade(setup, "S1", "B1")
    charges[t] += 0.01
    failures = check(optimum, charges=charges).failures
    assert any(c.condition == "L3-charge" and c.subject == "trade S1-B1" for c in failures)
    assert any(c.condition == "A3-stationarity" and c.subject == "trade S1-B1" for c in failures)


def test_line_overload_is_named(optimum):
    setup, _, sol = optimum
    trades = sol["trades"].copy()
    t = trade(setup, "S1", "B1")  # φ(2-3) = 0.56: more S1→B1 overloads 2-3
    trades[t] += 0.2
    trades[setup.graph.mirror[t]] -= 0.2
    failures = check(optimum, trades=trades).failures
    assert any(c.condition == "L1-line-limit" and c.subject == "line 2-3" for c in failures)


def test_report_lists_value_and_tolerance_of_each_failure(optimum):
    _, _, sol = optimum
    trades = sol["trades"].copy()
    trades[0] += 0.5
    report = check(optimum, trades=trades)
    assert not report.passed
    as_dict = report.as_dict()
    assert as_dict["passed"] is False
    for failure in as_dict["failures"]:
        assert set(failure) == {"condition", "subject", "value", "tolerance", "passed"}
        assert failure["value"] > failure["tolerance"]


def test_zero_trades_use_the_one_sided_stationarity():
    """A seller may sit at 0 when the price is below its marginal value, a buyer above."""
    cost = AgentCost(a=0.05, b=1.0, pmin=0.0, pmax=5.0)
    tol = Tolerances(power=1e-3, price=1e-3)
    view = AgentView(
        partners=["B1", "B2"],
        trades=np.array([2.0, 0.0]),
        prices=np.array([1.1, 0.9]),
        charges=np.zeros(2),
        lo=np.zeros(2),
        hi=np.full(2, np.inf),
        partner_prices=np.array([1.1, 0.9]),
        partner_trades=np.array([-2.0, 0.0]),
    )
    assert all(c.passed for c in check_agent("S1", cost, 1.1, view, tol))
    raised = replace(view, prices=np.array([1.1, 1.2]), partner_prices=np.array([1.1, 1.2]))
    failed = [c for c in check_agent("S1", cost, 1.1, raised, tol) if not c.passed]
    assert [(c.condition, c.subject) for c in failed] == [("A3-stationarity", "trade S1-B2")]
