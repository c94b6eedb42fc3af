"""``privgrid compose SCENARIO --swarm``: the grid as a Docker Swarm stack over several nodes.

``docker stack deploy -c stack.yaml NAME`` runs the same services as the compose file (broker,
``lm``, ``mo``, ``agent-<id>``), but Swarm places them on the nodes of a cluster, so nothing is
shared between them but the network and what Swarm hands out:

- **Placement by node labels**: the broker on a node labelled ``privgrid.broker=true``, the LM
  and the MO on ``privgrid.operators=true``, the agents on ``privgrid.agents=true`` (Swarm
  spreads the agents' services over every node so labelled). A single node may carry all
  three labels.
- **An encrypted overlay network** (``driver_opts: encrypted``: IPsec between nodes) that is
  ``internal``: no port is published, the broker is reachable only from the stack's services,
  by DNS round robin (``endpoint_mode: dnsrr``, see :data:`ENDPOINT_MODE`).
- **Secrets, each service only its own**: the files are made on the host by the same step as
  the compose file's ``setup`` service (:func:`privgrid.compose.setup.setup_grid`) into
  ``secrets/<scenario>/`` beside the stack file, and each service gets the roster, its own
  identity key and its own broker password — or, with ``--tls``, the CA, its own certificate
  and key; the broker gets its configuration, ACL and password file or TLS files. The
  scenario (and a MATPOWER case file beside it) travels as a Swarm config.
- **No restart of a finished participant**: ``restart_policy: on-failure`` (exit 0 is final;
  a crashed agent or LM gets two more tries), the MO never restarts: its exit status is the
  run's, read with ``privgrid swarm wait NAME`` (:mod:`privgrid.compose.swarm`).
- The MO writes results.json, trace.csv, plots and the ledger into ``runs/<scenario>/`` beside
  the stack file, a bind mount: it must run on the node the stack is deployed from (the
  manager, labelled ``privgrid.operators``) or that folder must exist on its node.

The broker keeps no state across its tasks (no volume): each deployment is one run, and stale
sessions of an earlier one could not leak into it. The run id is the scenario's name (the
ACL is written for it). Images are not built by Swarm: every node needs ``PRIVGRID_IMAGE``
(default ``privgrid:latest``) and the broker's node ``PRIVGRID_MOSQUITTO_IMAGE``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from privgrid.compose.common import (
    BROKER_UID,
    DEFAULT_STOP_GRACE,
    DEFAULT_UID,
    ENV_LINGER,
    ENV_RUN,
    ENV_STOP_GRACE,
    PASSWORD_FILE,
    ROSTER_FILE,
    TLS_FOLDER,
)
from privgrid.compose.document import (
    APP_DIR,
    COMPOSE_VERSION,
    DEFAULT_IMAGE,
    DEFAULT_MOSQUITTO_IMAGE,
    MO_STOP_PERIOD,
    NETWORK,
    SCENARIO_MOUNT,
    SECRETS_MOUNT,
    Layout,
    _env,
    _relative,
    broker_login,
    check_service_names,
    entrypoint,
    participant_ids,
    role_command,
    role_of,
    service_name,
)
from privgrid.compose.emitter import to_yaml
from privgrid.crypto.tls import BROKER, CA_CERT
from privgrid.scenario import LM_ID, MO_ID, Scenario, load_scenario

#: Where the broker's files are mounted (Swarm secrets live below /run/secrets).
BROKER_SECRETS = "/run/secrets/broker"
#: The node labels that place the services.
LABEL_BROKER = "privgrid.broker"
LABEL_OPERATORS = "privgrid.operators"
LABEL_AGENTS = "privgrid.agents"
#: Modes of mounted files (Swarm takes a number; 0o400 and 0o444).
PRIVATE, PUBLIC = 0o400, 0o444
#: A crashed participant's tries; the MO, whose exit is the result, gets none.
MAX_ATTEMPTS = 2
#: The broker's name resolves to its container itself, not to a virtual IP: Swarm's virtual
#: IPs need the kernel's IPVS (missing on some kernels, where connections then fail with "no
#: route to host"), and IPVS drops idle long-lived connections after 15 minutes.
ENDPOINT_MODE = "dnsrr"


def stack_name(scenario: Scenario) -> str:
    """The stack's default name: the scenario's, lower case (services become NAME_mo …)."""
    return scenario.name.lower().replace(".", "-")


def _placement(label: str) -> dict[str, Any]:
    return {"constraints": [f"node.labels.{label} == true"]}


def _mount(source: str, target: str, uid: str, gid: str, mode: int) -> dict[str, Any]:
    return {"source": source, "target": target, "uid": uid, "gid": gid, "mode": mode}


def _case_file(scenario: Scenario, scenario_path: Path) -> tuple[Path, str] | None:
    """The scenario's MATPOWER file, if it names one: its host path and its path inside."""
    case = scenario.network.case
    if not case.endswith(".m"):
        return None
    if Path(case).is_absolute():
        return Path(case), case
    return scenario_path.resolve().parent / case, f"{SCENARIO_MOUNT}/{case}"


