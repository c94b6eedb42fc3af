"""The compose document: which services a grid needs, what each mounts, runs and waits for.

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
    included. So a fresh clone needs nothing but ``docker compose up``. (:mod:`.setup`)
``broker``
    ``eclipse-mosquitto:2`` (``PRIVGRID_MOSQUITTO_IMAGE``) as uid 1883, its generated
    configuration mounted read-only, persistence in a named volume, healthy once it accepts
    the read-only ``monitor`` account.
``lm``, ``mo``, ``agent-<id>``
    The project image (``PRIVGRID_IMAGE``), non-root (``PRIVGRID_UID``, default 10001). Each
    mounts the scenario folder read-only and *only its own* secrets folder; its broker URL is
    in ``PRIVGRID_BROKER_URL`` without the password, which ``python -m privgrid.compose exec``
    (:mod:`.supervisor`) reads from the mounted file (so no password shows in
    ``docker inspect``). Only the MO mounts ``runs/<run>/``, where it writes trace.csv,
    protocol.json and the ledger, and then — the MO's process ended, in the same container
    (``exec --report``) — ``privgrid report`` writes results.json, the final trace.csv and
    the plots; in an attack scenario the colluders mount it too, their coordinator writing
    the coalition's estimates there (as with ``privgrid run``).
``dashboard``
    The live dashboard (``privgrid dashboard``, docs/dashboard.md) on the project image, as
    the participants' user: its own read-only broker account (``dashboard``; its password
    file and the public roster are all of ``secrets/<scenario>/dashboard/``), the run folder
    mounted read-only. Published on the host's loopback only, ``127.0.0.1:8050``
    (``PRIVGRID_DASHBOARD``: another ``[HOST:]PORT``), through a network of its own: ``grid``
    is internal and cannot publish a port.

With ``--tls`` (``privgrid compose SCENARIO --tls``) no password exists: ``setup`` makes a run
CA and certificates (``privgrid keys init --tls``, the broker's certificate naming ``broker``),
the broker listens on 8883 with TLS only and takes each account from its client certificate,
and each participant's URL is ``mqtts://broker:8883`` with its CA, certificate and key in
``secrets/<scenario>/<id>/tls/`` (``PRIVGRID_TLS_DIR``).

The run id is pinned (``PRIVGRID_RUN``, default the scenario name) because the ACL is scoped
to it. The MO's exit status is the run's: ``docker compose up --abort-on-container-exit
--exit-code-from mo`` returns 0 only for a converged run with its block committed.

The compose file holds no secret, password or timestamp: the one for ``configs/paper.toml`` is
checked in as ``compose.yaml`` and a test fails when it is out of date. See docs/docker.md.
This module builds it as plain data; :mod:`.emitter` writes it out.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from privgrid.broker.config import DASHBOARD
from privgrid.compose.common import (
    BROKER_PORT,
    BROKER_TLS_PORT,
    BROKER_UID,
    DEFAULT_LINGER,
    DEFAULT_STOP_GRACE,
    DEFAULT_UID,
    ENV_LINGER,
    ENV_PASSWORD_FILE,
    ENV_RUN,
    ENV_STOP_GRACE,
    ENV_TLS_DIR,
    ENV_URL,
    MOSQUITTO_CONFIG,
    MOSQUITTO_DATA,
    PASSWORD_FILE,
    READY_FILE,
    ROSTER_FILE,
    SETUP_BROKER_DATA,
    SETUP_RUNS,
    SETUP_SECRETS,
    TLS_FOLDER,
    ComposeError,
)
from privgrid.compose.emitter import to_yaml
from privgrid.scenario import LM_ID, MO_ID, Scenario, load_scenario

COMPOSE_VERSION = "3.8"  # Compose v1 (1.29) needs it; v2 ignores it
DEFAULT_IMAGE = "privgrid:latest"
DEFAULT_BASE_IMAGE = "python:3.12-slim"
DEFAULT_MOSQUITTO_IMAGE = "eclipse-mosquitto:2"
BROKER_HOST = "broker"
NETWORK = "grid"
DASHBOARD_NETWORK = "dashboard"  # not internal: the dashboard's port is published from it
DASHBOARD_SERVICE = "dashboard"
DASHBOARD_PORT = 8050  # inside its container
DEFAULT_DASHBOARD_ADDRESS = f"127.0.0.1:{DASHBOARD_PORT}"  # on the host: loopback only
BROKER_VOLUME = "broker-data"
#: Docker's wait between SIGTERM and SIGKILL for the MO: the grace plus time for its report.
MO_STOP_PERIOD = "45s"

#: Paths inside the participants' containers.
SCENARIO_MOUNT = "/privgrid/scenario"
SECRETS_MOUNT = "/run/secrets/privgrid"
APP_DIR = "/app"  # the image's WORKDIR

#: The names ``docker compose`` finds without ``-f``.
DEFAULT_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")

_SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


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
    root = Path(__file__).resolve().parents[2]
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


def check_service_names(scenario: Scenario) -> None:
    """Every participant makes a valid service name, and no two the same one."""
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


def compose_document(scenario: Scenario, layout: Layout, tls: bool = False) -> dict[str, Any]:
    """The compose file as plain data (dicts keep their order; no secret in it)."""
    check_service_names(scenario)
    run = _env(ENV_RUN, scenario.name)
    attack = getattr(scenario, "attack", None)
    colluders = set(attack.colluders) if attack is not None else set()
    image = _env("PRIVGRID_IMAGE", DEFAULT_IMAGE)
    scenario_volume = f"{layout.scenario_dir}:{SCENARIO_MOUNT}:ro"
    services: dict[str, Any] = {"setup": _setup_service(scenario, layout, image, run, tls)}
    services["broker"] = _broker_service(layout)
    for pid in participant_ids(scenario):
        services[service_name(pid)] = _participant_service(
            pid, layout, image, run, scenario_volume, pid in colluders, tls
        )
    if DASHBOARD_SERVICE in services:
        raise ComposeError(f"a participant's service is named {DASHBOARD_SERVICE!r}")
    if not tls:  # the dashboard logs in with a password; it has no client certificate yet
        services[DASHBOARD_SERVICE] = _dashboard_service(layout, image, run)
    return {
        "version": COMPOSE_VERSION,
        "services": services,
        "networks": {NETWORK: {"internal": True}, DASHBOARD_NETWORK: {}},
        "volumes": {BROKER_VOLUME: {}},
    }


def _setup_service(
    scenario: Scenario, layout: Layout, image: str, run: str, tls: bool = False
) -> dict[str, Any]:
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
        "command": [
            "--scenario",
            layout.scenario_file,
            "--name",
            scenario.name,
            *(["--tls"] if tls else []),
        ],
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


def role_command(pid: str, scenario_file: str, run_folder: str, colluder: bool) -> list[str]:
    """``lm|mo|agent …``: what ``python -m privgrid.compose exec`` runs for ``pid``."""
    if pid == LM_ID:
        command = ["lm", "--scenario", scenario_file]
    elif pid == MO_ID:
        command = ["mo", "--scenario", scenario_file, "--out", run_folder]
    else:
        command = ["agent", "--id", pid, "--scenario", scenario_file]
    if colluder:  # the coordinator writes what the coalition estimated, as with `privgrid run`
        command += ["--report", run_folder]
    return command


def entrypoint(pid: str) -> list[str]:
    """``python -m privgrid.compose exec``; for the MO with ``--report``: once the MO has
    ended, its container writes the results from its record (``privgrid report``)."""
    command = ["python", "-m", "privgrid.compose", "exec"]
    return [*command, "--report"] if pid == MO_ID else command


def role_of(pid: str) -> str:
    return {LM_ID: "lm", MO_ID: "mo"}.get(pid, "agent")


def broker_login(pid: str, tls: bool) -> dict[str, str]:
    """The environment that points a participant at the broker: ``mqtts://`` and its TLS
    folder, or ``mqtt://`` and its password file (read by ``exec``, never in the URL)."""
    if tls:
        return {
            ENV_URL: f"mqtts://{BROKER_HOST}:{BROKER_TLS_PORT}",
            ENV_TLS_DIR: f"{SECRETS_MOUNT}/{TLS_FOLDER}",
        }
    return {
        ENV_URL: f"mqtt://{pid}@{BROKER_HOST}:{BROKER_PORT}",
        ENV_PASSWORD_FILE: f"{SECRETS_MOUNT}/{PASSWORD_FILE}",
    }


