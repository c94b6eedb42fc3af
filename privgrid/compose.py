"""``privgrid compose``: a Docker Compose file that runs a whole grid, one container each.

``privgrid compose SCENARIO -o FILE`` writes a compose file with these services:

``setup``
    Runs first, as root, without any network. Writes ``secrets/<scenario>/`` beside the compose
    file — identity keys (``privgrid keys init``), broker passwords, the Mosquitto password
    file, the ACL for this run id and a healthcheck script — copies to each participant only
    its own files (``secrets/<scenario>/<id>/``: roster, its key, its broker password), gives
    every file to the user its reader runs as (mode 0600), clears the broker's stored sessions
    and creates ``runs/<run>/``. Then it drops to ``nobody`` and idles, *healthy*. It does not
    exit, because Compose v1 (Debian's docker-compose 1.29) ends a whole
    ``up --abort-on-container-exit`` run when any container exits, a finished one-shot
    included. So a fresh clone needs nothing but ``docker compose up``.
``broker``
    ``eclipse-mosquitto:2`` (``PRIVGRID_MOSQUITTO_IMAGE``) as uid 1883, its generated
    configuration mounted read-only, persistence in a named volume, healthy once it accepts
    the read-only ``monitor`` account.
``lm``, ``mo``, ``agent-<id>``
    The project image (``PRIVGRID_IMAGE``), non-root (``PRIVGRID_UID``, default 10001). Each
    mounts the scenario folder read-only and *only its own* secrets folder; its broker URL is
    in ``PRIVGRID_BROKER_URL`` without the password, which ``python -m privgrid.compose exec``
    reads from the mounted file (so no password shows in ``docker inspect``). Only the MO
    mounts ``runs/<run>/``, where it writes results.json, trace.csv, plots and the ledger —
    and, in an attack scenario, the colluders, whose coordinator writes the coalition's
    estimates there (as with ``privgrid run``).

The run id is pinned (``PRIVGRID_RUN``, default the scenario name) because the ACL is scoped
to it. The MO's exit status is the run's: ``docker compose up --abort-on-container-exit
--exit-code-from mo`` returns 0 only for a converged run with its block committed. The other
participants finish a little earlier than the MO (it still commits and writes the results),
so ``exec`` keeps their containers up after their process ends — until Compose stops them or
``PRIVGRID_LINGER`` seconds pass — and the MO's exit is what ends the run; on a stop request
the MO gets ``PRIVGRID_STOP_GRACE`` seconds to finish by itself (e.g. to report a participant
that died) before it is told to stop.

The compose file holds no secret, password or timestamp: the one for ``configs/paper.toml`` is
checked in as ``compose.yaml`` and a test fails when it is out of date. See docs/docker.md.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets as _secrets
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import click

from privgrid.scenario import LM_ID, MO_ID, Scenario, ScenarioError, load_scenario

# -- what the compose file refers to -----------------------------------------------------------

COMPOSE_VERSION = "3.8"  # Compose v1 (1.29) needs it; v2 ignores it
DEFAULT_IMAGE = "privgrid:latest"
DEFAULT_BASE_IMAGE = "python:3.12-slim"
DEFAULT_MOSQUITTO_IMAGE = "eclipse-mosquitto:2"
#: The Dockerfile's ``privgrid`` user, and eclipse-mosquitto's ``mosquitto`` user.
DEFAULT_UID = 10001
BROKER_UID = 1883
BROKER_PORT = 1883
BROKER_HOST = "broker"
NETWORK = "grid"
BROKER_VOLUME = "broker-data"
DEFAULT_LINGER = 300.0
DEFAULT_STOP_GRACE = 20.0
#: Docker's wait between SIGTERM and SIGKILL for the MO: the grace plus time for its report.
MO_STOP_PERIOD = "45s"

#: Paths inside the containers.
SCENARIO_MOUNT = "/privgrid/scenario"
SECRETS_MOUNT = "/run/secrets/privgrid"
SETUP_SECRETS = "/privgrid/secrets"
SETUP_RUNS = "/privgrid/runs"
SETUP_BROKER_DATA = "/privgrid/broker-data"
READY_FILE = "/run/privgrid-setup/ready"
MOSQUITTO_CONFIG = "/mosquitto/config"
MOSQUITTO_DATA = "/mosquitto/data"
APP_DIR = "/app"  # the image's WORKDIR

#: Files of one participant's secrets folder.
PASSWORD_FILE = "broker.password"
ROSTER_FILE = "roster.json"

ENV_URL = "PRIVGRID_BROKER_URL"
ENV_PASSWORD_FILE = "PRIVGRID_BROKER_PASSWORD_FILE"
ENV_LINGER = "PRIVGRID_LINGER"
ENV_STOP_GRACE = "PRIVGRID_STOP_GRACE"
ENV_RUN = "PRIVGRID_RUN"

_SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class ComposeError(ValueError):
    """The scenario cannot be turned into a compose file (the message says why)."""


def service_name(participant: str) -> str:
    """``agent-s1`` for agent S1, ``lm`` and ``mo``: lower case, as Compose v2 prefers."""
    if participant == LM_ID:
        return "lm"
    if participant == MO_ID:
        return "mo"
    return f"agent-{participant.lower()}"


def _env(name: str, default: object) -> str:
    return f"${{{name}:-{default}}}"


def _relative(path: Path, base: Path) -> str:
    """``./x`` for a path below the compose file's folder, else the absolute path.

    Compose resolves relative paths against the folder of the compose file, so the checked-in
    file stays valid wherever the repository is cloned.
    """
    try:
        rel = path.resolve().relative_to(base.resolve())
    except ValueError:
        return path.resolve().as_posix()
    text = rel.as_posix()
    return "." if text == "." else f"./{text}"


def _repository_root() -> Path | None:
    """The source checkout with the Dockerfile (None for an installed wheel)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "Dockerfile").is_file() else None


