"""The MO process around a day (docs/feeder.md): the day's ledger and each interval's record.

The node (:class:`~.day.DayOperator`) runs the protocol; this is its I/O, called between
intervals: one ledger for the day (genesis from the plan's registration, once), one block per
interval appended as soon as its votes are in, and the interval's ``protocol.json`` written
right after — protocol data only, as a single run's MO writes it (the participants' final
reports, the residual trace, the ledger's verdict; :mod:`privgrid.protocol_record`). The MO
reads no private cost: the evaluator makes each interval's ``results.json`` from its record
after the run (:func:`privgrid.feeder.wire.evaluate_day`). Each interval also gets its live
``trace.csv``, and with ``--progress`` one JSON line per round on stdout carries the
interval's index.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privgrid.ledger import Ledger, genesis_block
from privgrid.ledger.genesis import registered_participants
from privgrid.market.setup import MarketSetup, build_setup
from privgrid.process import Context
from privgrid.protocol_record import ProtocolRecord
from privgrid.roles.dayplan import DayPlan
from privgrid.roles.market_operator.day import IntervalDone
from privgrid.roles.market_operator.node import TraceRow
from privgrid.roles.market_operator.proposal import Proposal
from privgrid.scenario import Scenario


def interval_label(index: int) -> str:
    """An interval's folder name and block ``run``: ``0001``… (as the in-process day)."""
    return f"{index:04d}"


def open_day_ledger(ctx: Context, plan: DayPlan, path: Path) -> Ledger:
    """The day's ledger: created with the plan's registration (every agent with the envelope
    of its bounds, the LM and the MO), or an existing one registered the same way."""
    participants = registered_participants(plan.agents, ctx.roster)
    genesis = genesis_block(plan.name, participants, quorum=plan.quorum, run=plan.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Ledger.open_or_create(path, genesis)


class DayRecorder:
    """What the MO process does for each interval: proposals on the ledger's head, the live
    trace and progress, and at the interval's end the commit and its results file."""

    def __init__(
        self, ctx: Context, plan: DayPlan, ledger: Ledger, folder: Path, progress: bool
    ) -> None:
        self.ctx = ctx
        self.plan = plan
        self.ledger = ledger
        self.folder = folder
        self.progress = progress
        self.setups: dict[int, MarketSetup] = {}
        self.ledger_info: dict[str, Any] | None = None  # of the last interval done

    def interval_folder(self, index: int) -> Path:
        return self.folder / "intervals" / interval_label(index)

    def _setup(self, index: int, scenario: Scenario) -> MarketSetup:
        setup = self.setups.get(index)
        if setup is None or setup.scenario is not scenario:
            self.setups = {index: build_setup(scenario)}  # one interval at a time
        return self.setups[index]

    def proposal_for(self, index: int, scenario: Scenario) -> Proposal:
        """Interval ``index``'s block proposal, on the ledger's head as it is now."""
        from privgrid.roles.market_operator.process import make_proposal

        proposal = make_proposal(self.ctx, self._setup(index, scenario), self.ledger)
        proposal.run = interval_label(index)  # as the in-process day names its blocks
        return proposal

    def progress_for(self, index: int) -> Callable[[TraceRow], None]:
        from privgrid.roles.market_operator.process import Progress

        market = self.plan.load(index).market
        extra = {"interval": index, "intervals": len(self.plan.intervals)}
        return Progress(self.ctx, self.interval_folder(index), self.progress, extra, market)

    def on_done(self, done: IntervalDone, interrupted: bool = False) -> None:
        """Commit the interval's block (if its votes allow) and write its ``protocol.json``:
        protocol data only, as a single run's MO (:mod:`privgrid.protocol_record`); the
        evaluator makes the interval's results from it after the run (:mod:`.feeder.wire`)."""
        from privgrid.roles.market_operator.process import commit

        node = done.node
        outcome = node.outcome
        info = commit(self.ctx, self.ledger, outcome)
        self.ledger_info = info
        record = ProtocolRecord.of_outcome(
            outcome,
            run=self.ctx.settings.run,
            mode=done.scenario.privacy.mode,
            interrupted=interrupted,
            ledger=info,
            mo_stats=node.stats(),
            now=time.perf_counter(),
            scenario_file=str(self.plan.scenario_path(done.index)),
        )
        path = record.write(self.interval_folder(done.index))
        self.ctx.log.info(
            "interval %d: %s after %d rounds; wrote %s",
            done.index,
            record.error or record.reason,
            outcome.rounds,
            path,
        )


def run_day_operator(ctx: Context, folder: Path, ledger_path: Path | None, progress: bool) -> int:
    """The MO process of a day (``--scenario plan.json``): the day's node, its ledger and
    files; the exit status of the day (0 every interval cleared, 1 some did not, 2 bad input,
    3 a failure, 130 a signal)."""
    from privgrid.ledger import LedgerError
    from privgrid.privacy import make_mode
    from privgrid.process import run_node
    from privgrid.roles.market_operator.day import DayOperator
    from privgrid.runtime import EXIT_BAD_INPUT, EXIT_INTERRUPTED
    from privgrid.scenario import MO_ID, ScenarioError

    plan = ctx.plan
    assert plan is not None
    try:
        ledger = open_day_ledger(ctx, plan, ledger_path or folder / "ledger.sqlite")
    except (ScenarioError, LedgerError) as exc:
        ctx.log.error("%s", exc)
        return EXIT_BAD_INPUT
    ctx.log.info("ledger %s (id %s…) at height %d", ledger.path, ledger.id[:16], ledger.height)
    recorder = DayRecorder(ctx, plan, ledger, folder, progress)
    node = DayOperator(
        plan,
        ctx.scenario,
        make_mode(ctx.scenario, MO_ID, ctx.settings.run, ctx.log),
        ctx.log,
        proposal_for=recorder.proposal_for,
        on_done=recorder.on_done,
        progress_for=recorder.progress_for,
    )
    try:
        code = run_node(ctx, node)
        inner = node.node
        if inner is not None and inner.exit_code is None:  # stopped inside an interval
            outcome = inner.outcome
            interrupted = code == EXIT_INTERRUPTED
            if outcome.error is None:
                outcome.error = (
                    f"the MO was stopped by a signal during round {inner.round}"
                    if interrupted
                    else f"the MO stopped with status {code} during round {inner.round}"
                )
                outcome.reason = "interrupted" if interrupted else "participant failed"
                outcome.rounds = inner.rounds
            recorder.on_done(IntervalDone(node.index, inner.scenario, inner), interrupted)
    finally:
        ledger.close()
    return code
