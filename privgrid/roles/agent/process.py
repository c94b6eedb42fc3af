"""The prosumer process: load its private data, pick the privacy mode, run the node.

One agent per process by default. ``--id`` may be repeated to host several agents in one OS
process (``privgrid run --agents-per-process K``): each keeps its own identity key, Paillier
key pair, MQTT client and log; they share the interpreter, which is what lets 100–500 agents
fit on one machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from privgrid import logs
from privgrid.attack.colluder import Colluder
from privgrid.attack.colluding_agent import ColludingAgent
from privgrid.attack.lying import LyingDecryptorMode
from privgrid.market.setup import TradeGraph, played_cost, trade_ranges
from privgrid.privacy import PrivacyMode, make_mode
from privgrid.process import Context, load_context, role_options, run_nodes
from privgrid.roles.agent.day import DayAgent
from privgrid.roles.agent.node import AgentNode
from privgrid.runtime import Node


@click.command(name="agent")
@click.option(
    "--id",
    "agent_ids",
    required=True,
    multiple=True,
    help="This agent's id in the scenario; repeat to host several agents in this process.",
)
@click.option(
    "--report",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder where a colluding coordinator writes its estimates (the attack experiment).",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With several --id: also write each agent's log to <DIR>/<id>.log.",
)
@role_options
def main(
    agent_ids: tuple[str, ...],
    report: Path | None,
    log_dir: Path | None,
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
    """Run one prosumer (seller, buyer or prosumer) of SCENARIO, or several (repeated --id).

    With a day's plan.json as SCENARIO, the agent takes part in every interval of the day
    (docs/feeder.md)."""
    if len(set(agent_ids)) != len(agent_ids):
        raise click.BadParameter("an agent id is repeated", param_hint="--id")
    group = logs.setup_group(list(agent_ids), log_format, log_dir) if len(agent_ids) > 1 else {}
    members: list[tuple[Context, Node]] = []
    for agent_id in agent_ids:
        ctx = load_context(
            agent_id,
            scenario_path,
            broker,
            run_id,
            keys_dir,
            log_format,
            log_file,
            log=group.get(agent_id),
            state_dir=state_dir,
            new_paillier_key=new_paillier_key,
            tls_dir=tls_dir,
        )
        if members:  # one scenario object per process: its network and PTDF are built once
            ctx.scenario = members[0][0].scenario
        members.append((ctx, make_agent(ctx, report)))
    sys.exit(run_nodes(members))


def make_agent(ctx: Context, report: Path | None) -> Node:
    """The agent's node: its played cost and privacy mode, honest or — in the experiments the
    scenario sets up — one of the adversaries of :mod:`privgrid.attack`: a colluder
    (``[attack] colluders``) or a lying decryptor (``behaviour = "lying-decryptor"``). A day's
    agent (a plan) is a :class:`DayAgent` with one mode for the day."""
    agent_id, scenario, run = ctx.me, ctx.scenario, ctx.settings.run
    mode: PrivacyMode
    if ctx.plan is not None:
        mode = make_mode(scenario, agent_id, run, ctx.log)
        return DayAgent(agent_id, ctx.plan, scenario, mode, ctx.log, ctx.identity)
    if scenario.agent(agent_id).behaviour == "lying-decryptor":
        mode = LyingDecryptorMode(scenario, agent_id, run, ctx.log)
    else:
        mode = make_mode(scenario, agent_id, run, ctx.log)
    cost = played_cost(scenario, agent_id)  # its own private data only (I6: perturbed)
    attack = scenario.attack
    if attack is None or agent_id not in attack.colluders:
        return AgentNode(agent_id, scenario, cost, mode, ctx.log, ctx.identity)
    graph = TradeGraph.from_scenario(scenario)
    partners = graph.partners_of(graph.index(agent_id))
    own_range = trade_ranges(scenario)[agent_id]
    colluder = Colluder(agent_id, attack, scenario.market, partners, own_range, ctx.log, report)
    ctx.log.warning(
        "colluding against %s (strategy %s, shares %s)",
        attack.target,
        attack.strategy,
        attack.shares,
    )
    return ColludingAgent(agent_id, scenario, cost, mode, ctx.log, ctx.identity, colluder)
