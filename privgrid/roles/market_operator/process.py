"""The Market Operator process: run the round clock, commit the block, record the protocol.

It writes protocol data only: ``trace.csv`` round by round and, at its end, ``protocol.json``
(:mod:`privgrid.protocol_record`). The results — welfare, the optimum, the plots — are made
from that record afterwards by ``privgrid report`` (:mod:`privgrid.report`), which reads the
private costs the MO never sees."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from privgrid.attack.tampering import TamperingProposal
from privgrid.ledger import Ledger, LedgerError, genesis_block
from privgrid.ledger.genesis import participants_from_scenario
from privgrid.market.setup import MarketSetup, build_setup
from privgrid.privacy import make_mode
from privgrid.process import Context, load_context, role_options, run_node
from privgrid.progress import MAX_WINDOW, ProgressReporter, progress_text
from privgrid.protocol_record import ProtocolRecord
from privgrid.results import dumps
from privgrid.roles.market_operator.node import OperatorNode, RunOutcome, TraceRow
from privgrid.roles.market_operator.proposal import Proposal
from privgrid.runfolder import TRACE_FILE, TraceFile, clear_outputs
from privgrid.runtime import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_CONVERGED,
    EXIT_OK,
)
from privgrid.scenario import MO_ID, ScenarioError


class Progress:
    """What the MO does after each round besides the protocol: append the round to the live
    ``trace.csv``, log a progress line now and then (round, residuals, elapsed, ETA: also for
    piped output, ``docker compose logs`` and the role log), and with ``--progress`` print one
    JSON line on stdout for ``privgrid run``'s progress bar."""

    def __init__(
        self,
        ctx: Context,
        folder: Path,
        json_lines: bool,
        extra: dict[str, Any] | None = None,
        market: Any = None,
    ) -> None:
        """``extra``: fields every JSON line carries (a day's interval); ``market``: the
        ``[market]`` section, if not the context scenario's."""
        market = market or ctx.scenario.market
        self.extra = extra or {}
        self.log = ctx.log
        self.max_rounds = market.max_rounds
        self.reporter = ProgressReporter(market.epsilon_p, market.epsilon_lambda, market.max_rounds)
        self.trace_file = TraceFile(folder / TRACE_FILE)
        self.json_lines = json_lines
        self.node: OperatorNode | None = None  # set once the node exists

    def __call__(self, row: TraceRow) -> None:
        trace = self.node.outcome.trace if self.node is not None else [row]
        try:
            self.trace_file.sync(trace)
        except OSError as exc:  # a full disk must not stop the market
            self.log.warning("could not append to %s: %s", self.trace_file.path, exc)
        rows = [(r.round, r.residuals.as_dict(), r.elapsed) for r in trace[-2 * MAX_WINDOW :]]
        total, eta = self.reporter.estimate(rows)
        residuals = row.residuals.as_dict()
        if self.reporter.due(row.elapsed):
            self.log.info("%s", progress_text(row.round, residuals, row.elapsed, eta))
        if self.json_lines:
            line = {
                **self.extra,
                "round": row.round,
                "max_rounds": self.max_rounds,
                "estimated_rounds": total,
                "eta_s": None if eta is None else round(eta, 1),
                "elapsed": round(row.elapsed, 4),
                **residuals,
            }
            sys.stdout.write(dumps(line, indent=None) + "\n")
            sys.stdout.flush()