@dataclass(frozen=True)
class Layout:
    """Where things are, as the compose file names them (relative to its own folder)."""

    scenario_dir: str  # host folder mounted read-only at SCENARIO_MOUNT
    scenario_file: str  # the scenario's path inside the containers
    secrets: str  # host folder: secrets/<scenario>
    secrets_root: str  # host folder: secrets
    runs: str  # host folder: runs
    context: str | None  # build context (the repository), if known

    @classmethod
    def of(cls, scenario: Scenario, scenario_path: Path, output: Path) -> Layout:
        base = output.resolve().parent
        folder = scenario_path.resolve().parent
        case = scenario.network.case
        if case.endswith(".m") and not Path(case).is_absolute():
            case_path = (folder / case).resolve()
            if folder not in case_path.parents:
                raise ComposeError(
                    f"{scenario_path}: network.case {case!r} lies outside the scenario's "
                    "folder, which is all the containers see; move it below that folder"
                )
        if scenario.name in (".", ".."):
            raise ComposeError(f"{scenario_path}: scenario.name {scenario.name!r} is not a name")
        root = _repository_root()
        return cls(
            scenario_dir=_relative(folder, base),
            scenario_file=f"{SCENARIO_MOUNT}/{scenario_path.name}",
            secrets=f"./secrets/{scenario.name}",
            secrets_root="./secrets",
            runs="./runs",
            context=_relative(root, base) if root is not None else None,
        )


def participant_ids(scenario: Scenario) -> list[str]:
    """LM, MO, then the agents in scenario order: the order of the services."""
    return [LM_ID, MO_ID, *scenario.agent_ids]


def compose_document(scenario: Scenario, layout: Layout) -> dict[str, Any]:
    """The compose file as plain data (dicts keep their order; no secret in it)."""
    names: dict[str, str] = {}
    for pid in participant_ids(scenario):
        name = service_name(pid)
        if not _SERVICE_NAME.match(name):
            raise ComposeError(f"participant id {pid!r} does not make a service name")
        if name in names:
            raise ComposeError(
                f"participants {names[name]!r} and {pid!r} would share the service name {name!r}"
            )
        names[name] = pid
    run = _env(ENV_RUN, scenario.name)
    attack = getattr(scenario, "attack", None)
    colluders = set(attack.colluders) if attack is not None else set()
    image = _env("PRIVGRID_IMAGE", DEFAULT_IMAGE)
    scenario_volume = f"{layout.scenario_dir}:{SCENARIO_MOUNT}:ro"
    services: dict[str, Any] = {"setup": _setup_service(scenario, layout, image, run)}
    services["broker"] = _broker_service(layout)
    for pid in participant_ids(scenario):
        services[service_name(pid)] = _participant_service(
            pid, layout, image, run, scenario_volume, pid in colluders
        )
    return {
        "version": COMPOSE_VERSION,
        "services": services,
        "networks": {NETWORK: {"internal": True}},
        "volumes": {BROKER_VOLUME: {}},
    }


