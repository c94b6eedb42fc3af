"""Market-core benchmark: negotiation vs centralised solve for every config (prints a table).

For each scenario in configs/: rounds (ρ = 1 and ρ = 1.5), wall time of the whole
``privgrid solve`` command (a fresh process, imports included: negotiation, centralised QP and
KKT checks), of the in-process negotiation and of the centralised QP, the ratios
``privgrid solve`` / QP (what the issue asks for) and negotiation / QP (the algorithms alone),
and the negotiation time per round per trade. Nothing is asserted: numbers depend on the
machine.

    python benchmarks/market.py [configs/paper.toml ...] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from privgrid.market.central import solve_central
from privgrid.market.negotiation import negotiate
from privgrid.market.setup import agent_costs, build_setup
from privgrid.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent


def median_time(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench(path: Path, repeat: int) -> dict:
    scenario = load_scenario(path)
    setup, costs = build_setup(scenario), agent_costs(scenario)
    t_neg, result = median_time(lambda: negotiate(setup, costs), repeat)
    t_qp, _ = median_time(lambda: solve_central(setup, costs), repeat)
    relaxed = scenario.model_copy(
        update={"market": scenario.market.model_copy(update={"rho": 1.5})}
    )
    rounds_relaxed = negotiate(build_setup(relaxed), costs).rounds
    t_cli, _ = median_time(
        lambda: subprocess.run(
            [sys.executable, "-m", "privgrid.cli", "solve", str(path), "--json"],
            capture_output=True,
            check=False,
            cwd=ROOT,
        ),
        repeat,
    )
    return {
        "scenario": scenario.name,
        "agents": setup.graph.n_agents,
        "trades": setup.graph.n_trades,
        "rounds": result.rounds,
        "rounds_rho15": rounds_relaxed,
        "cli_s": t_cli,
        "negotiation_s": t_neg,
        "central_s": t_qp,
        "ratio": t_neg / t_qp,
        "cli_ratio": t_cli / t_qp,
        "us_per_round_trade": 1e6 * t_neg / (result.rounds * setup.graph.n_trades),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    paths = args.configs or sorted(
        p for p in (ROOT / "configs").glob("*.toml") if not p.stem.startswith("day-")
    )  # the day scenarios are benchmarks/day.py's
    table = Table(title="Market core: negotiation vs centralised QP (median of runs)")
    cols = [
        "scenario",
        "agents",
        "trades",
        "rounds",
        "rounds ρ=1.5",
        "privgrid solve s",
        "negotiation s",
        "central QP s",
        "solve/QP",
        "neg/QP",
        "µs/round/trade",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for path in paths:
        r = bench(path, args.repeat)
        table.add_row(
            r["scenario"],
            str(r["agents"]),
            str(r["trades"]),
            str(r["rounds"]),
            str(r["rounds_rho15"]),
            f"{r['cli_s']:.2f}",
            f"{r['negotiation_s']:.3f}",
            f"{r['central_s']:.3f}",
            f"{r['cli_ratio']:.1f}",
            f"{r['ratio']:.1f}",
            f"{r['us_per_round_trade']:.2f}",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
