"""The prosumer process: load its private data, pick the privacy mode, run the node."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agents.collusion import Colluder
from agents.node import AgentNode
from privgrid.market.setup import TradeGraph, played_cost, trade_ranges
from privgrid.privacy import make_mode
from privgrid.process import load_context, role_options, run_node


@click.command(name="agent")
@click.option("--id", "agent_id", required=True, help="This agent's id in the scenario.")
@click.option(
    "--report",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder where a colluding coordinator writes its estimates (the attack experiment).",
)
@role_options
def main(
    agent_id: str,
    report: Path | None,
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
    colluder = None
    attack = ctx.scenario.attack
    if attack is not None and agent_id in attack.colluders:
        graph = TradeGraph.from_scenario(ctx.scenario)
        partners = graph.partners_of(graph.index(agent_id))
        own_range = trade_ranges(ctx.scenario)[agent_id]
        colluder = Colluder(
            agent_id, attack, ctx.scenario.market, partners, own_range, ctx.log, report
        )
        ctx.log.warning(
            "colluding against %s (strategy %s, shares %s)",
            attack.target,
            attack.strategy,
            attack.shares,
        )
    node = AgentNode(agent_id, ctx.scenario, cost, mode, ctx.log, ctx.identity, colluder)
    sys.exit(run_node(ctx, node))