def _setup_service(scenario: Scenario, layout: Layout, image: str, run: str) -> dict[str, Any]:
    service: dict[str, Any] = {"image": image}
    if layout.context is not None:
        service["build"] = {
            "context": layout.context,
            "args": {"BASE_IMAGE": _env("PRIVGRID_BASE_IMAGE", DEFAULT_BASE_IMAGE)},
        }
    service |= {
        "init": True,
        "user": "0:0",  # to give each file to the user its reader runs as
        "network_mode": "none",
        "entrypoint": ["python", "-m", "privgrid.compose", "setup"],
        "command": ["--scenario", layout.scenario_file, "--name", scenario.name],
        "environment": {
            ENV_RUN: run,
            "PRIVGRID_UID": _env("PRIVGRID_UID", DEFAULT_UID),
            "PRIVGRID_GID": _env("PRIVGRID_GID", DEFAULT_UID),
            "PRIVGRID_BROKER_UID": _env("PRIVGRID_BROKER_UID", BROKER_UID),
            "PRIVGRID_BROKER_GID": _env("PRIVGRID_BROKER_GID", BROKER_UID),
        },
        "volumes": [
            f"{layout.scenario_dir}:{SCENARIO_MOUNT}:ro",
            f"{layout.secrets_root}:{SETUP_SECRETS}",
            f"{layout.runs}:{SETUP_RUNS}",
            f"{BROKER_VOLUME}:{SETUP_BROKER_DATA}",
        ],
        "tmpfs": [str(PurePosixPath(READY_FILE).parent)],
        "healthcheck": {
            "test": ["CMD", "test", "-f", READY_FILE],
            "interval": "1s",
            "timeout": "5s",
            "retries": 5,
            "start_period": "20s",
        },
    }
    return service


def _broker_service(layout: Layout) -> dict[str, Any]:
    return {
        "image": _env("PRIVGRID_MOSQUITTO_IMAGE", DEFAULT_MOSQUITTO_IMAGE),
        "user": f"{_env('PRIVGRID_BROKER_UID', BROKER_UID)}:"
        f"{_env('PRIVGRID_BROKER_GID', BROKER_UID)}",
        "command": ["/usr/sbin/mosquitto", "-c", f"{MOSQUITTO_CONFIG}/mosquitto.conf"],
        "depends_on": {"setup": {"condition": "service_healthy"}},
        "volumes": [
            f"{layout.secrets}/broker:{MOSQUITTO_CONFIG}:ro",
            f"{BROKER_VOLUME}:{MOSQUITTO_DATA}",
        ],
        "networks": [NETWORK],
        "tmpfs": ["/tmp"],  # the healthcheck's marker: fresh at every start
        "healthcheck": {
            "test": ["CMD", "sh", f"{MOSQUITTO_CONFIG}/healthcheck.sh"],
            "interval": "2s",
            "timeout": "5s",
            "retries": 5,
            "start_period": "20s",
        },
    }


def _participant_service(
    pid: str, layout: Layout, image: str, run: str, scenario_volume: str, colluder: bool
) -> dict[str, Any]:
    run_folder = f"runs/{run}"  # relative to the image's WORKDIR, as results.json then names it
    if pid == LM_ID:
        command, role = ["lm", "--scenario", layout.scenario_file], "lm"
    elif pid == MO_ID:
        command, role = ["mo", "--scenario", layout.scenario_file, "--out", run_folder], "mo"
    else:
        command, role = ["agent", "--id", pid, "--scenario", layout.scenario_file], "agent"
    if colluder:  # the coordinator writes what the coalition estimated, as with `privgrid run`
        command += ["--report", run_folder]
    environment = {
        ENV_URL: f"mqtt://{pid}@{BROKER_HOST}:{BROKER_PORT}",
        ENV_PASSWORD_FILE: f"{SECRETS_MOUNT}/{PASSWORD_FILE}",
        "PRIVGRID_KEYS": SECRETS_MOUNT,
        ENV_RUN: run,
    }
    if pid == MO_ID:
        environment[ENV_STOP_GRACE] = _env(ENV_STOP_GRACE, int(DEFAULT_STOP_GRACE))
    else:
        environment[ENV_LINGER] = _env(ENV_LINGER, int(DEFAULT_LINGER))
    volumes = [scenario_volume, f"{layout.secrets}/{pid}:{SECRETS_MOUNT}:ro"]
    if pid == MO_ID or colluder:
        volumes.append(f"{layout.runs}/{run}:{APP_DIR}/{run_folder}")
    labels = {"org.privgrid.participant": pid, "org.privgrid.role": role}
    if colluder:
        labels["org.privgrid.colluder"] = "true"
    service: dict[str, Any] = {
        "image": image,
        "init": True,
        "user": f"{_env('PRIVGRID_UID', DEFAULT_UID)}:{_env('PRIVGRID_GID', DEFAULT_UID)}",
        "entrypoint": ["python", "-m", "privgrid.compose", "exec"],
        "command": command,
        "environment": environment,
        "volumes": volumes,
        "labels": labels,
        "depends_on": {"broker": {"condition": "service_healthy"}},
        "networks": [NETWORK],
    }
    if pid == MO_ID:
        service["stop_grace_period"] = MO_STOP_PERIOD
    return service