def _participant_service(
    pid: str,
    layout: Layout,
    image: str,
    run: str,
    scenario_volume: str,
    colluder: bool,
    tls: bool = False,
) -> dict[str, Any]:
    run_folder = f"runs/{run}"  # relative to the image's WORKDIR, as results.json then names it
    command = role_command(pid, layout.scenario_file, run_folder, colluder)
    role = role_of(pid)
    environment = {**broker_login(pid, tls), "PRIVGRID_KEYS": SECRETS_MOUNT, ENV_RUN: run}
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
        "entrypoint": entrypoint(pid),
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


def _dashboard_service(layout: Layout, image: str, run: str) -> dict[str, Any]:
    """The live dashboard: read-only everywhere, its own broker account, loopback only."""
    run_folder = f"runs/{run}"
    return {
        "image": image,
        "init": True,
        "user": f"{_env('PRIVGRID_UID', DEFAULT_UID)}:{_env('PRIVGRID_GID', DEFAULT_UID)}",
        "entrypoint": ["python", "-m", "privgrid.compose", "exec"],
        "command": [
            "dashboard",
            run_folder,
            "--listen",
            f"0.0.0.0:{DASHBOARD_PORT}",
            "--roster",
            f"{SECRETS_MOUNT}/{ROSTER_FILE}",
        ],
        "environment": {
            ENV_URL: f"mqtt://{DASHBOARD}@{BROKER_HOST}:{BROKER_PORT}",
            ENV_PASSWORD_FILE: f"{SECRETS_MOUNT}/{PASSWORD_FILE}",
            ENV_RUN: run,
        },
        "volumes": [
            f"{layout.secrets}/{DASHBOARD}:{SECRETS_MOUNT}:ro",
            f"{layout.runs}/{run}:{APP_DIR}/{run_folder}:ro",
        ],
        "ports": [f"{_env('PRIVGRID_DASHBOARD', DEFAULT_DASHBOARD_ADDRESS)}:{DASHBOARD_PORT}"],
        "labels": {"org.privgrid.role": "dashboard"},
        "depends_on": {"broker": {"condition": "service_healthy"}},
        "networks": [NETWORK, DASHBOARD_NETWORK],
    }


