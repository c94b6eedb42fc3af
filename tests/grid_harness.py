"""Test harness: a real Mosquitto on a free loopback port (or the embedded broker), and role
processes started by hand.

Tests use the product's own pieces (config generation, keys, the role processes) and add what
only tests need: an ``intruder`` broker account that may read and write anything of the run —
the broker is untrusted (protocol.md §7), so the processes must hold even when it lets
anything through — *twin* accounts with a participant's rights (the brokers bind one client
id to each account, so a test that watches with a participant's rights while that participant
runs needs an account of its own), and control over which process starts, and when one dies.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import tomli_w

from privgrid.broker.config import BrokerUsers, acl_rules, mosquitto_acl, write_mosquitto_files
from privgrid.broker.local import (
    LocalBroker,
    free_port,
    mosquitto_binary,
    start_broker,
    wait_for_port,
)
from privgrid.keys import init_keys, participants
from privgrid.launcher import ExternalBroker, effective_scenario
from privgrid.scenario import LM_ID, MO_ID, Scenario, load_scenario
from privgrid.wire.session import NO_DELAY, BrokerUrl

ROOT = Path(__file__).resolve().parent.parent
INTRUDER = "intruder"
TEST_PASSWORD = "test-account-password"  # the intruder's and the twins'


def twin(pid: str) -> str:
    """The broker account with ``pid``'s rights that a test uses (see the module docstring)."""
    return f"{pid}-twin"


def start_mosquitto(
    folder: Path,
    run: str,
    users: BrokerUsers,
    *,
    intruder: bool = False,
    twins: tuple[str, ...] = (),
) -> LocalBroker:
    """Mosquitto with the run's generated config, plus optionally the intruder account and
    twin accounts of the participants ``twins``."""
    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError(
            "Debian's mosquitto is required for these tests (apt-get install mosquitto)"
        )
    port = free_port()
    extra = [INTRUDER] if intruder else []
    extra += [twin(pid) for pid in twins]
    all_users = BrokerUsers(
        {**users.passwords, **dict.fromkeys(extra, TEST_PASSWORD)}, users.colluders, users.coalition
    )
    conf = write_mosquitto_files(
        folder, run, all_users, port=port, bind="127.0.0.1", user=getpass.getuser()
    )
    if extra:  # the generated ACL for everyone else, a wide-open intruder, the twins' copies
        acl = mosquitto_acl(run, users)
        if intruder:
            acl += f"user {INTRUDER}\ntopic readwrite privgrid/{run}/#\n"
        rules = acl_rules(run, users)
        for pid in twins:
            acl += f"\nuser {twin(pid)}\n"
            acl += "".join(f"topic read {t}\n" for t in rules[pid]["read"])
            acl += "".join(f"topic write {t}\n" for t in rules[pid]["write"])
        (folder / "acl").write_text(acl)
    log_path = folder / "broker.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, 10, process)
    return LocalBroker("mosquitto", "127.0.0.1", port, process, log_path)


