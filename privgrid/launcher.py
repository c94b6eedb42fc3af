"""``privgrid run``: a whole grid on this machine — broker, LM, MO and every agent as processes.

1. validate the scenario and check feasibility before anything starts;
2. make the run folder ``runs/<timestamp>-<scenario>/`` with the effective scenario (after
   ``--privacy``), identity keys (``secrets/``), broker credentials and configuration;
3. start Mosquitto on a free loopback port (or the embedded broker where Mosquitto is not
   installed), unless ``--broker`` names one;
4. start the LM, the MO and every agent as separate OS processes, each logging to
   ``logs/<participant>.log``; show progress from the MO;
5. on Ctrl-C stop every child cleanly; at the end print the summary; exit 0 only when the
   market converged.
"""

from __future__ import annotations

import json
import math
import os
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
from privgrid.runtime import EXIT_FAILURE
from privgrid.scenario import LM_ID, MO_ID, Scenario, parse_scenario
from privgrid.solve import prepare


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
    tls: bool = False  # Mosquitto on TLS only, client certificates as logins (--tls)


@dataclass
class Child:
    participant: str
    process: subprocess.Popen
    log_path: Path


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


def process_groups(scenario: Scenario, agents_per_process: int) -> list[list[str]]:
    """Who shares an OS process: the LM and the MO alone, agents in groups of K."""
    if agents_per_process < 1:
        raise ValueError("--agents-per-process must be at least 1")
    agents = scenario.agent_ids
    k = agents_per_process
    return [[LM_ID], [MO_ID], *(agents[i : i + k] for i in range(0, len(agents), k))]


class Launcher:
    def __init__(self, options: LaunchOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console(stderr=True)
        self.children: list[Child] = []
        self.broker: LocalBroker | None = None
        self.progress_lines: deque[dict[str, Any]] = deque(maxlen=50)
        self.folder = Path()
        self.keys = Path()
        self.run_id = ""

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
        return scenario, scenario_file

    def broker_urls(self, scenario: Scenario) -> dict[str, str]:
        ids = participants(scenario)
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
        for members in process_groups(scenario, self.options.agents_per_process):
            pid = members[0] if len(members) == 1 else f"agents-{members[0]}-{members[-1]}"
            log_path = self.folder / "logs" / f"{pid}.log"
            env = {**os.environ, **self.options.extra_env, "PRIVGRID_BROKER_URL": urls[members[0]]}
            if len(members) > 1:  # each agent keeps its own broker account
                env[ENV_BROKER_URLS] = json.dumps({m: urls[m] for m in members})
            # Ctrl-C between starting a child and recording it would orphan the child.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                with log_path.open("ab") as log:
                    process = subprocess.Popen(
                        _command(
                            members,
                            scenario_file,
                            self.run_id,
                            keys,
                            self.options.log_format,
                            self.folder,
                            self.options.ledger,
                        ),
                        stdout=subprocess.PIPE if pid == MO_ID else subprocess.DEVNULL,
                        stderr=log,
                        env=env,
                        start_new_session=True,
                    )
                self.children.append(Child(pid, process, log_path))
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    # -- running ---------------------------------------------------------------------------
    def _read_progress(self, stream: Any) -> None:
        for raw in stream:
            try:
                self.progress_lines.append(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue

    def _eta(self, started: float) -> str:
        lines = list(self.progress_lines)
        if len(lines) < 10:
            return "?"
        eps = 1e-4
        first, last = lines[0], lines[-1]

        def level(line: dict[str, Any]) -> float:
            return max(line["r_P"], line["r_L"], line["r_d"], line["r_C"], 1e-15)

        drop = math.log(level(first)) - math.log(level(last))
        span = last["round"] - first["round"]
        if drop <= 0 or span <= 0:
            return "?"
        remaining = max(0.0, (math.log(level(last)) - math.log(eps)) * span / drop)
        per_round = (time.monotonic() - started) / max(last["round"], 1)
        return f"{remaining * per_round:.0f} s"

    def wait(self) -> int:
        mo = next(c for c in self.children if c.participant == MO_ID)
        reader = threading.Thread(
            target=self._read_progress, args=(mo.process.stdout,), daemon=True
        )
        reader.start()
        started = time.monotonic()
        reported: set[str] = set()
        with Progress(
            TextColumn("[bold]round {task.completed:.0f}/{task.total:.0f}"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=self.options.quiet,
            transient=True,
        ) as progress:
            task = progress.add_task("waiting for every participant…", total=1)
            while mo.process.poll() is None:
                time.sleep(0.1)
                if self.progress_lines:
                    line = self.progress_lines[-1]
                    text = (
                        f"r_P {line['r_P']:.1e}  r_L {line['r_L']:.1e}  r_d {line['r_d']:.1e}"
                        f"  r_C {line['r_C']:.1e}  ETA {self._eta(started)}"
                    )
                    progress.update(
                        task, completed=line["round"], total=line["max_rounds"], description=text
                    )
                for child in self.children:
                    status = child.process.poll()
                    if status not in (None, 0) and child.participant not in reported:
                        reported.add(child.participant)
                        self.console.print(
                            f"[yellow]{child.participant} exited with status {status}[/yellow]"
                        )
        reader.join(timeout=2)
        code = mo.process.returncode
        grace = time.monotonic() + (10 if code == 0 else 3)  # one grace period for everyone
        for child in self.children:
            try:
                child.process.wait(timeout=max(0.0, grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                if code == 0:
                    self.console.print(f"[yellow]{child.participant} did not stop[/yellow]")
        return code

    def stop_all(self) -> None:
        for child in self.children:
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for child in self.children:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        if self.broker is not None:
            self.broker.stop()

    def error_lines(self, limit: int = 8) -> list[str]:
        lines = []
        for child in self.children:
            text = child.log_path.read_text(errors="replace") if child.log_path.exists() else ""
            lines += [ln for ln in text.splitlines() if " ERROR " in ln or "Traceback" in ln]
        return [ln if len(ln) <= 300 else ln[:297] + "…" for ln in lines[-limit:]]


def launch(options: LaunchOptions) -> tuple[int, Path, dict[str, Any] | None]:
    """Run a grid; return (exit code, run folder, results or None)."""
    launcher = Launcher(options)
    scenario, scenario_file = launcher.prepare()
    code = EXIT_FAILURE
    try:
        try:
            urls = launcher.broker_urls(scenario)
        except RuntimeError as exc:
            launcher.console.print(f"[red]{exc}[/red]")
            return EXIT_FAILURE, launcher.folder, None
        launcher.start_children(scenario, scenario_file, urls)
        code = launcher.wait()
    except KeyboardInterrupt:
        launcher.console.print("[yellow]interrupted: stopping every process[/yellow]")
        code = 130
    finally:
        launcher.stop_all()
    results_path = launcher.folder / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else None
    if results is not None and scenario.attack is not None:
        # Again, now that every process has exited (the coordinator's estimates are written).
        from privgrid.attack.evaluate import write_attack_report
        from privgrid.market.setup import build_setup

        write_attack_report(launcher.folder, build_setup(scenario), results)
    if code not in (0, 130):
        for line in launcher.error_lines():
            launcher.console.print(f"[red]{line}[/red]")
    return code, launcher.folder, results