def _header(scenario: Scenario, scenario_arg: str, output_arg: str, tls: bool = False) -> str:
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
    flag = " --tls" if tls else ""
    what = (
        "keys, TLS certificates (no passwords: the broker listens on 8883, TLS only), broker "
        "configuration, ACL"
        if tls
        else "keys, broker passwords and configuration, ACL"
    )
    prose = (
        f"Generated by `privgrid compose {scenario_arg}{flag} -o {output_arg}`: do not edit; "
        f"change the scenario and regenerate. {attack} `setup` writes secrets/{name}/ ({what}; "
        "never commit it) and stays up; each participant "
        f"mounts only its own secrets/{name}/<id>/. Optional environment: PRIVGRID_RUN (run "
        f"id, default {name}), PRIVGRID_UID / PRIVGRID_GID (who the participants run as and "
        f"own their files, default {DEFAULT_UID}), PRIVGRID_IMAGE, PRIVGRID_BASE_IMAGE, "
        "PRIVGRID_MOSQUITTO_IMAGE, PRIVGRID_LINGER, PRIVGRID_STOP_GRACE, PRIVGRID_DASHBOARD "
        f"(where the live dashboard is published, default {DEFAULT_DASHBOARD_ADDRESS}). "
        "See docs/docker.md."
    )
    commands = [
        (f"{dc} up --build --abort-on-container-exit --exit-code-from mo", ""),
        (f"{dc} logs -f {service_name(tailed)}", f"{tailed}'s log{adversary}"),
        (f"cat runs/{name}/results.json", "also trace.csv, plots/, ledger.sqlite"),
        (f"open http://{DEFAULT_DASHBOARD_ADDRESS}/", "the live dashboard, while it runs"),
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


def generate(scenario_path: Path, output: Path, tls: bool = False) -> str:
    """The compose file text for ``scenario_path`` written to ``output`` (not written here)."""
    scenario = load_scenario(scenario_path)
    layout = Layout.of(scenario, scenario_path, output)
    base = output.resolve().parent
    scenario_arg = _relative(scenario_path, base).removeprefix("./")
    output_arg = output.name
    return to_yaml(
        compose_document(scenario, layout, tls), _header(scenario, scenario_arg, output_arg, tls)
    )