@dataclass
class Grid:
    """One run's folder, broker and role processes."""

    folder: Path
    scenario: Scenario
    scenario_file: Path
    run: str
    broker: LocalBroker
    users: BrokerUsers
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    extra_args: dict[str, list[str]] = field(default_factory=dict)  # per participant

    @property
    def external(self) -> ExternalBroker:
        return ExternalBroker(self.broker.host, self.broker.port, self.users)

    def url(self, user: str) -> str:
        password = self.users.passwords.get(user, TEST_PASSWORD)
        return f"mqtt://{user}:{password}@{self.broker.host}:{self.broker.port}"

    def client(
        self, user: str, identifier: str, password: str | None = None, **options: Any
    ) -> aiomqtt.Client:
        """An MQTT client logged in with ``user``'s broker account (``password`` overrides
        it, e.g. a wrong one). Mosquitto replaces ``identifier`` with ``user``, so a client
        of an account whose process runs would replace that process's connection: watch
        with a :func:`twin` instead. The embedded broker refuses a participant account's
        client unless ``identifier`` is the product's own id."""
        url = BrokerUrl.parse(self.url(user))
        return aiomqtt.Client(
            url.host,
            url.port,
            username=user,
            password=url.password if password is None else password,
            identifier=identifier,
            socket_options=NO_DELAY,
            **options,
        )

    def intruder_client(self, identifier: str = "intruder", **options: Any) -> aiomqtt.Client:
        """A client of the test's intruder (a broker account with no ACL limits, made by
        ``intruder=True``): it can publish anything anywhere."""
        return self.client(INTRUDER, identifier, **options)

    def command(self, pid: str) -> list[str]:
        module = {LM_ID: "line_manager", MO_ID: "market_operator"}.get(pid, "agents")
        cmd = [
            sys.executable,
            "-m",
            module,
            "--scenario",
            str(self.scenario_file),
            "--run",
            self.run,
            "--keys",
            str(self.folder / "secrets"),
        ]
        if module == "agents":
            cmd += ["--id", pid, "--report", str(self.folder)]
        if pid == MO_ID:
            cmd += ["--out", str(self.folder), "--progress"]
        return cmd + self.extra_args.get(pid, [])

    @property
    def progress_file(self) -> Path:
        return self.folder / "logs" / "progress.jsonl"

    def start(self, pid: str) -> subprocess.Popen:
        log = (self.folder / "logs" / f"{pid}.log").open("ab")
        # The MO's progress goes to a file: a pipe nobody reads would fill up and block it.
        out = self.progress_file.open("ab") if pid == MO_ID else subprocess.DEVNULL
        env = {**os.environ, "PRIVGRID_BROKER_URL": self.url(pid)}
        process = subprocess.Popen(
            self.command(pid),
            stdout=out,
            stderr=log,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()
        if pid == MO_ID:
            out.close()
        self.processes[pid] = process
        return process

    def start_all(self, skip: tuple[str, ...] = ()) -> None:
        for pid in participants(self.scenario):
            if pid not in skip:
                self.start(pid)

    def wait(self, pid: str, timeout: float) -> int:
        return self.processes[pid].wait(timeout)

    def wait_for_round(self, round_: int, timeout: float = 60) -> None:
        """Read the MO's progress lines until round ``round_`` has completed."""
        mo = self.processes[MO_ID]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = (
                self.progress_file.read_text().splitlines() if self.progress_file.exists() else []
            )
            if lines and json.loads(lines[-1])["round"] >= round_:
                return
            if mo.poll() is not None:
                raise AssertionError(f"the MO stopped before round {round_}")
            time.sleep(0.05)
        raise AssertionError(f"round {round_} not reached within {timeout} s")

    def wait_log(self, pid: str, text: str, timeout: float = 60) -> None:
        """Poll ``pid``'s log file until it contains ``text`` (its process must stay up)."""
        deadline = time.monotonic() + timeout
        path = self.folder / "logs" / f"{pid}.log"
        while time.monotonic() < deadline:
            if path.exists() and text in path.read_text(errors="replace"):
                return
            if self.processes[pid].poll() is not None:
                raise AssertionError(f"{pid} stopped before logging {text!r}")
            time.sleep(0.05)
        raise AssertionError(f"{pid} did not log {text!r} within {timeout} s")

    def kill(self, pid: str) -> None:
        os.killpg(self.processes[pid].pid, signal.SIGKILL)

    def log(self, pid: str) -> str:
        return (self.folder / "logs" / f"{pid}.log").read_text(errors="replace")

    def report(self) -> dict[str, Any]:
        """``privgrid report`` of the MO's record, as ``privgrid run`` does once the processes
        have ended: results.json, the final trace.csv, plots (and attack.json)."""
        from privgrid.report import report_run

        return report_run(self.folder, self.scenario_file)

    def results(self) -> dict[str, Any]:
        """results.json, reported from the MO's record the first time it is asked for."""
        path = self.folder / "results.json"
        if not path.exists():
            self.report()
        return json.loads(path.read_text())

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.broker.stop()


def write_scenario(
    folder: Path, scenario_path: Path, **overrides: dict[str, Any] | None
) -> tuple[Path, Scenario]:
    """``folder/scenario.toml``: the effective scenario with ``overrides`` merged per section
    (``agents``: {agent id: {field: value}}; None drops a section, e.g. ``attack=None`` for
    the honest market), and the scenario loaded back from it."""
    data = effective_scenario(load_scenario(scenario_path), None)
    for section, values in overrides.items():
        if values is None:
            data.pop(section, None)
        elif section == "agents":
            for agent in data["agents"]:
                agent.update(values.get(agent["id"], {}))
        else:
            data.setdefault(section, {}).update(values)
    folder.mkdir(parents=True, exist_ok=True)
    scenario_file = folder / "scenario.toml"
    scenario_file.write_text(tomli_w.dumps(data))
    return scenario_file, load_scenario(scenario_file)


def make_grid(
    folder: Path,
    scenario_path: Path,
    *,
    intruder: bool = False,
    twins: tuple[str, ...] = (),
    broker: str = "mosquitto",
    **overrides: dict[str, Any],
) -> Grid:
    """Run folder with the effective scenario (:func:`write_scenario`), keys and broker.

    ``broker``: ``mosquitto`` (the reference; ``intruder`` and ``twins`` need it) or
    ``embedded`` (amqtt, started as ``privgrid run`` starts it)."""
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    scenario_file, scenario = write_scenario(folder, scenario_path, **overrides)
    init_keys(scenario, folder / "secrets")
    run = f"t{int(time.time() * 1000) % 10**9}-{scenario.name}"
    attack = scenario.attack
    colluders, coalition = (attack.colluders, attack.coalition) if attack else ([], "coalition")
    users = BrokerUsers.generate(participants(scenario), colluders, coalition)
    if broker == "embedded":
        if intruder or twins:
            raise ValueError("the intruder and twin accounts exist on Mosquitto only")
        local = start_broker(folder / "broker", run, users, prefer="embedded")
    else:
        local = start_mosquitto(folder / "broker", run, users, intruder=intruder, twins=twins)
    return Grid(folder, scenario, scenario_file, run, local, users)
