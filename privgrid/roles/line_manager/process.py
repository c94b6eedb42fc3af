"""The Line Manager process: load the network, run the node."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from privgrid.market.setup import build_setup
from privgrid.privacy import make_mode
from privgrid.process import load_context, role_options, run_node
from privgrid.roles.line_manager.node import LineManagerNode
from privgrid.runtime import EXIT_BAD_INPUT
from privgrid.scenario import LM_ID, ScenarioError


@click.command(name="lm")
@role_options
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append what the LM receives each round to this JSON-lines file (an audit of the "
    "LM's view, for the honest-but-curious experiment; off by default).",
)
def main(
    record: Path | None,
    scenario_path: Path,
    broker: str | None,
    run_id: str | None,
    keys_dir: Path,
    tls_dir: Path | None,
    state_dir: Path | None,
    new_paillier_key: bool,
    log_format: str,
    log_file: Path | None,
) -> None:
    """Run the Line Manager of SCENARIO."""
    ctx = load_context(
        LM_ID,
        scenario_path,
        broker,
        run_id,
        keys_dir,
        log_format,
        log_file,
        state_dir=state_dir,
        new_paillier_key=new_paillier_key,
        tls_dir=tls_dir,
    )
    try:
        setup = build_setup(ctx.scenario)
    except ScenarioError as exc:
        ctx.log.error("%s", exc)
        sys.exit(EXIT_BAD_INPUT)
    mode = make_mode(ctx.scenario, LM_ID, ctx.settings.run, ctx.log)
    node = LineManagerNode(setup, mode, ctx.log, ctx.identity)
    if record is not None:
        sink = record.open("a", encoding="utf-8")
        node.record = lambda entry: sink.write(json.dumps(entry) + "\n")
    sys.exit(run_node(ctx, node))