def open_ledger(ctx: Context, path: Path) -> Ledger:
    """The ledger to append to: created with this scenario's registration, or an existing one
    registered with the same participants and keys (anything else is refused)."""
    genesis = genesis_block(
        ctx.scenario.name,
        participants_from_scenario(ctx.scenario, ctx.roster),
        quorum=ctx.scenario.ledger.quorum,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return Ledger.open_or_create(path, genesis)


def commit(ctx: Context, ledger: Ledger, outcome: RunOutcome) -> dict[str, Any]:
    """Append the block if the votes allow it (one transaction); report what happened."""
    block, decision = outcome.block, outcome.decision
    info: dict[str, Any] = {"path": str(ledger.path), "id": ledger.id, "committed": False}
    if block is None or decision is None:
        info["height"] = ledger.height
        return info
    info.update(
        {
            "height": block.height,
            "block": block.hash_hex,
            "decision": decision.summary(),
            "votes": {v.voter: v.accept for v in outcome.votes.values()},
            "rejected": {
                voter: [f.condition + " at " + f.subject for f in failures]
                for voter, failures in decision.rejected.items()
            },
        }
    )
    already = ledger.height >= block.height and ledger.block(block.height).hash == block.hash
    if decision.commit and already:  # committed before a restart of ours: never twice
        info["committed"] = True
        ctx.log.info(
            "block %d (%s) is already in %s", block.height, block.hash_hex[:16], ledger.path
        )
        return info
    if decision.commit:
        try:
            ledger.append(block, list(outcome.votes.values()))
            info["committed"] = True
            ctx.log.info(
                "committed block %d (%s) to %s", block.height, block.hash_hex[:16], ledger.path
            )
        except LedgerError as exc:
            outcome.error = f"ledger refused the block: {exc}"
            ctx.log.error("%s", outcome.error)
    return info


def make_proposal(ctx: Context, setup: MarketSetup, ledger: Ledger) -> Proposal:
    """The MO's block proposal: honest, or the tampering one of the Proof-of-Solution
    experiment (``market_operator.behaviour``, :mod:`privgrid.attack.tampering`)."""
    args = (setup, ctx.identity, ledger.genesis, ledger.head(), ctx.settings.run, ctx.log)
    behaviour = ctx.scenario.market_operator.behaviour
    if behaviour == "honest":
        return Proposal(*args)
    return TamperingProposal(*args, behaviour=behaviour)


@click.command(name="mo")
@role_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder for trace.csv and protocol.json (what `privgrid report` makes "
    "results.json and plots from) [default: runs/<run>].",
)
@click.option(
    "--ledger",
    "ledger_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ledger to append the block to [default: <run folder>/ledger.sqlite].",
)
@click.option(
    "--progress",
    is_flag=True,
    help="Print one JSON line per round on stdout (used by `privgrid run`); a progress line "
    "goes to the log every few seconds in any case.",
)
def main(
    scenario_path: Path,
    broker: str | None,
    run_id: str | None,
    keys_dir: Path,
    tls_dir: Path | None,
    state_dir: Path | None,
    new_paillier_key: bool,
    log_format: str,
    log_file: Path | None,
    out_dir: Path | None,
    ledger_path: Path | None,
    progress: bool,
) -> None:
    """Run the Market Operator of SCENARIO: the round clock, the stopping test, the block.

    With a day's plan.json as SCENARIO it runs every interval of the day in turn, one block
    per interval, each interval's results in <out>/intervals/NNNN/ (docs/feeder.md).

    After a converged run it proposes a block of the cleared trades, collects every
    participant's signed Proof-of-Solution vote and appends the block to the ledger only if
    all accept. Exit status: 0 converged and committed, 1 not converged, 2 bad input,
    3 a participant failed or the block was rejected, 130 stopped by SIGINT/SIGTERM. Every
    status but 2 leaves protocol.json (with ``error``) in the run folder, from which
    `privgrid report RUN_DIR` makes results.json, trace.csv's welfare column and the plots.
    """
    ctx = load_context(
        MO_ID,
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
    folder = out_dir or Path("runs") / ctx.settings.run
    if ctx.plan is not None:  # a day over the wire (docs/feeder.md)
        from privgrid.roles.market_operator.dayrun import run_day_operator

        sys.exit(run_day_operator(ctx, folder, ledger_path, progress))
    try:
        setup = build_setup(ctx.scenario)
        ledger = open_ledger(ctx, ledger_path or folder / "ledger.sqlite")
    except (ScenarioError, LedgerError) as exc:
        ctx.log.error("%s", exc)
        sys.exit(EXIT_BAD_INPUT)
    ctx.log.info("ledger %s (id %s…) at height %d", ledger.path, ledger.id[:16], ledger.height)
    proposal = make_proposal(ctx, setup, ledger)
    store = ctx.checkpoint_store()
    if store is None or not store.path.exists():  # a fresh run, not a restart
        clear_outputs(folder)
    on_progress = Progress(ctx, folder, progress)
    mode = make_mode(ctx.scenario, MO_ID, ctx.settings.run, ctx.log)
    node = OperatorNode(ctx.scenario, mode, ctx.log, on_progress, proposal)
    on_progress.node = node
    code = run_node(ctx, node)
    code, record = end_of_run(ctx, ledger, node, code, str(scenario_path.resolve()))
    path = record.write(folder)
    ctx.log.info("wrote %s (%s)", path, record.error or record.reason)
    sys.exit(code)


def end_of_run(
    ctx: Context, ledger: Ledger, node: OperatorNode, code: int, scenario_file: str | None
) -> tuple[int, ProtocolRecord]:
    """After the node's run: name an abnormal end in the outcome, commit the block if the
    votes allow it, and make the record; returns the exit status (a ledger that refused the
    block turns success into a failure) and the record to write."""
    outcome = node.outcome
    interrupted = code == EXIT_INTERRUPTED
    if interrupted and outcome.error is None:
        when = f"during round {node.round}" if node.round else "before round 1"
        outcome.error = f"the MO was stopped by a signal {when}"
        outcome.reason = "interrupted"
        outcome.rounds = outcome.trace[-1].round if outcome.trace else 0
    elif code not in (EXIT_OK, EXIT_NOT_CONVERGED) and outcome.error is None:
        outcome.error = f"the MO stopped with status {code} before the run ended (see its log)"
    ledger_info = commit(ctx, ledger, outcome)
    if outcome.error is not None and code in (EXIT_OK, EXIT_NOT_CONVERGED):
        code = EXIT_FAILURE  # e.g. the ledger refused the block
    record = ProtocolRecord.of_outcome(
        outcome,
        run=ctx.settings.run,
        mode=ctx.scenario.privacy.mode,
        interrupted=interrupted,
        ledger=ledger_info,
        mo_stats=node.stats(),
        now=time.perf_counter(),
        scenario_file=scenario_file,
    )
    return code, record
