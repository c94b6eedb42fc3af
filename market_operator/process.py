"""The Market Operator process: run the round clock, then write the run folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from market_operator.node import OperatorNode, TraceRow
from privgrid import report
from privgrid.market.setup import build_setup
from privgrid.privacy import make_mode
from privgrid.process import load_context, role_options, run_node
from privgrid.runtime import EXIT_BAD_INPUT, EXIT_FAILURE
from privgrid.scenario import MO_ID, ScenarioError


def _progress_printer(total: int):  # noqa: ANN202
    def show(row: TraceRow) -> None:
        line = {
            "round": row.round,
            "max_rounds": total,
            "elapsed": round(row.elapsed, 4),
            **row.residuals.as_dict(),
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    return show


@click.command(name="mo")
@role_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder for results.json, trace.csv and plots [default: runs/<run>].",
)
@click.option(
    "--progress",
    is_flag=True,
    help="Print one JSON line per round on stdout (used by `privgrid run`).",
)
def main(
    scenario_path: Path,
    broker: str | None,
    run_id: str | None,
    keys_dir: Path,
    log_format: str,
    log_file: Path | None,
    out_dir: Path | None,
    progress: bool,
) -> None:
    """Run the Market Operator of SCENARIO: the round clock, the stopping test, the results.

    Exit status: 0 converged, 1 not converged, 2 bad input, 3 a participant failed.
    """
    ctx = load_context(MO_ID, scenario_path, broker, run_id, keys_dir, log_format, log_file)
    try:
        setup = build_setup(ctx.scenario)
    except ScenarioError as exc:
        ctx.log.error("%s", exc)
        sys.exit(EXIT_BAD_INPUT)
    folder = out_dir or Path("runs") / ctx.settings.run
    on_progress = _progress_printer(ctx.scenario.market.max_rounds) if progress else None
    mode = make_mode(ctx.scenario, MO_ID, ctx.settings.run, ctx.log)
    node = OperatorNode(ctx.scenario, mode, ctx.log, on_progress)
    code = run_node(ctx, node)
    outcome = node.outcome
    if not outcome.trace and outcome.error is None and code == EXIT_FAILURE:
        sys.exit(code)  # never started: nothing to report
    results, welfare_trace = report.build(
        setup,
        outcome,
        run=ctx.settings.run,
        mode=ctx.scenario.privacy.mode,
        mo_stats=node.stats(),
    )
    report.write_run_folder(folder, results, outcome.trace, welfare_trace, setup)
    ctx.log.info("wrote %s", folder / "results.json")
    sys.exit(code)
