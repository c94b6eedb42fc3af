"""The prosumer process: load its private data, pick the privacy mode, run the node."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agents.node import AgentNode
from privgrid.market.setup import played_cost
from privgrid.privacy import make_mode
from privgrid.process import load_context, role_options, run_node


@click.command(name="agent")
@click.option("--id", "agent_id", required=True, help="This agent's id in the scenario.")
@role_options
def main(
    agent_id: str,
    scenario_path: Path,
    broker: str | None,
    run_id: str | None,
    keys_dir: Path,
    log_format: str,
    log_file: Path | None,
) -> None:
    """Run one prosumer (seller, buyer or prosumer) of SCENARIO."""
    ctx = load_context(agent_id, scenario_path, broker, run_id, keys_dir, log_format, log_file)
    mode = make_mode(ctx.scenario, agent_id, ctx.settings.run, ctx.log)
    cost = played_cost(ctx.scenario, agent_id)  # its own private data only (I6: perturbed)
    sys.exit(run_node(ctx, AgentNode(agent_id, ctx.scenario, cost, mode, ctx.log, ctx.identity)))
