"""``privgrid run``: a whole grid on this machine — broker, LM, MO and every agent as processes.

1. validate the scenario and check feasibility before anything starts;
2. make the run folder ``runs/<timestamp>-<scenario>/`` with the effective scenario (after
   ``--privacy``), identity keys (``secrets/``), broker credentials and configuration;
3. start Mosquitto on a free loopback port (or the embedded broker where Mosquitto is not
   installed), unless ``--broker`` names one;
4. start the LM, the MO and every agent as separate OS processes, each logging to
   ``logs/<participant>.log``; show progress from the MO;
5. with ``[timeouts] on_missing = "wait"``, restart a participant that crashed (killed by a
   signal, or an uncaught error) from its checkpoint, at most ``--restarts`` times each;
6. on Ctrl-C stop every child cleanly (the MO records what it has, status ``interrupted``);
7. once every process has exited, ``privgrid report`` the run (:mod:`privgrid.report`):
   ``results.json``, plots and the welfare column from the MO's ``protocol.json`` — or, when
   the MO could not write it, from the record of the failure — so that ``results.json``
   always says how the run ended; map every ending onto the documented exit statuses
   (:func:`final_status`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from privgrid.broker.config import BrokerUsers
from privgrid.broker.local import LocalBroker, start_broker
from privgrid.keys import init_keys, init_run_tls, participants
from privgrid.process import ENV_BROKER_URLS, ENV_TLS_DIR
from privgrid.progress import PROGRESS_LOG_SECONDS, progress_text
from privgrid.protocol_record import ProtocolRecord, RecordError
from privgrid.results import INTERRUPTED, NOT_CONVERGED
from privgrid.runfolder import PROTOCOL_FILE, TRACE_FILE, clear_outputs, read_trace
from privgrid.runtime import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_CONVERGED,
    EXIT_OK,
)
from privgrid.scenario import LM_ID, MO_ID, Scenario, ScenarioError, parse_scenario
from privgrid.solve import prepare

#: Restarts per participant under ``on_missing = "wait"`` (``privgrid run --restarts``).
DEFAULT_RESTARTS = 3
#: Seconds the MO gets to write its results after a Ctrl-C before it is killed.
INTERRUPT_GRACE = 30.0


@dataclass(frozen=True)
class ExternalBroker:
    """A broker someone else started, with the users it knows (tests, shared brokers)."""

    host: str
    port: int
    users: BrokerUsers

    def url(self, user: str) -> str:
        return f"mqtt://{user}:{self.users.passwords[user]}@{self.host}:{self.port}"


@dataclass
class LaunchOptions:
    scenario: Path
    privacy: str | None = None
    broker: str | None = None
    out: Path | None = None
    log_format: str = "text"
    broker_kind: str = "auto"  # auto | mosquitto | embedded
    quiet: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    external: ExternalBroker | None = None
    run_id: str | None = None
    ledger: Path | None = None  # default: <run folder>/ledger.sqlite
    keys: Path | None = None  # default: new keys in <run folder>/secrets
    agents_per_process: int = 1  # >1: several agents as asyncio tasks in one OS process
    restarts: int = DEFAULT_RESTARTS  # per participant, with on_missing = "wait"
    dashboard: str | None = None  # [HOST:]PORT of a live dashboard (privgrid.dashboard)
    dashboard_broker: str | None = None  # with --broker: the dashboard's own account there
    tls: bool = False  # Mosquitto on TLS only, client certificates as logins (--tls)


@dataclass
class Child:
    participant: str  # an id, or agents-<first>-<last> for a group process
    process: subprocess.Popen
    log_path: Path
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    restarts: int = 0
    ended: bool = False  # exited for good (not to be restarted)


def describe_exit(status: int) -> str:
    """``killed by SIGKILL`` or ``exited with status 3`` (a Popen return code)."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


def crashed(status: int, participant: str) -> bool:
    """Whether an exit is a crash that a restart from the checkpoint may mend: killed by a
    signal, or an uncaught error (Python's status 1, except for the MO, whose 1 means "not
    converged"; any status outside the documented ones). A documented ending (0 done, 2 bad
    input, 3 a failure the process reported, 130 stopped on request) is never restarted."""
    if status < 0:
        return True
    if status in (EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED):
        return False
    return status != EXIT_NOT_CONVERGED or participant != MO_ID