def stack_document(
    scenario: Scenario, scenario_path: Path, output: Path, tls: bool = False
) -> dict[str, Any]:
    """The stack file as plain data; every path relative to the stack file's folder."""
    check_service_names(scenario)
    layout = Layout.of(scenario, scenario_path, output)
    base = output.resolve().parent
    run = scenario.name
    secrets_dir = f"./secrets/{scenario.name}"
    attack = getattr(scenario, "attack", None)
    colluders = set(attack.colluders) if attack is not None else set()
    image = _env("PRIVGRID_IMAGE", DEFAULT_IMAGE)
    uid, gid = _env("PRIVGRID_UID", DEFAULT_UID), _env("PRIVGRID_GID", DEFAULT_UID)
    secrets: dict[str, Any] = {}
    configs: dict[str, Any] = {
        "scenario": {"file": _relative(scenario_path, base)},
    }
    scenario_configs = [_mount("scenario", layout.scenario_file, uid, gid, PUBLIC)]
    case = _case_file(scenario, scenario_path)
    if case is not None:
        configs["case"] = {"file": _relative(case[0], base)}
        scenario_configs.append(_mount("case", case[1], uid, gid, PUBLIC))

    services: dict[str, Any] = {
        "broker": _broker(scenario, secrets, secrets_dir, tls),
    }
    secrets["roster"] = {"file": f"{secrets_dir}/keys/{ROSTER_FILE}"}
    for pid in participant_ids(scenario):
        name = service_name(pid)
        own = f"{secrets_dir}/{pid}"
        mounts = [
            _mount("roster", f"privgrid/{ROSTER_FILE}", uid, gid, PUBLIC),
            _mount(f"{name}-key", f"privgrid/{pid}.key", uid, gid, PRIVATE),
        ]
        secrets[f"{name}-key"] = {"file": f"{own}/{pid}.key"}
        if tls:
            for kind, file, mode in (
                ("ca", CA_CERT, PUBLIC),
                (f"{name}-cert", f"{pid}.pem", PUBLIC),
                (f"{name}-tls-key", f"{pid}.key", PRIVATE),
            ):
                mounts.append(_mount(kind, f"privgrid/{TLS_FOLDER}/{file}", uid, gid, mode))
                if kind != "ca":
                    secrets[kind] = {"file": f"{own}/{TLS_FOLDER}/{file}"}
        else:
            mounts.append(
                _mount(f"{name}-password", f"privgrid/{PASSWORD_FILE}", uid, gid, PRIVATE)
            )
            secrets[f"{name}-password"] = {"file": f"{own}/{PASSWORD_FILE}"}
        services[name] = _participant(
            pid,
            layout.scenario_file,
            image,
            run,
            uid,
            gid,
            mounts,
            scenario_configs,
            tls,
            pid in colluders,
        )
    if tls:
        secrets["ca"] = {"file": f"{secrets_dir}/broker/{CA_CERT}"}
    return {
        "version": COMPOSE_VERSION,
        "services": services,
        "networks": {
            NETWORK: {
                "driver": "overlay",
                "driver_opts": {"encrypted": "true"},
                "internal": True,
            }
        },
        "configs": configs,
        "secrets": dict(sorted(secrets.items())),
    }


def _broker(scenario: Scenario, secrets: dict[str, Any], secrets_dir: str, tls: bool) -> dict:
    uid = _env("PRIVGRID_BROKER_UID", BROKER_UID)
    gid = _env("PRIVGRID_BROKER_GID", BROKER_UID)
    files = ["mosquitto.conf", "acl"]
    files += [CA_CERT, f"{BROKER}.pem", f"{BROKER}.key"] if tls else ["passwd"]
    sources = {
        "mosquitto.conf": "broker-conf",
        "acl": "broker-acl",
        "passwd": "broker-passwd",
        CA_CERT: "ca",
        f"{BROKER}.pem": "broker-cert",
        f"{BROKER}.key": "broker-tls-key",
    }
    mounts = []
    for file in files:
        source = sources[file]
        if source != "ca":
            secrets[source] = {"file": f"{secrets_dir}/broker/{file}"}
        mounts.append(_mount(source, f"broker/{file}", uid, gid, PRIVATE))
    return {
        "image": _env("PRIVGRID_MOSQUITTO_IMAGE", DEFAULT_MOSQUITTO_IMAGE),
        "user": f"{uid}:{gid}",
        "command": ["/usr/sbin/mosquitto", "-c", f"{BROKER_SECRETS}/mosquitto.conf"],
        "secrets": mounts,
        "networks": [NETWORK],
        "deploy": {
            "endpoint_mode": ENDPOINT_MODE,
            "placement": _placement(LABEL_BROKER),
            "restart_policy": {"condition": "on-failure", "max_attempts": MAX_ATTEMPTS},
        },
    }