# -- YAML, written by hand so that the output is byte-for-byte deterministic -----------------

_PLAIN = re.compile(r"^[A-Za-z_/.][A-Za-z0-9_./-]*$")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED:
            return value
        return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _flow(items: Sequence[object]) -> str:
    return "[" + ", ".join(json.dumps(i) if isinstance(i, str) else _scalar(i) for i in items) + "]"


#: Lists written one item a line (paths read better so); other short lists are flow style.
_BLOCK_LISTS = {"volumes"}


def _yaml_lines(data: Mapping[str, Any], indent: int = 0) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for key, value in data.items():
        head = f"{pad}{_scalar(key)}:"
        if isinstance(value, Mapping):
            lines += [head, *_yaml_lines(value, indent + 1)] if value else [f"{head} {{}}"]
        elif isinstance(value, list):
            flow = f"{head} {_flow(value)}"
            scalars = all(not isinstance(v, Mapping | list) for v in value)
            if value and scalars and key not in _BLOCK_LISTS and len(flow) <= 100:
                lines.append(flow)
            else:
                lines += [head, *(f"{pad}  - {_scalar(v)}" for v in value)]
        else:
            lines.append(f"{head} {_scalar(value)}")
    return lines


def to_yaml(document: Mapping[str, Any], header: str = "") -> str:
    """Block-style YAML for compose: flow lists for commands, quotes only where needed."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    body = _yaml_lines(document)
    spaced: list[str] = []
    for line in body:
        depth = len(line) - len(line.lstrip(" "))
        previous = len(spaced[-1]) - len(spaced[-1].lstrip(" ")) if spaced else 0
        if spaced and (depth == 0 or (depth == 2 and previous > 2)):
            spaced.append("")  # a blank line between sections and between services
        spaced.append(line)
    return "\n".join(lines + spaced) + "\n"


#: The names ``docker compose`` finds without ``-f``.
DEFAULT_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


def _header(scenario: Scenario, scenario_arg: str, output_arg: str) -> str:
    name = scenario.name
    table = getattr(scenario, "attack", None)
    attack = (
        f"Attack: {', '.join(table.colluders)} collude against {table.target} "
        "(scenario's [attack] table)."
        if table is not None
        else "No attack: every agent is honest."
    )
    tailed = table.colluders[0] if table is not None else scenario.agent_ids[0]
    adversary = ", a colluder" if table is not None else ""
    dc = "docker compose" + ("" if output_arg in DEFAULT_FILE_NAMES else f" -f {output_arg}")
    prose = (
        f"Generated by `privgrid compose {scenario_arg} -o {output_arg}`: do not edit; change "
        f"the scenario and regenerate. {attack} `setup` writes secrets/{name}/ (keys, broker "
        "passwords and configuration, ACL; never commit it) and stays up; each participant "
        f"mounts only its own secrets/{name}/<id>/. Optional environment: PRIVGRID_RUN (run "
        f"id, default {name}), PRIVGRID_UID / PRIVGRID_GID (who the participants run as and "
        f"own their files, default {DEFAULT_UID}), PRIVGRID_IMAGE, PRIVGRID_BASE_IMAGE, "
        "PRIVGRID_MOSQUITTO_IMAGE, PRIVGRID_LINGER, PRIVGRID_STOP_GRACE. See docs/docker.md."
    )
    commands = [
        (f"{dc} up --build --abort-on-container-exit --exit-code-from mo", ""),
        (f"{dc} logs -f {service_name(tailed)}", f"{tailed}'s log{adversary}"),
        (f"cat runs/{name}/results.json", "also trace.csv, plots/, ledger.sqlite"),
        (f"{dc} down -v", "containers, network, broker state"),
    ]
    width = max(len(c) for c, _ in commands[1:]) + 2
    lines = [
        f'privgrid: scenario "{name}" as a Docker Compose project, one container per participant.',
        *textwrap.wrap(prose, 94),
        "",
        *(f"  {c:<{width}}# {note}" if note else f"  {c}" for c, note in commands),
    ]
    return "\n".join(lines) + "\n"


def generate(scenario_path: Path, output: Path) -> str:
    """The compose file text for ``scenario_path`` written to ``output`` (not written here)."""
    scenario = load_scenario(scenario_path)
    layout = Layout.of(scenario, scenario_path, output)
    base = output.resolve().parent
    scenario_arg = _relative(scenario_path, base).removeprefix("./")
    output_arg = output.name
    return to_yaml(compose_document(scenario, layout), _header(scenario, scenario_arg, output_arg))


@click.command(name="compose")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("compose.yaml"),
    show_default=True,
    help="Compose file to write; secrets/ and runs/ go beside it.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if OUTPUT is out of date.")
def compose_command(scenario: Path, output: Path, check: bool) -> None:
    """Write a Docker Compose file that runs SCENARIO, one container per participant.

    Services: setup (keys, broker credentials, ACL; runs first), broker (Mosquitto), lm, mo
    and agent-<id> for every agent. Then: docker compose -f OUTPUT up --build
    --abort-on-container-exit --exit-code-from mo. The file holds no secret; it is the same
    every time for the same scenario. Exit status: 0 written (or up to date), 1 out of date
    (--check), 2 invalid scenario.
    """
    try:
        text = generate(scenario, output)
    except (ScenarioError, ComposeError) as exc:
        click.echo(f"privgrid: error: {exc}", err=True)
        sys.exit(2)
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            click.echo(f"{output} is out of date: run privgrid compose {scenario} -o {output}")
            sys.exit(1)
        click.echo(f"{output} is up to date")
        return
    output.write_text(text, encoding="utf-8")
    where = "" if output.name in DEFAULT_FILE_NAMES else f" -f {output}"
    click.echo(
        f"wrote {output}; run: docker compose{where} up --build "
        "--abort-on-container-exit --exit-code-from mo"
    )


# -- inside the containers: setup ---------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """Who a file is for: the uid/gid its reader runs as inside its container."""

    uid: int
    gid: int

    @classmethod
    def from_env(cls, prefix: str, default: int, env: Mapping[str, str]) -> Owner:
        values = []
        for suffix in ("UID", "GID"):
            raw = env.get(f"{prefix}_{suffix}", "") or str(default)
            if not raw.isdigit():
                raise ComposeError(f"{prefix}_{suffix}={raw!r} must be a number")
            values.append(int(raw))
        return cls(values[0], values[1])


def _can_chown() -> bool:
    return os.geteuid() == 0


def _chown(path: Path, owner: Owner | None) -> None:
    if owner is not None and _can_chown():
        os.chown(path, owner.uid, owner.gid, follow_symlinks=False)


def _ensure_dir(path: Path, owner: Owner | None, mode: int) -> None:
    """Create or adopt a folder in place (it may be a bind mount's source, never replace it)."""
    if path.is_symlink():
        raise ComposeError(f"{path} is a symbolic link; refusing to write through it")
    path.mkdir(parents=True, exist_ok=True)
    _chown(path, owner)
    path.chmod(mode)


def _write_file(path: Path, data: bytes, owner: Owner | None, mode: int = 0o600) -> None:
    """Write atomically (temporary file + rename), with owner and mode set before the rename."""
    tmp = path.with_name(f".{path.name}.{_secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if owner is not None and _can_chown():
                os.fchown(handle.fileno(), owner.uid, owner.gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _adopt(path: Path, host: Owner, mode: int) -> None:
    """A top-level folder Docker created for a bind mount belongs to root: give it to the user
    who owns the scenario folder (the one who cloned the repository), so that ``privgrid run``
    and ``rm`` keep working for them."""
    path.mkdir(parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid == 0 and host.uid != 0 and _can_chown():
        os.chown(path, host.uid, host.gid)
        path.chmod(mode)


def healthcheck_script(run: str) -> str:
    """Healthy = Mosquitto accepted the read-only ``monitor`` account since it started, and
    still listens. Only the first success costs an MQTT connection: one per check would fill
    the broker's log, which users tail."""
    topic = f"privgrid/{run}/health"
    listening = f":{BROKER_PORT:04X} 00000000:0000 0A"  # /proc/net/tcp: 0.0.0.0:1883 LISTEN
    return f"""\
#!/bin/sh
# Generated by privgrid compose setup (run {run}); /tmp is a tmpfs, empty at every start.
if [ -f /tmp/privgrid-broker-ok ]; then
  exec grep -q '{listening}' /proc/net/tcp
fi
mosquitto_sub -h 127.0.0.1 -p {BROKER_PORT} -u monitor \\
  -P "$(cat {MOSQUITTO_CONFIG}/monitor.password)" -t {topic} -E -W 4 || exit 1
touch /tmp/privgrid-broker-ok
"""


@dataclass
class SetupResult:
    """What setup wrote (for its log line and the tests)."""

    project: Path
    run: str
    participants: list[str]
    colluders: list[str]
    run_folder: Path
    reused_passwords: bool


def setup_grid(
    scenario_path: Path,
    name: str,
    run: str,
    *,
    secrets_root: Path,
    runs_root: Path,
    broker_data: Path | None,
    owner: Owner,
    broker_owner: Owner,
) -> SetupResult:
    """Write every secret a compose run needs; idempotent, so ``up`` may run it again.

    Identity keys and broker passwords are kept once made (a ledger needs the same
    registration from one run to the next, and a running broker knows the passwords); the
    password file, the ACL and the configuration are rewritten for ``run``.
    """
    from privgrid.broker.config import (
        MONITOR,
        BrokerUsers,
        mosquitto_acl,
        mosquitto_conf,
        password_file,
    )
    from privgrid.keys import init_keys
    from privgrid.process import RUN_ID_PATTERN

    scenario = load_scenario(scenario_path)
    if scenario.name != name:
        raise ComposeError(
            f"{scenario_path} is scenario {scenario.name!r}, but the compose file was made for "
            f"{name!r}: regenerate it (privgrid compose)"
        )
    if not re.fullmatch(RUN_ID_PATTERN, run):
        raise ComposeError(f"{ENV_RUN}={run!r} must match {RUN_ID_PATTERN}")
    ids = [*scenario.agent_ids, LM_ID, MO_ID]
    scenario_dir = scenario_path.resolve().parent.stat()
    host = Owner(scenario_dir.st_uid, scenario_dir.st_gid)
    _adopt(secrets_root, host, 0o700)
    _adopt(runs_root, host, 0o755)
    project = secrets_root / name
    _ensure_dir(project, owner, 0o700)

    keys_dir = project / "keys"
    init_keys(scenario, keys_dir)
    for path in [keys_dir, *keys_dir.iterdir()]:
        _chown(path, owner)

    attack = getattr(scenario, "attack", None)  # the [attack] table (collusion experiment)
    colluders = list(attack.colluders) if attack is not None else []
    coalition = attack.coalition if attack is not None else "coalition"
    users_file = project / "broker.json"
    users = BrokerUsers.load(users_file) if users_file.exists() else None
    reused = users is not None and set(users.passwords) == {*ids, MONITOR}
    users = BrokerUsers(
        dict(users.passwords) if reused and users else BrokerUsers.generate(ids).passwords,
        tuple(colluders),
        coalition,
    )
    _write_file(
        users_file,
        json.dumps(
            {"passwords": dict(users.passwords), "colluders": colluders, "coalition": coalition},
            indent=2,
        ).encode(),
        owner,
    )

    roster = (keys_dir / ROSTER_FILE).read_bytes()
    for pid in ids:
        folder = project / pid
        _ensure_dir(folder, owner, 0o700)
        _write_file(folder / ROSTER_FILE, roster, owner, 0o644)
        _write_file(folder / f"{pid}.key", (keys_dir / f"{pid}.key").read_bytes(), owner)
        _write_file(folder / PASSWORD_FILE, users.passwords[pid].encode(), owner)

    broker_dir = project / "broker"
    _ensure_dir(broker_dir, broker_owner, 0o700)
    conf = mosquitto_conf(
        port=BROKER_PORT, bind="0.0.0.0", config_dir=MOSQUITTO_CONFIG, data_dir=MOSQUITTO_DATA
    )
    files = {
        "mosquitto.conf": conf,
        "passwd": password_file(users),
        "acl": mosquitto_acl(run, users),
        "monitor.password": users.passwords[MONITOR],
        "healthcheck.sh": healthcheck_script(run),
    }
    for filename, text in files.items():
        _write_file(broker_dir / filename, text.encode(), broker_owner)

    if broker_data is not None and broker_data.is_dir():
        # A new `up` is a new session of this run id: stale retained announcements and queued
        # messages of the last one must not reach it. (A broker restart within a run does not
        # go through setup, so persistence still covers that.)
        for stale in ("mosquitto.db", "mosquitto.db.new"):
            (broker_data / stale).unlink(missing_ok=True)
        _chown(broker_data, broker_owner)
        broker_data.chmod(0o700)

    run_folder = runs_root / run
    _ensure_dir(run_folder, owner, 0o755)
    # An earlier session may have run as another uid: the MO must be able to append to the
    # ledger and replace the results.
    for folder, dirs, files in os.walk(run_folder):
        for entry in [*dirs, *files]:
            _chown(Path(folder) / entry, owner)
    return SetupResult(project, run, ids, colluders, run_folder, reused)


def _idle(seconds: float | None) -> None:
    """Wait for SIGTERM/SIGINT (or ``seconds``): setup stays up so that Compose v1 does not
    read its exit as the end of the run."""
    stop = {"now": False}

    def handler(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    deadline = None if seconds is None else time.monotonic() + seconds
    while not stop["now"] and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.2)


def _drop_privileges() -> None:
    """After writing, nothing needs root: idle as ``nobody``."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)


def _say(who: str, level: str, message: str) -> None:
    """One line in the format of the role logs (docs/wire.md, "Logs")."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    millis = int(time.time() * 1000) % 1000
    print(f"{stamp}.{millis:03d}Z {who} r=- {level:<5} {message}", file=sys.stderr, flush=True)


# -- inside the containers: exec -------------------------------------------------------------


def broker_url_with_password(env: Mapping[str, str]) -> str:
    """``PRIVGRID_BROKER_URL`` with the password from ``PRIVGRID_BROKER_PASSWORD_FILE``."""
    url = env.get(ENV_URL, "")
    password_file = env.get(ENV_PASSWORD_FILE)
    if not password_file:
        return url
    try:
        password = Path(password_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ComposeError(f"cannot read the broker password ({exc})") from exc
    parts = urlsplit(url)
    if not parts.username or not parts.hostname:
        raise ComposeError(f"{ENV_URL}={url!r} must be mqtt://user@host:port")
    netloc = f"{parts.username}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return max(0.0, float(env.get(name, "") or default))
    except ValueError:
        return default


def run_role(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    linger: float,
    stop_grace: float,
    who: str,
    command: Sequence[str] | None = None,
) -> int:
    """Run ``privgrid ARGV`` as a child; return its status (128+N if killed by signal N).

    A stop request (SIGTERM/SIGINT) is passed on after ``stop_grace`` seconds if the child
    has not ended by then (the MO uses this to finish a report). After the child ends, wait
    up to ``linger`` seconds for a stop request (the others use this so that the MO, not
    them, ends an ``--abort-on-container-exit`` run).
    """
    stop = {"at": None}

    def on_signal(signum: int, frame: object) -> None:
        if stop["at"] is None:
            stop["at"] = time.monotonic()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cmd = [*(command or [sys.executable, "-m", "privgrid.cli"]), *argv]
    child = subprocess.Popen(cmd, env=dict(env))
    forwarded = False
    while child.poll() is None:
        asked = stop["at"]
        if asked is not None and not forwarded and time.monotonic() - asked >= stop_grace:
            child.send_signal(signal.SIGTERM)
            forwarded = True
        time.sleep(0.1)
    code = child.returncode if child.returncode >= 0 else 128 - child.returncode
    if stop["at"] is None and linger > 0:
        _say(
            who,
            "INFO",
            f"finished with status {code}; staying up until the run ends "
            f"(at most {linger:g} s, {ENV_LINGER})",
        )
        deadline = time.monotonic() + linger
        while stop["at"] is None and time.monotonic() < deadline:
            time.sleep(0.2)
    return code


# -- python -m privgrid.compose -----------------------------------------------------------------


@click.group()
def container_main() -> None:
    """What the compose services run inside the image (not meant for the host)."""


@container_main.command("setup")
@click.option("--scenario", "scenario_path", required=True, type=click.Path(path_type=Path))
@click.option("--name", required=True, help="The scenario name the compose file was made for.")
@click.option("--secrets", "secrets_root", default=SETUP_SECRETS, type=click.Path(path_type=Path))
@click.option("--runs", "runs_root", default=SETUP_RUNS, type=click.Path(path_type=Path))
@click.option("--broker-data", default=SETUP_BROKER_DATA, type=click.Path(path_type=Path))
@click.option("--ready", "ready_file", default=READY_FILE, type=click.Path(path_type=Path))
@click.option("--once", is_flag=True, help="Exit when done instead of idling (tests, hosts).")
def setup_command(
    scenario_path: Path,
    name: str,
    secrets_root: Path,
    runs_root: Path,
    broker_data: Path,
    ready_file: Path,
    once: bool,
) -> None:
    """Write secrets/<name>/ for the compose services, mark ready, then idle until stopped.

    On an error it logs the reason and idles *unhealthy* for a minute, so that Compose does
    not start a broker or participant on stale files (v1 treats a dependency that exited as
    healthy); `docker compose logs setup` shows the reason.
    """
    env = os.environ
    run = env.get(ENV_RUN) or name
    ready_file.unlink(missing_ok=True)
    try:
        result = setup_grid(
            scenario_path,
            name,
            run,
            secrets_root=secrets_root,
            runs_root=runs_root,
            broker_data=broker_data,
            owner=Owner.from_env("PRIVGRID", DEFAULT_UID, env),
            broker_owner=Owner.from_env("PRIVGRID_BROKER", BROKER_UID, env),
        )
    except Exception as exc:  # whatever it is, Compose must not start on stale files
        if isinstance(exc, ScenarioError | ComposeError | OSError):
            _say("setup", "ERROR", str(exc))
        else:
            _say("setup", "ERROR", f"unexpected {type(exc).__name__}: {exc}")
            traceback.print_exc()
        if once:
            sys.exit(2)
        _drop_privileges()
        _idle(60.0)
        sys.exit(2)
    colluders = ", ".join(result.colluders) or "none"
    _say(
        "setup",
        "INFO",
        f"run {run}: keys and broker credentials for {len(result.participants)} participants "
        f"({'kept' if result.reused_passwords else 'new'} passwords), ACL for run {run} "
        f"(colluders: {colluders}); results in runs/{run}/",
    )
    if Owner.from_env("PRIVGRID", DEFAULT_UID, env).uid == 0:
        _say("setup", "WARNING", "PRIVGRID_UID=0: every participant runs as root")
    ready_file.parent.mkdir(parents=True, exist_ok=True)
    ready_file.write_text(f"{run}\n", encoding="utf-8")
    if once:
        return
    _drop_privileges()
    _idle(None)


@container_main.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, required=True)
def exec_command(argv: tuple[str, ...]) -> None:
    """Run `privgrid ARGV` with the broker password read from its file; see run_role."""
    env = dict(os.environ)
    who = _participant_of(argv)
    try:
        env[ENV_URL] = broker_url_with_password(env)
    except ComposeError as exc:
        _say(who, "ERROR", str(exc))
        sys.exit(2)
    is_mo = bool(argv) and argv[0] == "mo"
    code = run_role(
        argv,
        env,
        linger=0.0 if is_mo else _seconds(env, ENV_LINGER, DEFAULT_LINGER),
        stop_grace=_seconds(env, ENV_STOP_GRACE, DEFAULT_STOP_GRACE) if is_mo else 0.0,
        who=who,
    )
    sys.exit(code)


def _participant_of(argv: Sequence[str]) -> str:
    if argv and argv[0] == "lm":
        return LM_ID
    if argv and argv[0] == "mo":
        return MO_ID
    for flag, value in itertools.pairwise(argv):
        if flag == "--id":
            return value
    return "-"


if __name__ == "__main__":
    container_main()