def final_status(mo_status: int | None, results_status: str | None, interrupted: bool) -> int:
    """The exit status of ``privgrid run``: 0 converged, 1 not converged, 2 invalid input, 3 a
    participant failed, 130 interrupted — whatever the MO's own status was (a signal death,
    -9, is a failure, not 247).

    Args:
        mo_status: the MO's last return code (None: it never ran or still ran at the end).
        results_status: ``status`` of the results.json the run left (None: none).
        interrupted: Ctrl-C (SIGINT) reached the launcher before the MO had ended.
    """
    if interrupted:
        return EXIT_INTERRUPTED
    if mo_status == EXIT_BAD_INPUT:
        return EXIT_BAD_INPUT
    if mo_status == EXIT_OK and results_status == "converged":
        return EXIT_OK
    if mo_status == EXIT_NOT_CONVERGED and results_status == NOT_CONVERGED:
        return EXIT_NOT_CONVERGED
    return EXIT_FAILURE


def effective_scenario(scenario: Scenario, privacy: str | None) -> dict[str, Any]:
    """The scenario as the processes will read it: overrides applied, paths absolute.

    With ``--privacy`` the scenario is validated again, so a check that depends on the mode
    (e.g. a lying-decryptor needs ``paillier``) fails here, naming the override, and not in
    every child process."""
    data = scenario.model_dump(mode="json", exclude={"source"}, exclude_unset=True)
    if privacy is not None:
        data.setdefault("privacy", {})["mode"] = privacy
    case = scenario.network.case
    if case.endswith(".m") and not Path(case).is_absolute():
        data.setdefault("network", {})["case"] = str((scenario.source.parent / case).resolve())
    if privacy is not None:
        parse_scenario(data, f"{scenario.source} with --privacy {privacy}")
    return data


def run_folder(scenario: Scenario, out: Path | None) -> tuple[Path, str]:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = out or Path("runs") / f"{stamp}-{scenario.name}"
    run = (
        folder.name
        if folder.name.replace("_", "").replace("-", "").replace(".", "").isalnum()
        else f"{stamp}-{scenario.name}"
    )
    return folder, run[:80]


def _command(
    members: list[str],
    scenario_file: Path,
    run: str,
    keys: Path,
    fmt: str,
    folder: Path,
    ledger: Path | None,
) -> list[str]:
    """The command line of one child process: the LM, the MO, or one or more agents."""
    participant = members[0]
    role = {LM_ID: "line_manager", MO_ID: "market_operator"}.get(participant, "agent")
    cmd = [
        sys.executable,
        "-m",
        f"privgrid.roles.{role}",
        "--scenario",
        str(scenario_file),
        "--run",
        run,
        "--keys",
        str(keys),
        "--log-format",
        fmt,
        "--state",  # checkpoints: a participant restarted by hand resumes (docs/reliability.md)
        str(folder / "state"),
    ]
    if role == "agent":
        for agent in members:
            cmd += ["--id", agent]
        cmd += ["--report", str(folder)]
        if len(members) > 1:
            cmd += ["--log-dir", str(folder / "logs")]
    if participant == MO_ID:
        cmd += ["--out", str(folder), "--progress"]
        if ledger is not None:
            cmd += ["--ledger", str(ledger)]
    return cmd


def process_groups(
    scenario: Scenario, agents_per_process: int, agents: list[str] | None = None
) -> list[list[str]]:
    """Who shares an OS process: the LM and the MO alone, agents (the scenario's, or
    ``agents``: a day's) in groups of K."""
    if agents_per_process < 1:
        raise ValueError("--agents-per-process must be at least 1")
    agents = scenario.agent_ids if agents is None else agents
    k = agents_per_process
    return [[LM_ID], [MO_ID], *(agents[i : i + k] for i in range(0, len(agents), k))]


