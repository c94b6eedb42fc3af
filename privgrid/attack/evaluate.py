"""``attack.json``: what the coalition learnt, measured against the truth, and what it cost.

The simulation's evaluator — not a participant — reads the coordinator's estimates, the
target's true data from the scenario (the colluders never see it), the run's results and, with
``attack.compare_honest``, the honest market of the same scenario (negotiated in one process:
an honest run reproduces it bit for bit, so there is no need to run it over the network).
Metrics follow protocol.md §9.2: relative errors of Pmax, Pmin, a, b (active and passive);
detection (pair-check failures and the first round with one); the outcome against the honest
run (rounds, welfare change, largest change in any trade and price, convergence, each
colluder's surplus change).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from privgrid.attack.estimators import relative_error
from privgrid.market.negotiation import NegotiationState, negotiate, welfare
from privgrid.market.setup import MarketSetup, agent_costs, build_setup, played_costs
from privgrid.results import dumps

ESTIMATES_FILE = "attack-estimates.json"


def _surplus(
    setup: MarketSetup, trades: np.ndarray, prices: np.ndarray, charges: np.ndarray, agent: str
) -> float:
    """What ``agent`` gains: Σ (λ − c)·P over its trades minus its (true) cost."""
    g = setup.graph
    s = g.slots[g.index(agent)]
    cost = agent_costs(setup.scenario)[agent]
    return float(np.sum((prices[s] - charges[s]) * trades[s])) - cost.cost(float(trades[s].sum()))


def _vectors(setup: MarketSetup, results: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    g = setup.graph
    P, lam, c = (np.zeros(g.n_trades) for _ in range(3))
    for row in results["trades"]:
        t, m = g.trade(row["seller"], row["buyer"]), g.trade(row["buyer"], row["seller"])
        P[t], P[m] = row["power"], row.get("buyer_power", -row["power"])
        lam[t], lam[m] = row["price"], row.get("buyer_price", row["price"])
        c[t], c[m] = row["charge"], -row["charge"]
    return P, lam, c


def welfare_loss_vs_optimum(optimum: float | None, welfare: float) -> float | None:
    """``(optimum − welfare) / |optimum|``: what the market loses against the centralised optimum
    of the true data (None without an optimum). With I6, what the target's perturbation costs."""
    if not optimum:
        return None
    return (optimum - welfare) / abs(optimum)


def honest_baseline(
    setup: MarketSetup, observe: Callable[[int, NegotiationState, np.ndarray], None] | None = None
) -> dict[str, Any]:
    """The same scenario without the attack, negotiated in one process (``observe`` as in
    :func:`~privgrid.market.negotiation.negotiate`)."""
    scenario = setup.scenario.model_copy(update={"attack": None})
    honest = build_setup(scenario)
    result = negotiate(
        honest, played_costs(scenario), welfare_costs=agent_costs(scenario), observe=observe
    )
    s = result.state
    return {
        "rounds": result.rounds,
        "converged": result.converged,
        "welfare": welfare(honest, agent_costs(scenario), s.trades),
        "trades": s.trades,
        "prices": s.prices,
        "charges": s.charges,
    }


def evaluate(
    setup: MarketSetup, results: Mapping[str, Any], estimates: Mapping[str, Any] | None
) -> dict[str, Any]:
    scenario = setup.scenario
    attack = scenario.attack
    assert attack is not None
    truth = scenario.agent(attack.target)
    est = estimates or {}
    active, passive = est.get("active", {}), est.get("passive", {})
    pair_failures = [v for v in results.get("violations", []) if "pair check" in v["reason"]]
    report: dict[str, Any] = {
        "target": attack.target,
        "colluders": list(attack.colluders),
        "strategy": attack.strategy,
        "shares": attack.shares,
        "hardening": {
            "pair_checks": scenario.privacy.pair_checks,
            "lm_leg": scenario.privacy.lm_leg,
            "target_noise": truth.privacy_noise.model_dump() if truth.privacy_noise else None,
        },
        "estimates_found": estimates is not None,
        "truth": {"pmax": truth.pmax, "pmin": truth.pmin, "a": truth.a, "b": truth.b},
        "estimates": {
            "pmax": est.get("pmax"),
            "pmin": est.get("pmin"),
            "a": active.get("a"),
            "b": active.get("b"),
            "passive_a": passive.get("a"),
            "passive_b": passive.get("b"),
        },
        "errors": {
            "pmax": relative_error(est.get("pmax"), truth.pmax),
            "pmin": relative_error(est.get("pmin"), truth.pmin),
            "a": relative_error(active.get("a"), truth.a),
            "b": relative_error(active.get("b"), truth.b),
            "passive_a": relative_error(passive.get("a"), truth.a),
            "passive_b": relative_error(passive.get("b"), truth.b),
        },
        "detection": {
            "pair_check_failures": len(pair_failures),
            "first_round": min((v["round"] for v in pair_failures), default=None),
            "violations": len(results.get("violations", [])),
        },
        "attacked": {
            "rounds": results["rounds"],
            "converged": results["converged"],
            "welfare": results["social_welfare"],
            "final_mismatch": results.get("residuals", {}).get("r_P"),
        },
        "phases": est.get("phases", []),
    }
    if attack.compare_honest:
        honest = honest_baseline(setup)
        P, lam, c = _vectors(setup, results)
        w = results["social_welfare"]
        optimum = results.get("optimal_social_welfare")
        report["honest"] = {
            "rounds": honest["rounds"],
            "converged": honest["converged"],
            "welfare": honest["welfare"],
            # What the target's own perturbation (I6) costs, attack or not.
            "welfare_loss_vs_optimum": welfare_loss_vs_optimum(optimum, honest["welfare"]),
        }
        report["outcome"] = {
            "extra_rounds": results["rounds"] - honest["rounds"],
            "welfare_change": None  # a failed run's welfare is unknown
            if w is None
            else (w - honest["welfare"]) / abs(honest["welfare"]),
            "max_trade_change": float(np.max(np.abs(P - honest["trades"]))),
            "max_price_change": float(np.max(np.abs(lam - honest["prices"]))),
            "colluder_surplus_change": {
                c_id: _surplus(setup, P, lam, c, c_id)
                - _surplus(setup, honest["trades"], honest["prices"], honest["charges"], c_id)
                for c_id in attack.colluders
            },
        }
    return report


def write_attack_report(folder: Path, setup: MarketSetup, results: Mapping[str, Any]) -> dict:
    """Read the coordinator's estimates (if it wrote any) and write ``attack.json``."""
    path = folder / ESTIMATES_FILE
    estimates = json.loads(path.read_text()) if path.exists() else None
    report = evaluate(setup, results, estimates)
    (folder / "attack.json").write_text(dumps(report) + "\n")  # strict JSON: null, never NaN
    return report
