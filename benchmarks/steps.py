"""Step sizes: rounds to convergence with the published constant steps and with the defaults.

Usage: ``python benchmarks/steps.py [CONFIG …] [--random N] [--quick] [--write-docs]``

Every scenario is negotiated in process (:func:`privgrid.market.negotiation.negotiate`: the
same pure functions, fixed-point values, step controller and stopping rule as the
multi-process run, which reproduces it bit for bit) twice:

- **before**: the published method of algorithm.md §5.1, the defaults before adaptive steps —
  ``steps = "fixed"``, ``tau = 1``, ``alpha = 0.2``, ``rho = 1`` for every key the file does
  not set itself;
- **after**: the file as shipped, with today's defaults.

The scenarios: every file in configs/ (its honest market: an ``[attack]`` is left out; a day
scenario's intervals are measured by benchmarks/day.py, cold and warm), the
paper case with every cost divided by 20 (prices ~0.1 $/kW, the price level of a real feeder,
docs/market.md) and N random markets of the property test's generator
(``tests/random_markets.py``, seeds 0, 1, 2, …), at the default ε = 1e-4 and at the property
test's ε = 1e-6. Rounds are deterministic,
so they are exact whatever the machine's load; no time is measured. Every run is checked
against the centralised QP: every party's Proof-of-Solution KKT checks, the largest
difference of an agent's total from the optimum's, the relative welfare gap. Nothing is
asserted; ``--write-docs`` rewrites the ``steps`` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.perfdoc import command_line, markdown_table, stamp, text_table, write_section
from privgrid.market.central import solve_central
from privgrid.market.kkt import check_solution
from privgrid.market.negotiation import negotiate
from privgrid.market.setup import agent_costs, build_setup, played_costs
from privgrid.market.steps import StepController
from privgrid.scenario import parse_scenario
from tests.random_markets import seeded_markets

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
#: algorithm.md §5.1: the defaults before adaptive steps.
PUBLISHED = {"steps": "fixed", "tau": 1.0, "alpha": 0.2, "rho": 1.0}
#: The random markets' round limit (their slowest published-step run needs ~700 rounds).
RANDOM_MAX_ROUNDS = 50_000
#: The random markets' tolerances: the default, and the property test's (tests/test_property.py).
RANDOM_EPSILONS = {1e-4: "ε = 1e-4 (the default)", 1e-6: "ε = 1e-6 (the property test's)"}
FEEDER_SCALE = 1 / 20
QUICK_RANDOM = 3


@dataclass
class Run:
    """One in-process negotiation, checked against the centralised optimum."""

    converged: bool
    rounds: int
    exponent: int  # the step exponent of the last round (0 with fixed steps)
    changes: int
    kkt: bool
    max_total_gap: float  # kW: the largest |S_n − S_n*|
    welfare_gap: float  # relative |W − W*| / |W*|


@dataclass
class Case:
    name: str
    agents: int
    pairs: int
    before: Run
    after: Run

    @property
    def ratio(self) -> float:
        return self.after.rounds / self.before.rounds


def negotiate_checked(data: dict[str, Any], max_rounds: int | None = None) -> tuple[Run, Any]:
    scenario = parse_scenario(data)
    setup = build_setup(scenario)
    played, costs = played_costs(scenario), agent_costs(scenario)
    controller = StepController.for_market(scenario.market)
    result = negotiate(
        setup, played, welfare_costs=costs, controller=controller, max_rounds=max_rounds
    )
    central = solve_central(setup, costs)
    s = result.state
    report = check_solution(setup, played, s.trades, s.prices, s.charges, s.line_prices, s.theta)
    totals = np.array([s.trades[sl].sum() for sl in setup.graph.slots])
    welfare = result.trace[-1].welfare
    run = Run(
        result.converged,
        result.rounds,
        controller.exponent,
        controller.changes,
        report.passed,
        float(np.max(np.abs(totals - central.totals))),
        abs(welfare - central.welfare) / max(abs(central.welfare), 1e-12),
    )
    return run, setup


def compare(name: str, data: dict[str, Any], max_rounds: int | None = None) -> Case:
    """``data`` as given (after) and with the published steps where it sets none (before)."""
    data = copy.deepcopy(data)
    data.pop("attack", None)  # the collusion scenario: its honest market, not the attack
    before_data = copy.deepcopy(data)
    market = before_data.setdefault("market", {})
    for key, value in PUBLISHED.items():
        market.setdefault(key, value)
    before, setup = negotiate_checked(before_data, max_rounds)
    after, _ = negotiate_checked(data, max_rounds)
    return Case(name, setup.graph.n_agents, len(setup.graph.pairs), before, after)


def config_data(name: str) -> dict[str, Any]:
    return tomllib.loads((CONFIGS / f"{name}.toml").read_text(encoding="utf-8"))


def feeder_priced(data: dict[str, Any]) -> dict[str, Any]:
    """The same market with every cost scaled by :data:`FEEDER_SCALE` (prices ÷ 20)."""
    scaled = copy.deepcopy(data)
    for agent in scaled["agents"]:
        agent["a"] *= FEEDER_SCALE
        agent["b"] *= FEEDER_SCALE
    return scaled


def check_text(run: Run) -> str:
    return "pass" if run.kkt and run.converged else "FAIL"


def case_table(cases: list[Case]) -> tuple[list[str], list[list[str]]]:
    head = [
        "scenario",
        "agents",
        "pairs",
        "rounds before",
        "rounds after",
        "after ÷ before",
        "final exponent (changes)",
        "KKT before / after",
        "welfare gap before / after",
        "max abs(S−S*) kW before / after",
    ]
    rows = []
    for c in cases:
        b, a = c.before, c.after

        def rounds(r: Run) -> str:
            return str(r.rounds) + ("" if r.converged else " (not conv.)")

        rows.append(
            [
                c.name,
                str(c.agents),
                str(c.pairs),
                rounds(b),
                rounds(a),
                f"{c.ratio:.2f}",
                f"{a.exponent:+d} ({a.changes})",
                f"{check_text(b)} / {check_text(a)}",
                f"{b.welfare_gap:.1e} / {a.welfare_gap:.1e}",
                f"{b.max_total_gap:.1e} / {a.max_total_gap:.1e}",
            ]
        )
    return head, rows


def summary_table(groups: dict[str, list[Case]]) -> tuple[list[str], list[list[str]]]:
    head = [
        "scenarios",
        "count",
        "median after ÷ before",
        "worst after ÷ before",
        "worse than before",
        "all KKT pass",
        "largest welfare gap before / after",
    ]
    rows = []
    for label, cases in groups.items():
        if not cases:
            continue
        ratios = [c.ratio for c in cases]
        rows.append(
            [
                label,
                str(len(cases)),
                f"{statistics.median(ratios):.2f}",
                f"{max(ratios):.2f}",
                str(sum(r > 1.0 for r in ratios)),
                "yes" if all(c.after.kkt and c.after.converged for c in cases) else "NO",
                f"{max(c.before.welfare_gap for c in cases):.1e} / "
                f"{max(c.after.welfare_gap for c in cases):.1e}",
            ]
        )
    return head, rows


def random_label(epsilon: float) -> str:
    return f"random markets (tests/random_markets.py), {RANDOM_EPSILONS[epsilon]}"


def doc_section(
    configs: list[Case], scaled: list[Case], random: dict[float, list[Case]], elapsed: float
) -> str:
    groups = {"configs/": configs} | {random_label(e): cases for e, cases in random.items()}
    return "\n".join(
        [
            "### Step sizes: rounds before and after adaptive steps (`benchmarks/steps.py`)",
            "",
            stamp(command_line(), elapsed),
            "",
            markdown_table(*case_table(configs + scaled)),
            "",
            markdown_table(*summary_table(groups)),
            "",
            "In process (`negotiate`, bit for bit what `privgrid run` computes), the stopping "
            'rule unchanged. **Before**: the published constant steps (`steps = "fixed"`, '
            "τ = 1, α = 0.2, ρ = 1, σ by algorithm.md §5.1) for every key the file does not "
            "set; **after**: the file as shipped with today's defaults (adaptive steps, τ = 2, "
            "α = 0.225, ρ = 1.5). `collusion` pins the published steps for its experiment, so "
            "both columns are the same run. `paper ÷ 20` is the paper case with every cost "
            "divided by 20 (prices ~0.1 $/kW, a real feeder's level). **Final exponent**: "
            "the step exponent e of the last round (τ·2^e, α·2^-e, σ·2^-e) and how many "
            "changes the MO made. **KKT** is every party's Proof-of-Solution check of the "
            "negotiated point; the **welfare gap** and **max abs(S−S\\*)** compare with the "
            "centralised QP. Rounds do not depend on the machine.",
        ]
    )


def is_day(path: Path) -> bool:
    """A day scenario (``[day]``): 96 markets, measured by benchmarks/day.py instead."""
    with path.open("rb") as f:
        return "day" in tomllib.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="names in configs/ (default: all)")
    parser.add_argument("--random", type=int, default=40, help="random markets (default 40)")
    parser.add_argument("--quick", action="store_true", help="paper and 3 random markets (smoke)")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs section")
    args = parser.parse_args()
    names = args.configs or sorted(p.stem for p in CONFIGS.glob("*.toml") if not is_day(p))
    count = args.random
    if args.quick:
        names, count = args.configs or ["paper"], QUICK_RANDOM
    started = time.perf_counter()
    configs = []
    for name in names:
        configs.append(compare(name, config_data(name)))
        c = configs[-1]
        print(f"{name}: {c.before.rounds} -> {c.after.rounds} rounds", flush=True)
    scaled = []
    if "paper" in names:
        scaled.append(compare("paper ÷ 20", feeder_priced(config_data("paper"))))
    random: dict[float, list[Case]] = {}
    for epsilon in RANDOM_EPSILONS:
        keys = {"max_rounds": RANDOM_MAX_ROUNDS, "epsilon_p": epsilon, "epsilon_lambda": epsilon}
        cases = random[epsilon] = []
        for data in seeded_markets(count, keys):
            cases.append(compare(data["scenario"]["name"], data))
            c = cases[-1]
            print(f"{c.name} ε={epsilon:g}: {c.before.rounds} -> {c.after.rounds}", flush=True)
    print(text_table(*case_table(configs + scaled)))
    print()
    groups = {"configs/": configs} | {random_label(e): cases for e, cases in random.items()}
    print(text_table(*summary_table(groups)))
    if args.write_docs:
        elapsed = time.perf_counter() - started
        write_section("steps", doc_section(configs, scaled, random, elapsed))
        print("wrote the steps section of docs/performance.md")


if __name__ == "__main__":
    main()
