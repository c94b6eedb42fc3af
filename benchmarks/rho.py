"""Over-relaxation: rounds to convergence with ρ = 1.0 and ρ = 1.5 on every scenario.

Usage: ``python benchmarks/rho.py [CONFIG …] [--rho 1.0 1.5] [--quick] [--write-docs]``

Each scenario of configs/ (or the names given) is negotiated in process
(:func:`privgrid.market.negotiation.negotiate`: the same pure functions, fixed-point shares
and stopping rule as the multi-process run, which reproduces it bit for bit) once per ρ. The
stopping rule is unchanged (the spec's residuals against ε_P and ε_λ), so a setting counts
only if it still reaches the exact result: every run is checked against the centralised QP
(Proof-of-Solution KKT checks of every party; the largest difference of an agent's total
from the optimum's; the relative welfare gap). Nothing is asserted; ``--write-docs``
rewrites the ``rho`` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.perfdoc import (
    command_line,
    markdown_table,
    stamp,
    text_table,
    write_section,
)
from privgrid.market.central import solve_central
from privgrid.market.kkt import check_solution
from privgrid.market.negotiation import negotiate
from privgrid.market.setup import agent_costs, build_setup, played_costs
from privgrid.scenario import parse_scenario

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
QUICK = ["paper"]


@dataclass
class RhoRun:
    """One in-process negotiation of one scenario with one ρ."""

    config: str
    rho: float
    agents: int
    pairs: int
    converged: bool
    rounds: int
    seconds: float  # CPU time of the negotiation
    kkt: bool
    max_total_gap: float  # kW: the largest |S_n − S_n*|
    welfare_gap: float  # relative |W − W*| / |W*|


def run(config: str, rho: float, max_rounds: int | None = None) -> RhoRun:
    """Negotiate ``config`` with ``market.rho = rho`` and compare with the central optimum."""
    path = CONFIGS / f"{config}.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    market = data.setdefault("market", {})
    market["rho"] = rho
    if max_rounds is not None:
        market["max_rounds"] = max_rounds
    data.pop("attack", None)  # the collusion scenario: its honest market, not the attack
    scenario = parse_scenario(data, path)
    setup = build_setup(scenario)
    played, costs = played_costs(scenario), agent_costs(scenario)
    started = time.process_time()
    result = negotiate(setup, played, welfare_costs=costs)
    seconds = time.process_time() - started
    central = solve_central(setup, costs)
    s = result.state
    report = check_solution(setup, played, s.trades, s.prices, s.charges, s.line_prices, s.theta)
    totals = np.array([s.trades[sl].sum() for sl in setup.graph.slots])
    welfare = result.trace[-1].welfare
    return RhoRun(
        config,
        rho,
        setup.graph.n_agents,
        len(setup.graph.pairs),
        result.converged,
        result.rounds,
        seconds,
        report.passed,
        float(np.max(np.abs(totals - central.totals))),
        abs(welfare - central.welfare) / max(abs(central.welfare), 1e-12),
    )


def table(runs: list[RhoRun], rhos: list[float]) -> tuple[list[str], list[list[str]]]:
    base = rhos[0]
    head = ["scenario", "agents", "pairs"]
    for rho in rhos:
        head += [f"rounds ρ={rho:g}"] + ([f"saved vs ρ={base:g}"] if rho != base else [])
    head += ["KKT", "max abs(S−S*) kW", "welfare gap", "CPU s"]
    by_config: dict[str, dict[float, RhoRun]] = {}
    for r in runs:
        by_config.setdefault(r.config, {})[r.rho] = r
    rows = []
    for config, by_rho in by_config.items():
        first = by_rho[base]
        row = [config, str(first.agents), str(first.pairs)]
        for rho in rhos:
            r = by_rho[rho]
            row.append(str(r.rounds) + ("" if r.converged else " (not conv.)"))
            if rho != base:
                row.append(f"{100 * (1 - r.rounds / first.rounds):.0f} %")
        ordered = [by_rho[rho] for rho in rhos]
        row += [
            " / ".join("pass" if r.kkt else "FAIL" for r in ordered),
            " / ".join(f"{r.max_total_gap:.1e}" for r in ordered),
            " / ".join(f"{r.welfare_gap:.1e}" for r in ordered),
            " / ".join(f"{r.seconds:.1f}" for r in ordered),
        ]
        rows.append(row)
    return head, rows


def doc_section(runs: list[RhoRun], rhos: list[float], elapsed: float) -> str:
    head, rows = table(runs, rhos)
    settings = " / ".join(f"ρ = {rho:g}" for rho in rhos)
    return "\n".join(
        [
            "### Over-relaxation: rounds with ρ = 1.0 and ρ = 1.5 (`benchmarks/rho.py`)",
            "",
            stamp(command_line(), elapsed),
            "",
            markdown_table(head, rows),
            "",
            "In process (`negotiate`, bit for bit what `privgrid run` computes), the spec's "
            "stopping rule unchanged. The last four columns give "
            f"{settings}: **KKT** is every party's Proof-of-Solution check of the negotiated "
            "point, **max abs(S−S\\*)** the largest difference of an agent's total trade from "
            "the centralised QP's, **welfare gap** the relative difference of social welfare.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="names in configs/ (default: all)")
    parser.add_argument("--rho", type=float, nargs="+", default=[1.0, 1.5])
    parser.add_argument("--quick", action="store_true", help="paper only, ≤ 40 rounds (smoke)")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs section")
    args = parser.parse_args()
    configs = args.configs or sorted(
        p.stem for p in CONFIGS.glob("*.toml") if not p.stem.startswith("day-")
    )  # the day scenarios are benchmarks/day.py's
    if args.quick:
        configs = args.configs or QUICK
    started = time.perf_counter()
    runs = []
    for config in configs:
        for rho in args.rho:
            runs.append(run(config, rho, 40 if args.quick else None))
            r = runs[-1]
            print(f"{config} ρ={rho:g}: {r.rounds} rounds, converged {r.converged}", flush=True)
    print(text_table(*table(runs, args.rho)))
    if args.write_docs:
        write_section("rho", doc_section(runs, args.rho, time.perf_counter() - started))
        print("wrote the rho section of docs/performance.md")


if __name__ == "__main__":
    main()
