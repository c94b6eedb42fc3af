"""What every role process does before and around its node: options, keys, logging, the loop.

``python -m agents``, ``python -m line_manager`` and ``python -m market_operator`` (and the
``privgrid agent|lm|mo`` subcommands) share these options:

  --scenario FILE      the scenario (every process reads the same file), or a day's
                       plan.json (``privgrid run DAY.toml`` writes it; docs/feeder.md)
  --broker URL         mqtt://[user:password@]host:port or mqtts://host[:8883]
                       (or PRIVGRID_BROKER_URL)
  --tls-dir DIR        for mqtts://: ca.pem, <id>.pem, <id>.key (or PRIVGRID_TLS_DIR;
                       default <keys>/tls, where ``privgrid keys init --tls`` writes them)
  --run RUN_ID         the run's id, part of every topic (or PRIVGRID_RUN; default: scenario name)
  --keys DIR           roster.json and <id>.key (or PRIVGRID_KEYS; default ./secrets)
  --log-format, --log-file
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from privgrid import logs
from privgrid.crypto.errors import IdentityError
from privgrid.crypto.identity import Identity, Roster
from privgrid.crypto.tls import TLS_DIR, TlsError, TlsFiles, check_client_files
from privgrid.market.feasibility import (
    InfeasibleScenarioError,
    ensure_feasible,
    known_feasible,
    remember_feasible,
)
from privgrid.roles.dayplan import DayPlan, is_plan
from privgrid.runtime import EXIT_BAD_INPUT, EXIT_INTERRUPTED, Node, Participant, Settings
from privgrid.scenario import LM_ID, MO_ID, FieldError, Scenario, ScenarioError, load_scenario
from privgrid.state import CheckpointStore, scenario_digest
from privgrid.wire import kinds
from privgrid.wire.faults import FaultConfigError, FaultSpec
from privgrid.wire.session import BrokerUrl, BrokerUrlError

ENV_RUN, ENV_KEYS, ENV_STATE = "PRIVGRID_RUN", "PRIVGRID_KEYS", "PRIVGRID_STATE"
ENV_TLS_DIR = "PRIVGRID_TLS_DIR"
#: JSON map participant id → broker URL, for a process hosting several participants (each
#: connects with its own broker account). Overrides --broker / PRIVGRID_BROKER_URL.
ENV_BROKER_URLS = "PRIVGRID_BROKER_URLS"
#: A folder: each process writes a cProfile of its event loop there as ``<ids>.prof``
#: (``benchmarks/wire.py --profile`` reads them; costs CPU, so never on in a normal run).
ENV_PROFILE = "PRIVGRID_PROFILE"
RUN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,80}$"


def role_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every role process takes."""
    options = [
        click.option(
            "--scenario",
            "scenario_path",
            required=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="Scenario TOML file, or a day's plan.json (written by `privgrid run DAY.toml`).",
        ),
        click.option(
            "--broker",
            envvar="PRIVGRID_BROKER_URL",
            default=None,
            help="mqtt://[user:password@]host:port, or mqtts://host[:8883] for TLS with "
            "client certificates [env PRIVGRID_BROKER_URL].",
        ),
        click.option(
            "--run",
            "run_id",
            envvar=ENV_RUN,
            default=None,
            help="Run id shared by all participants [env PRIVGRID_RUN; "
            "default: the scenario name].",
        ),
        click.option(
            "--keys",
            "keys_dir",
            envvar=ENV_KEYS,
            default="secrets",
            type=click.Path(file_okay=False, path_type=Path),
            help="Folder with roster.json and <id>.key [env PRIVGRID_KEYS].",
        ),
        click.option(
            "--tls-dir",
            "tls_dir",
            envvar=ENV_TLS_DIR,
            default=None,
            type=click.Path(file_okay=False, path_type=Path),
            help="For an mqtts:// broker: the folder with ca.pem, <id>.pem and <id>.key "
            "[env PRIVGRID_TLS_DIR; default: <keys>/tls].",
        ),
        click.option(
            "--state",
            "state_dir",
            envvar=ENV_STATE,
            default=None,
            type=click.Path(file_okay=False, path_type=Path),
            help="Checkpoint folder: save a sealed checkpoint every round and, if one exists "
            "for this run, resume from it after a crash [env PRIVGRID_STATE].",
        ),
        click.option(
            "--new-paillier-key",
            is_flag=True,
            help="When resuming, announce a fresh Paillier key instead of the checkpointed one.",
        ),
        click.option(
            "--log-format", type=click.Choice(logs.FORMATS), default="text", show_default=True
        ),
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Also append the log to this file.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@dataclass
class Context:
    """Everything a role process needs, loaded and checked."""

    scenario: Scenario
    me: str
    identity: Identity
    roster: Roster
    roles: dict[str, str]
    settings: Settings
    log: logs.ParticipantLog
    state_dir: Path | None = None
    new_paillier_key: bool = False
    #: A day over the wire: the plan (``scenario`` is then its first interval's, whose
    #: privacy, market and timeouts sections are the day's).
    plan: DayPlan | None = None

    def checkpoint_store(self) -> CheckpointStore | None:
        if self.state_dir is None:
            return None
        source = self.plan.source if self.plan is not None else self.scenario.source
        digest = scenario_digest(source.read_bytes())
        return CheckpointStore(self.state_dir, self.settings.run, self.me, self.identity, digest)


def roles_of(scenario: Scenario, plan: DayPlan | None = None) -> dict[str, str]:
    """Participant id → role: the scenario's agents, or all of a day's (``plan``)."""
    agents = plan.agent_ids if plan is not None else scenario.agent_ids
    return {**{a: kinds.AGENT for a in agents}, LM_ID: kinds.LM, MO_ID: kinds.MO}


def ensure_feasible_apart(scenario: Scenario) -> None:
    """:func:`~privgrid.market.feasibility.ensure_feasible` in a forked child process.

    Why: the check's LP needs SciPy and HiGHS, about 45 MB that a participant would otherwise
    carry for its whole run (the target is 80 MB per agent process; docs/performance.md). The
    child inherits the loaded scenario, so the fork costs little more than the check itself.
    Same errors as in-process (file, field, reason); without ``fork``, or with SciPy already
    loaded, the check runs here. Called before any thread or event loop exists.
    """
    if known_feasible(scenario):
        return
    if not hasattr(os, "fork") or "scipy.optimize" in sys.modules:
        ensure_feasible(scenario)
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: check, report the errors as JSON, exit without cleanup
        os.close(read)
        code, report = 0, ""
        try:
            ensure_feasible(scenario)
        except ScenarioError as exc:
            code = 2
            errors = [[e.file, e.field, e.reason] for e in exc.errors]
            report = json.dumps([isinstance(exc, InfeasibleScenarioError), errors])
        except BaseException as exc:  # reported to the parent, which raises
            code, report = 3, f"{type(exc).__name__}: {exc}"
        with os.fdopen(write, "w") as out:
            out.write(report)
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as inp:
        report = inp.read()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == 0:
        remember_feasible(scenario)
    elif code == 2:
        infeasible, errors = json.loads(report)
        kind = InfeasibleScenarioError if infeasible else ScenarioError
        raise kind([FieldError(*error) for error in errors])
    else:
        raise RuntimeError(f"the feasibility check of {scenario.source} failed: {report}")


def load_context(
    me: str,
    scenario_path: Path,
    broker: str | None,
    run_id: str | None,
    keys_dir: Path,
    log_format: str,
    log_file: Path | None,
    log: logs.ParticipantLog | None = None,
    *,
    state_dir: Path | None = None,
    new_paillier_key: bool = False,
    tls_dir: Path | None = None,
) -> Context:
    """Load and check everything; exit with status 2 and a clear message on bad input.

    ``log``: the participant's logger when the process hosts several participants (logging is
    then already set up, see :func:`privgrid.logs.setup_group`).
    """
    if log is None:
        log = logs.setup(me, log_format, log_file)
    plan = None
    try:
        if is_plan(scenario_path):  # a day: `privgrid run` checked every interval already
            plan = DayPlan.read(scenario_path)
            scenario = plan.load(1)
            agents = plan.agent_ids
        else:
            scenario = load_scenario(scenario_path)
            ensure_feasible_apart(scenario)  # an infeasible market never starts (exit 2)
            agents = scenario.agent_ids
        if scenario.attack is not None and me in scenario.attack.colluders:
            log.adversarial = True  # every line a colluder writes says so
        if me not in (LM_ID, MO_ID) and me not in agents:
            raise ScenarioError.single(scenario_path, "agents", f"no agent with id {me!r}")
        url = BrokerUrl.from_env(_member_url(me) or broker)
        if url.is_tls:
            url = url.with_tls(tls_files(me, url, tls_dir or keys_dir / TLS_DIR))
        FaultSpec.from_env()  # a bad PRIVGRID_FAULTS is bad input, not a crash later
        run = run_id or (plan.name if plan is not None else scenario.name)
        if not _valid_run_id(run):
            raise BrokerUrlError(f"run id {run!r} must match {RUN_ID_PATTERN}")
        roster = Roster.load(keys_dir / "roster.json")
        identity = Identity.load(keys_dir / f"{me}.key")
        roster.check_identity(me, identity)
        missing = sorted(set(roles_of(scenario, plan)) - set(roster))
        if missing:
            raise IdentityError(f"roster {keys_dir / 'roster.json'} lacks {', '.join(missing)}")
    except (ScenarioError, BrokerUrlError, IdentityError, FaultConfigError, TlsError) as exc:
        log.error("%s", exc)
        sys.exit(EXIT_BAD_INPUT)
    settings = Settings(run, url, scenario.timeouts.start)
    return Context(
        scenario,
        me,
        identity,
        roster,
        roles_of(scenario, plan),
        settings,
        log,
        state_dir,
        new_paillier_key,
        plan,
    )


def tls_files(me: str, url: BrokerUrl, folder: Path) -> TlsFiles:
    """``me``'s TLS files in ``folder``, checked before connecting: the run CA, a certificate
    for ``me`` (not another participant's) signed by it and valid now, and its key.

    Raises:
        TlsError: naming the missing or wrong file and the reason.
    """
    files = TlsFiles.in_dir(folder, me)
    if not files.ca.exists():
        raise TlsError(
            f"broker URL {url} uses TLS, but the run CA {files.ca} does not exist: make the "
            "certificates with `privgrid keys init SCENARIO --tls`, or give --tls-dir "
            f"(PRIVGRID_TLS_DIR) a folder with ca.pem, {me}.pem and {me}.key"
        )
    check_client_files(files, me)
    return files


def _member_url(me: str) -> str | None:
    """This participant's broker URL from PRIVGRID_BROKER_URLS, if the variable is set."""
    raw = os.environ.get(ENV_BROKER_URLS)
    if not raw:
        return None
    try:
        urls = json.loads(raw)
    except json.JSONDecodeError:
        raise BrokerUrlError(f"{ENV_BROKER_URLS} is not a JSON object") from None
    if not isinstance(urls, dict) or not isinstance(urls.get(me), str):
        raise BrokerUrlError(f"{ENV_BROKER_URLS} has no broker URL for {me!r}")
    return urls[me]


def _valid_run_id(run: str) -> bool:
    import re

    return re.fullmatch(RUN_ID_PATTERN, run) is not None


def run_node(ctx: Context, node: Node) -> int:
    """Run the node's event loop until it finishes; SIGTERM/SIGINT stop it cleanly."""
    return run_nodes([(ctx, node)])


def run_nodes(members: Sequence[tuple[Context, Node]]) -> int:
    """Run several participants in one event loop (``--agents-per-process``).

    Each keeps its own identity, keys, MQTT client and log; they share only the interpreter.
    The exit status is the worst of theirs. SIGTERM/SIGINT stop them all cleanly, with
    status 130 (:data:`~privgrid.runtime.EXIT_INTERRUPTED`).
    """
    participants = [
        Participant(
            node,
            ctx.settings,
            ctx.identity,
            ctx.roster,
            ctx.roles,
            ctx.checkpoint_store(),
            ctx.new_paillier_key,
        )
        for ctx, node in members
    ]

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, functools.partial(_cancel, task))
        try:
            codes = await asyncio.gather(*(p.run() for p in participants))
        except asyncio.CancelledError:
            for ctx, _ in members:
                ctx.log.warning("stopped by a signal")
            return EXIT_INTERRUPTED
        return max(codes)

    profile_dir = os.environ.get(ENV_PROFILE)
    if not profile_dir:
        return asyncio.run(main())
    import cProfile

    profiler = cProfile.Profile(time.process_time)  # CPU, not wall: 10 processes share 2 cores
    try:
        return profiler.runcall(asyncio.run, main())
    finally:
        name = "+".join(ctx.me for ctx, _ in members)
        profiler.dump_stats(Path(profile_dir) / f"{name}.prof")


def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None:
        task.cancel()
