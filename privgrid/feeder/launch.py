"""``privgrid run DAY.toml``: a day over the wire, every participant a long-lived process.

1. prepare and check the day exactly as ``privgrid solve`` does (every interval's market built
   and checked, feasibility included) — invalid input exits 2 before anything is written;
2. make the run folder as ``privgrid solve`` does (``grid.m``, ``feeder.json``, every
   ``intervals/NNNN/scenario.toml``), plus the day's identity keys (``keys/``) and
   ``plan.json`` (:mod:`privgrid.feeder.wire`);
3. start the broker and one process per participant for the whole day — every agent of the
   day (also those that sit some intervals out), the LM and the MO — with the plan as their
   scenario (:class:`DayLauncher`: the launcher of a single run, with the day's participants;
   crashed participants are restarted from their checkpoints under ``on_missing = "wait"``);
4. the MO clears the intervals one after another (one market session each, one ledger block
   each) and writes each interval's ``protocol.json`` (protocol data only) as it is committed;
5. once every process has exited, the evaluator makes each interval's ``results.json`` from
   its record (welfare, the optimum: ``privgrid report``'s code), adds the AC check and writes
   day.json, day.csv and the plots (:func:`~.wire.evaluate_day`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from privgrid.feeder.day import Interval, PreparedDay, prepare_day, prepare_folder
from privgrid.feeder.report import day_exit_status
from privgrid.feeder.wire import DayEvaluation, evaluate_day, record_status, write_plan
from privgrid.launcher import Launcher, LaunchOptions, dashboard_plan, supervise
from privgrid.roles.dayplan import DayPlan
from privgrid.runtime import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_CONVERGED,
    EXIT_OK,
)
from privgrid.scenario import LM_ID, MO_ID, Scenario


@dataclass
class DayOutcome:
    """How a day over the wire ended: the exit status, day.json's content (its ``status``
    and ``error``; ``summary`` None if no interval was recorded) and, for anything but
    success, the one-line reason."""

    code: int
    folder: Path
    document: dict[str, Any]
    reason: str | None


class DayLauncher(Launcher):
    """The launcher of a single run, preparing a day instead of one scenario."""

    def __init__(self, options: LaunchOptions) -> None:
        super().__init__(options)
        self.prepared: PreparedDay | None = None
        self.intervals: list[Interval] = []
        self.plan: DayPlan | None = None

    def prepare(self) -> tuple[Scenario, Path]:
        options = self.options
        prepared = prepare_day(options.scenario, options.privacy)  # nothing written yet
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name = prepared.day.name
        self.folder = options.out or Path("runs") / f"{stamp}-{name}"
        plain = self.folder.name.replace("_", "").replace("-", "").replace(".", "")
        self.run_id = options.run_id or (self.folder.name if plain.isalnum() else name)[:80]
        self.intervals = prepare_folder(prepared, self.folder)  # checks every interval
        self.keys = (options.keys or self.folder / "keys").resolve()
        self.plan = write_plan(prepared, self.folder, self.intervals, self.keys)
        (self.folder / "logs").mkdir(exist_ok=True)
        (self.folder / "secrets").mkdir(mode=0o700, exist_ok=True)
        self.prepared = prepared
        self.day_agents = self.plan.agent_ids
        self.scenario = self.plan.load(1)
        return self.scenario, self.plan.source

    def _tls(self, scenario: Scenario) -> Path:
        from privgrid.broker.config import MONITOR
        from privgrid.crypto.tls import TLS_DIR, init_tls
        from privgrid.process import ENV_TLS_DIR

        assert self.day_agents is not None
        folder = self.folder / "secrets"
        accounts = [*self.day_agents, LM_ID, MO_ID, MONITOR]
        tls = init_tls(folder / TLS_DIR, accounts).folder
        self.options.extra_env[ENV_TLS_DIR] = str(tls)
        return tls


def launch_day(options: LaunchOptions) -> DayOutcome:
    """Run a day over the wire (see the module docstring).

    Raises:
        ScenarioError: invalid input, found before anything starts (nothing is written).
        DashboardError: ``--dashboard`` cannot be served.
    """
    plan = dashboard_plan(options)
    launcher = DayLauncher(options)
    scenario, plan_file = launcher.prepare()
    started = time.perf_counter()
    broker_error, dashboard = supervise(launcher, scenario, plan_file, plan)
    wall = time.perf_counter() - started
    assert launcher.prepared is not None
    evaluation = evaluate_day(launcher.prepared, launcher.folder, launcher.intervals, wall)
    code, reason = _ending(launcher, evaluation, broker_error)
    document = record_status(launcher.folder, evaluation.document, code, reason)
    if code not in (EXIT_OK, EXIT_INTERRUPTED):
        for line in launcher.error_lines():
            launcher.console.print(f"[red]{line}[/red]", highlight=False, soft_wrap=True)
    if dashboard is not None:
        dashboard.stop()
    if launcher.children:  # the run's checkpoints are of no more use once the day is over
        shutil.rmtree(launcher.folder / "state", ignore_errors=True)
    return DayOutcome(code, launcher.folder, document, reason)


def _ending(
    launcher: DayLauncher, evaluation: DayEvaluation, broker_error: str | None
) -> tuple[int, str | None]:
    """The day's exit status and one-line reason (None for success)."""
    status = launcher.mo_status
    if launcher.interrupted:
        return EXIT_INTERRUPTED, f"interrupted (Ctrl-C) {launcher.when()}"
    if broker_error is not None:
        return EXIT_FAILURE, broker_error
    if status == EXIT_BAD_INPUT:
        return EXIT_BAD_INPUT, launcher.fallback_error()
    if status not in (EXIT_OK, EXIT_NOT_CONVERGED):
        return EXIT_FAILURE, launcher.last_error(MO_ID) or launcher.fallback_error()
    return evaluated_ending(evaluation, launcher.fallback_error)


def evaluated_ending(
    evaluation: DayEvaluation, fallback: Callable[[], str]
) -> tuple[int, str | None]:
    """The exit status and one-line reason of a day whose MO ended the day itself: 3 if an
    interval's record could not be evaluated (the reason names its file, field and why) or
    none was (``fallback()``), else from day.json's summary (0, or 1 with the count)."""
    if evaluation.error is not None:
        return EXIT_FAILURE, evaluation.error
    document = evaluation.document
    if document is None:
        return EXIT_FAILURE, fallback()
    code = day_exit_status(document)
    if code == EXIT_OK:
        return EXIT_OK, None
    s = document["summary"]
    return code, (
        f"{s['intervals'] - s['blocks']} of {s['intervals']} intervals without a block "
        f"({s['intervals'] - s['converged']} not converged)"
    )