class Launcher:
    def __init__(self, options: LaunchOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.children: list[Child] = []
        self.broker: LocalBroker | None = None
        self.progress_lines: deque[dict[str, Any]] = deque(maxlen=50)
        self.folder = Path()
        self.keys = Path()
        self.run_id = ""
        self.scenario: Scenario | None = None
        #: The agents of a day (all its intervals'); None: the scenario's.
        self.day_agents: list[str] | None = None
        self.interrupted = False
        self.failures: list[str] = []  # "S3 was killed by SIGKILL during round 49", in order
        self.mo_status: int | None = None
        self.users: BrokerUsers | None = None  # of the broker we started
        self._logged_at: float | None = None  # last progress line printed (no terminal)

    # -- set-up ----------------------------------------------------------------------------
    def prepare(self) -> tuple[Scenario, Path]:
        scenario, _ = prepare(self.options.scenario)
        effective = effective_scenario(scenario, self.options.privacy)  # before any folder
        self.folder, self.run_id = run_folder(scenario, self.options.out)
        self.run_id = self.options.run_id or self.run_id
        (self.folder / "logs").mkdir(parents=True, exist_ok=True)
        scenario_file = self.folder / "scenario.toml"
        scenario_file.write_text(tomli_w.dumps(effective), encoding="utf-8")
        self.keys = (self.options.keys or self.folder / "secrets").resolve()
        init_keys(scenario, self.keys)
        (self.folder / "secrets").mkdir(mode=0o700, exist_ok=True)
        # A run folder used again (--out) is a new run: an earlier run's checkpoints (same run
        # id) would make every process resume that run, and its results must not stay.
        shutil.rmtree(self.folder / "state" / self.run_id, ignore_errors=True)
        clear_outputs(self.folder)
        self.scenario = scenario
        return scenario, scenario_file

    def broker_urls(self, scenario: Scenario) -> dict[str, str]:
        ids = participants(scenario)
        if self.day_agents is not None:
            ids = [*self.day_agents, LM_ID, MO_ID]
        if self.options.external is not None:
            return {pid: self.options.external.url(pid) for pid in ids}
        if self.options.broker:
            return dict.fromkeys(ids, self.options.broker)
        attack = scenario.attack
        colluders, coalition = (attack.colluders, attack.coalition) if attack else ([], "coalition")
        users = BrokerUsers.generate(ids, colluders, coalition)
        tls = self._tls(scenario) if self.options.tls else None
        if tls is None:  # over TLS the certificates are the logins: no password exists
            users.save(self.folder / "secrets" / "broker.json")
        self.users = users
        self.broker = start_broker(
            self.folder / "broker", self.run_id, users, prefer=self.options.broker_kind, tls=tls
        )
        if not self.options.quiet:
            over = " (TLS, client certificates)" if tls else ""
            self.console.print(f"broker: {self.broker.kind} on 127.0.0.1:{self.broker.port}{over}")
        return {pid: self.broker.url(pid, users.passwords[pid]) for pid in ids}

    def _tls(self, scenario: Scenario) -> Path:
        """``--tls``: a run CA and certificates in ``<run folder>/secrets/tls`` (also with
        ``--keys``: a broker certificate for this machine must not replace one made for a
        real host there); every child is told where."""
        folder = init_run_tls(scenario, self.folder / "secrets").folder
        self.options.extra_env[ENV_TLS_DIR] = str(folder)
        return folder

    def start_children(self, scenario: Scenario, scenario_file: Path, urls: dict[str, str]) -> None:
        keys = self.keys
        groups = process_groups(scenario, self.options.agents_per_process, self.day_agents)
        for members in groups:
            pid = members[0] if len(members) == 1 else f"agents-{members[0]}-{members[-1]}"
            log_path = self.folder / "logs" / f"{pid}.log"
            env = {**os.environ, **self.options.extra_env, "PRIVGRID_BROKER_URL": urls[members[0]]}
            if len(members) > 1:  # each agent keeps its own broker account
                env[ENV_BROKER_URLS] = json.dumps({m: urls[m] for m in members})
            command = _command(
                members,
                scenario_file,
                self.run_id,
                keys,
                self.options.log_format,
                self.folder,
                self.options.ledger,
            )
            self._spawn(pid, log_path, command, env)

    def _spawn(
        self,
        participant: str,
        log_path: Path,
        command: list[str],
        env: dict[str, str],
        again: Child | None = None,
    ) -> Child:
        """Start a child process (``again``: restart that child, same command, environment
        and log file) and record it."""
        # Ctrl-C between starting a child and recording it would orphan the child.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    command,
                    stdout=subprocess.PIPE if participant == MO_ID else subprocess.DEVNULL,
                    stderr=log,
                    env=env,
                    start_new_session=True,
                )
            if again is None:
                child = Child(participant, process, log_path, command, env)
                self.children.append(child)
            else:
                child, child.process = again, process
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if participant == MO_ID:
            threading.Thread(
                target=self._read_progress, args=(process.stdout,), daemon=True
            ).start()
        return child

    # -- running ---------------------------------------------------------------------------
    def _read_progress(self, stream: Any) -> None:
        for raw in stream:
            try:
                self.progress_lines.append(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue

    @property
    def mo(self) -> Child:
        return next(c for c in self.children if c.participant == MO_ID)

    def current_round(self) -> int:
        """The round in progress, as far as the MO's progress lines tell (0: none yet)."""
        return self.progress_lines[-1]["round"] + 1 if self.progress_lines else 0

    def when(self) -> str:
        """``during round 49``, or ``before round 1``; in a day ``during round 49 of
        interval 3``."""
        round_ = self.current_round()
        if not round_:
            return "before round 1"
        interval = self.progress_lines[-1].get("interval")
        return f"during round {round_}" + (f" of interval {interval}" if interval else "")

    def _show_progress(self, progress: Progress, task: Any) -> None:
        if not self.progress_lines:
            return
        line = self.progress_lines[-1]
        total = line.get("estimated_rounds")
        eta = line.get("eta_s")
        text = (
            f"r_P {line['r_P']:.1e}  r_L {line['r_L']:.1e}  r_d {line['r_d']:.1e}"
            f"  r_C {line['r_C']:.1e}  ETA {'?' if eta is None else f'{eta:.0f} s'}"
        )
        count = f"round {line['round']}" + ("" if total is None else f"/~{total}")
        if "interval" in line:  # a day: which market of the day
            count = f"interval {line['interval']}/{line['intervals']} {count}"
        progress.update(task, completed=line["round"], total=total, description=f"{count}  {text}")
        if self.options.quiet or self.console.is_terminal:
            return
        # No terminal (piped, a CI log): no bar, but a progress line every few seconds.
        elapsed = float(line["elapsed"])
        if self._logged_at is not None and elapsed < self._logged_at:
            self._logged_at = None  # a day's next interval: its clock starts again
        if self._logged_at is None or elapsed - self._logged_at >= PROGRESS_LOG_SECONDS:
            self._logged_at = elapsed
            residuals = {k: line[k] for k in ("r_P", "r_L", "r_d", "r_C")}
            where = f"interval {line['interval']}: " if "interval" in line else ""
            self.console.print(where + progress_text(line["round"], residuals, elapsed, eta))

    def wait(self) -> int:
        """Supervise the children until the MO has ended for good; its last status."""
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=self.options.quiet or not self.console.is_terminal,
            transient=True,
        ) as progress:
            task = progress.add_task("waiting for every participant…", total=None)
            while not self.mo.ended:
                time.sleep(0.1)
                self._show_progress(progress, task)
                for child in self.children:
                    status = child.process.poll()
                    if status is not None and not child.ended:
                        self._exited(child, status)
        code = self.mo.process.returncode
        self.mo_status = code
        grace = time.monotonic() + (10 if code == 0 else 3)  # one grace period for everyone
        for child in self.children:
            try:
                child.process.wait(timeout=max(0.0, grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                if code == 0:
                    self.console.print(f"[yellow]{child.participant} did not stop[/yellow]")
        return code

    def _exited(self, child: Child, status: int) -> None:
        """A child ended: restart it from its checkpoint if that is the policy, else note it."""
        if status == 0 or (child.participant == MO_ID and not crashed(status, MO_ID)):
            child.ended = True  # done, or the MO's own verdict (results.json says why)
            return
        what = f"{child.participant} {describe_exit(status)} {self.when()}"
        assert self.scenario is not None
        waits = self.scenario.timeouts.on_missing == "wait"
        run_goes_on = child.participant == MO_ID or not self.mo.ended
        if waits and run_goes_on and crashed(status, child.participant):
            if child.restarts < self.options.restarts:
                child.restarts += 1
                note = (
                    f"{what}; restarting it from its checkpoint "
                    f"(restart {child.restarts} of {self.options.restarts}): "
                    f"{shlex.join(child.command)}"
                )
                self.console.print(f"[yellow]{note}[/yellow]")
                self._note_in_log(child, note)
                self._spawn(child.participant, child.log_path, child.command, child.env, child)
                return
            what += f"; no restarts left (--restarts {self.options.restarts})"
        child.ended = True
        self.failures.append(what)
        self.console.print(f"[yellow]{what}[/yellow]")
        self._note_in_log(child, what)

    def _note_in_log(self, child: Child, text: str) -> None:
        """One line in the child's own log (its format), so the log says why it restarted."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        round_ = self.current_round()
        if self.options.log_format == "json":
            line = json.dumps(
                {
                    "ts": stamp,
                    "participant": child.participant,
                    "round": round_,
                    "level": "WARNING",
                    "msg": f"launcher: {text}",
                }
            )
        else:
            line = f"{stamp} {child.participant} r={round_} WARNING launcher: {text}"
        with child.log_path.open("a", encoding="utf-8") as log:
            log.write(line + "\n")

    def stop_all(self, mo_grace: float = 5.0) -> None:
        """SIGTERM every child still running (each stops cleanly), SIGKILL what is left after
        5 s (the MO: ``mo_grace`` s, time to write its results); a second Ctrl-C kills at
        once."""
        try:
            for child in self.children:
                if child.process.poll() is None:
                    os.killpg(child.process.pid, signal.SIGTERM)
            started = time.monotonic()
            for child in sorted(self.children, key=lambda c: c.participant == MO_ID):
                grace = mo_grace if child.participant == MO_ID else 5.0
                try:
                    child.process.wait(max(0.1, started + grace - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(child.process.pid, signal.SIGKILL)
                    child.process.wait()
        except KeyboardInterrupt:
            for child in self.children:
                if child.process.poll() is None:
                    os.killpg(child.process.pid, signal.SIGKILL)
                    child.process.wait()
        finally:
            if self.broker is not None:
                self.broker.stop()

    def error_lines(self, limit: int = 8) -> list[str]:
        lines = []
        for child in self.children:
            text = child.log_path.read_text(errors="replace") if child.log_path.exists() else ""
            lines += [ln for ln in text.splitlines() if " ERROR " in ln or "Traceback" in ln]
        return [ln if len(ln) <= 300 else ln[:297] + "…" for ln in lines[-limit:]]

    def fallback_error(self) -> str:
        """Why the run ended, when the MO could not say it in results.json."""
        if self.interrupted:
            return f"interrupted (Ctrl-C) {self.when()}"
        gone = next((f for f in self.failures if f.startswith(f"{MO_ID} ")), None)
        if self.mo_status == EXIT_BAD_INPUT:
            return f"the MO refused its input: {self.last_error(MO_ID) or 'see logs/MO.log'}"
        if gone is not None:
            return f"participant {gone}"
        if self.mo_status is not None:
            return f"participant MO {describe_exit(self.mo_status)} {self.when()}"
        return "the MO ended without results"

    def report(
        self, scenario: Scenario, scenario_file: Path, broker_error: str | None
    ) -> dict[str, Any]:
        """``privgrid report`` of the run, once every process has exited: from the MO's
        ``protocol.json``, or — when the MO could not write it — from the record of the
        failure (:meth:`ProtocolRecord.failed`), through the same report code."""
        from privgrid import report
        from privgrid.market.setup import build_setup

        def warn(text: str) -> None:
            self.console.print(f"[yellow]{text}[/yellow]")

        error = broker_error
        if error is None and (self.folder / PROTOCOL_FILE).exists():
            try:
                return report.report_run(self.folder, scenario_file, warn)
            except (RecordError, ScenarioError) as exc:
                error = f"the run could not be reported: {exc}"
                warn(error)
        record = ProtocolRecord.failed(
            run=self.run_id,
            mode=self.options.privacy or scenario.privacy.mode,
            error=error or self.fallback_error(),
            interrupted=self.interrupted,
            trace=read_trace(self.folder / TRACE_FILE),
        )
        return report.write_report(self.folder, build_setup(scenario), record, warn)

    def last_error(self, participant: str) -> str | None:
        """The message of ``participant``'s last ERROR log line (text or JSON format)."""
        path = self.folder / "logs" / f"{participant}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        for line in reversed(text.splitlines()):
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("level") == "ERROR":
                    return str(record.get("msg"))
            elif " ERROR " in line:
                return line.split(" ERROR ", 1)[1].strip()
        return None


def dashboard_plan(options: LaunchOptions) -> Any:
    """``--dashboard``'s checked plan (None without it), before anything starts.

    Raises:
        DashboardError: with ``--tls`` (the dashboard has no client certificate yet), or a
            listen address or broker it cannot use.
    """
    if options.dashboard is None:
        return None
    from privgrid.dashboard.launch import DashboardPlan
    from privgrid.dashboard.watch import DashboardError

    if options.tls:
        raise DashboardError(
            "--dashboard does not read a TLS broker yet (it has no client certificate); "
            "run without --tls, or watch the run folder alone with "
            "`privgrid dashboard RUN_DIR` (no broker view)"
        )
    return DashboardPlan.check(options.dashboard, options.broker, options.dashboard_broker)


def supervise(
    launcher: Launcher, scenario: Scenario, scenario_file: Path, plan: Any
) -> tuple[str | None, Any]:
    """Start the broker (and the dashboard of ``plan``), then every child; wait for the run;
    on Ctrl-C, or whatever ends it, stop every process. One body for a single run and a day.

    Returns:
        Why the broker or the dashboard did not start (None if they did), and the running
        dashboard (None without one): the caller stops it last, after the results exist.
    """
    broker_error: str | None = None
    dashboard = None
    try:
        try:
            urls = launcher.broker_urls(scenario)
            dashboard = _start_dashboard(launcher, plan) if plan is not None else None
        except RuntimeError as exc:  # the broker's, or the dashboard's (DashboardError)
            what = "the dashboard" if type(exc).__name__ == "DashboardError" else "the broker"
            broker_error = f"{what} did not start: {exc}"
        else:
            launcher.start_children(scenario, scenario_file, urls)
            launcher.wait()
    except KeyboardInterrupt:
        launcher.interrupted = launcher.mo_status is None
        launcher.console.print("[yellow]interrupted: stopping every process[/yellow]")
    finally:
        launcher.stop_all(mo_grace=INTERRUPT_GRACE if launcher.interrupted else 5.0)
    if launcher.interrupted and launcher.children:
        launcher.mo_status = launcher.mo.process.returncode
    return broker_error, dashboard


def _start_dashboard(launcher: Launcher, plan: Any) -> Any:
    """``--dashboard``: the dashboard as a child process of its own, with the run folder, the
    public roster and only its own broker account (:mod:`privgrid.dashboard.launch`)."""
    from privgrid.broker.config import DASHBOARD
    from privgrid.dashboard.launch import start_dashboard

    options = launcher.options
    if plan.broker_url is not None:
        url = plan.broker_url
    elif options.external is not None:
        url = options.external.url(DASHBOARD)
    else:
        assert launcher.broker is not None and launcher.users is not None
        url = launcher.broker.url(DASHBOARD, launcher.users.passwords[DASHBOARD])
    dashboard = start_dashboard(
        launcher.folder,
        launcher.run_id,
        plan.listen,
        url,
        launcher.keys / "roster.json",
        launcher.folder / "logs" / "dashboard.log",
    )
    if not options.quiet:
        launcher.console.print(f"dashboard: {dashboard.url}", highlight=False)
    return dashboard


def launch(options: LaunchOptions) -> tuple[int, Path, dict[str, Any]]:
    """Run a grid; return (exit status, run folder, results).

    The results are those of ``results.json``, which every run leaves: the MO's, or, when it
    could not write them (killed, bad input), the launcher's own with ``status`` and
    ``error`` saying what happened. Invalid input found before anything starts raises
    :class:`~privgrid.scenario.ScenarioError` (no run folder is made), and so does a
    ``--dashboard`` that cannot be served (:class:`~privgrid.dashboard.watch.DashboardError`).
    """
    plan = dashboard_plan(options)
    launcher = Launcher(options)
    scenario, scenario_file = launcher.prepare()
    broker_error, dashboard = supervise(launcher, scenario, scenario_file, plan)
    results = launcher.report(scenario, scenario_file, broker_error)
    code = final_status(launcher.mo_status, results.get("status"), launcher.interrupted)
    if code not in (EXIT_OK, EXIT_INTERRUPTED):
        for line in launcher.error_lines():
            launcher.console.print(f"[red]{line}[/red]", highlight=False, soft_wrap=True)
    if dashboard is not None:  # last: it shows the results it reads now, then exits
        dashboard.stop()
    return code, launcher.folder, results


def end_line(code: int, results: dict[str, Any]) -> str | None:
    """The run's last line on stderr: the one-line reason of anything but success."""
    status = results.get("status")
    if code == EXIT_OK:
        return None
    reason = results.get("error") or results.get("reason") or "no reason recorded"
    if code == EXIT_NOT_CONVERGED:
        return f"privgrid: run not converged: {reason} (exit {code})"
    if code == EXIT_BAD_INPUT:
        return f"privgrid: invalid input: {reason} (exit {code})"
    if code == EXIT_INTERRUPTED or status == INTERRUPTED:
        return f"privgrid: run interrupted: {reason} (exit {code})"
    return f"privgrid: run failed: {reason} (exit {code})"