def _participant(
    pid: str,
    scenario_file: str,
    image: str,
    run: str,
    uid: str,
    gid: str,
    mounts: list[dict[str, Any]],
    scenario_configs: list[dict[str, Any]],
    tls: bool,
    colluder: bool,
) -> dict[str, Any]:
    run_folder = f"runs/{run}"
    environment = {**broker_login(pid, tls), "PRIVGRID_KEYS": SECRETS_MOUNT, ENV_RUN: run}
    if pid == MO_ID:
        environment[ENV_STOP_GRACE] = str(int(DEFAULT_STOP_GRACE))
    else:
        environment[ENV_LINGER] = "0"  # nothing waits for a finished participant here
    operators = pid in (LM_ID, MO_ID) or colluder  # colluders write to the MO's run folder
    service: dict[str, Any] = {
        "image": image,
        "user": f"{uid}:{gid}",
        "entrypoint": entrypoint(pid),
        "command": role_command(pid, scenario_file, run_folder, colluder),
        "environment": environment,
        "configs": scenario_configs,
        "secrets": mounts,
        "networks": [NETWORK],
    }
    if pid == MO_ID or colluder:
        service["volumes"] = [f"./{run_folder}:{APP_DIR}/{run_folder}"]
    if pid == MO_ID:
        service["stop_grace_period"] = MO_STOP_PERIOD
    labels = {"org.privgrid.participant": pid, "org.privgrid.role": role_of(pid)}
    if colluder:
        labels["org.privgrid.colluder"] = "true"
    restart = (
        {"condition": "none"}
        if pid == MO_ID
        else {"condition": "on-failure", "max_attempts": MAX_ATTEMPTS, "delay": "5s"}
    )
    service["deploy"] = {
        "endpoint_mode": ENDPOINT_MODE,
        "labels": labels,
        "placement": _placement(LABEL_OPERATORS if operators else LABEL_AGENTS),
        "restart_policy": restart,
    }
    return service


def _header(scenario: Scenario, scenario_arg: str, output_arg: str, tls: bool) -> str:
    name = stack_name(scenario)
    flag = " --tls" if tls else ""
    login = (
        "TLS certificates (the broker listens on 8883, TLS only; no passwords)"
        if tls
        else "broker passwords"
    )
    prose = (
        f"Generated by `privgrid compose {scenario_arg} --swarm{flag} -o {output_arg}`, which "
        f"also wrote secrets/{scenario.name}/ (identity keys, {login}, broker configuration, "
        f"ACL; never commit it) and runs/{scenario.name}/ beside this file: do not edit; change "
        "the scenario and regenerate. Every node needs the image (PRIVGRID_IMAGE, default "
        f"{DEFAULT_IMAGE}; PRIVGRID_MOSQUITTO_IMAGE on the broker's node); label the nodes "
        f"{LABEL_BROKER}, {LABEL_OPERATORS} (deploy from it: the MO writes runs/"
        f"{scenario.name}/ there) and {LABEL_AGENTS}. Secret and config modes are decimal "
        "(256 = 0400, 292 = 0444). See docs/deploy.md."
    )
    commands = [
        (
            f"docker node update --label-add {LABEL_BROKER}=true NODE",
            f"and {LABEL_OPERATORS}, {LABEL_AGENTS}",
        ),
        (f"docker stack deploy --resolve-image never -c {output_arg} {name}", ""),
        (f"privgrid swarm wait {name}", "the MO's exit status"),
        (f"docker service logs {name}_mo", "the MO's log"),
        (f"cat runs/{scenario.name}/results.json", "also trace.csv, plots/, ledger.sqlite"),
        (f"docker stack rm {name}", "before the next deployment"),
    ]
    width = max(len(c) for c, note in commands if note) + 2
    lines = [
        f'privgrid: scenario "{scenario.name}" as a Docker Swarm stack, one service per '
        "participant.",
        *textwrap.wrap(prose, 94),
        "",
        *(f"  {c:<{width}}# {note}" if note else f"  {c}" for c, note in commands),
    ]
    return "\n".join(lines) + "\n"


def generate_stack(scenario_path: Path, output: Path, tls: bool = False) -> str:
    """The stack file text for ``scenario_path`` written to ``output`` (not written here)."""
    scenario = load_scenario(scenario_path)
    base = output.resolve().parent
    scenario_arg = _relative(scenario_path, base).removeprefix("./")
    document = stack_document(scenario, scenario_path, output, tls)
    return to_yaml(document, _header(scenario, scenario_arg, output.name, tls))
