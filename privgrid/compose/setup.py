"""``python -m privgrid.compose setup``: the in-container step that writes a run's secrets.

The compose file's ``setup`` service runs this first, as root and without a network: identity
keys, broker passwords, the Mosquitto configuration, password file and ACL, a healthcheck
script, each participant's own secrets folder (roster, its key, its broker password), every
file given to the user its reader runs as; then the run folder. With ``--tls`` there are no
passwords: a run CA and certificates instead (``privgrid keys init --tls``), the broker's TLS
listener on 8883, and each participant's ``tls/`` folder with the CA, its certificate and key.
It is idempotent, so every ``up`` may run it again. Apart from the compose document because
it runs somewhere else (inside the image, on the files), and from the supervisor because it
runs once, before any participant.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _secrets
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import click

from privgrid.broker.config import (
    DASHBOARD,
    MONITOR,
    OBSERVERS,
    BrokerTls,
    BrokerUsers,
    mosquitto_acl,
    mosquitto_conf,
    password_file,
)
from privgrid.compose.common import (
    BROKER_PORT,
    BROKER_TLS_NAMES,
    BROKER_TLS_PORT,
    BROKER_UID,
    DEFAULT_UID,
    ENV_RUN,
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
    say,
)
from privgrid.crypto.tls import BROKER, CA_CERT
from privgrid.keys import init_keys, init_run_tls
from privgrid.scenario import LM_ID, MO_ID, ScenarioError, load_scenario


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


def healthcheck_script(run: str, tls: bool = False) -> str:
    """Healthy = Mosquitto accepted the read-only ``monitor`` account since it started, and
    still listens. Only the first success costs an MQTT connection: one per check would fill
    the broker's log, which users tail. With ``tls`` the monitor logs in by its certificate."""
    topic = f"privgrid/{run}/health"
    port = BROKER_TLS_PORT if tls else BROKER_PORT
    listening = f":{port:04X} 00000000:0000 0A"  # /proc/net/tcp: 0.0.0.0:<port> LISTEN
    login = (
        f"--cafile {MOSQUITTO_CONFIG}/{CA_CERT} --cert {MOSQUITTO_CONFIG}/{MONITOR}.pem \\\n"
        f"  --key {MOSQUITTO_CONFIG}/{MONITOR}.key"
        if tls
        else f'-u monitor \\\n  -P "$(cat {MOSQUITTO_CONFIG}/monitor.password)"'
    )
    return f"""\
#!/bin/sh
# Generated by privgrid compose setup (run {run}); /tmp is a tmpfs, empty at every start.
if [ -f /tmp/privgrid-broker-ok ]; then
  exec grep -q '{listening}' /proc/net/tcp
fi
mosquitto_sub -h 127.0.0.1 -p {port} {login} -t {topic} -E -W 4 || exit 1
touch /tmp/privgrid-broker-ok
"""


#: The files of the broker's folder, with and without TLS (any other name is stale).
_BROKER_FILES = {
    "mosquitto.conf",
    "passwd",
    "acl",
    "monitor.password",
    "healthcheck.sh",
    CA_CERT,
    f"{BROKER}.pem",
    f"{BROKER}.key",
    f"{MONITOR}.pem",
    f"{MONITOR}.key",
}


def broker_files(
    run: str,
    users: BrokerUsers,
    tls: Path | None = None,
    *,
    config_dir: str = MOSQUITTO_CONFIG,
    data_dir: str = MOSQUITTO_DATA,
) -> dict[str, str]:
    """The broker container's configuration folder, file name → text: the Mosquitto
    configuration, password file and ACL for ``run``, the monitor's password and the
    healthcheck. Every broker setting of a compose run is made here.

    ``tls``: the run's TLS folder; the broker then listens on 8883 with TLS only, and gets the
    CA, its certificate and key and the monitor's instead of any password. ``config_dir``:
    where the broker finds these files (the Swarm stack mounts them as secrets elsewhere).
    """
    if tls is None:
        conf = mosquitto_conf(
            port=BROKER_PORT, bind="0.0.0.0", config_dir=config_dir, data_dir=data_dir
        )
        return {
            "mosquitto.conf": conf,
            "passwd": password_file(users),
            "acl": mosquitto_acl(run, users),
            "monitor.password": users.passwords[MONITOR],
            "healthcheck.sh": healthcheck_script(run),
        }
    files = BrokerTls(
        f"{config_dir}/{CA_CERT}", f"{config_dir}/{BROKER}.pem", f"{config_dir}/{BROKER}.key"
    )
    conf = mosquitto_conf(
        port=BROKER_TLS_PORT,
        bind="0.0.0.0",
        config_dir=config_dir,
        data_dir=data_dir,
        tls=files,
    )
    out = {"mosquitto.conf": conf, "acl": mosquitto_acl(run, users)}
    for name in (CA_CERT, f"{BROKER}.pem", f"{BROKER}.key", f"{MONITOR}.pem", f"{MONITOR}.key"):
        out[name] = (tls / name).read_text(encoding="utf-8")
    out["healthcheck.sh"] = healthcheck_script(run, tls=True)
    return out


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
    tls: bool = False,
    broker_config_dir: str = MOSQUITTO_CONFIG,
) -> SetupResult:
    """Write every secret a compose run needs; idempotent, so ``up`` may run it again.

    Identity keys and broker passwords are kept once made (a ledger needs the same
    registration from one run to the next, and a running broker knows the passwords); the
    password file, the ACL and the configuration are rewritten for ``run``. With ``tls``:
    certificates instead of passwords (kept while valid, like the keys).
    ``broker_config_dir``: where the broker will find its files (the Swarm stack's secrets).
    """
    from privgrid.process import RUN_ID_PATTERN  # lazily: privgrid.process loads the runtime

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
    tls_dir = None
    if tls:
        tls_dir = init_run_tls(scenario, keys_dir, broker_names=BROKER_TLS_NAMES).folder
    for root, dirs, files in os.walk(keys_dir):
        for entry in [".", *dirs, *files]:
            _chown(Path(root) / entry, owner)

    attack = getattr(scenario, "attack", None)  # the [attack] table (collusion experiment)
    colluders = list(attack.colluders) if attack is not None else []
    coalition = attack.coalition if attack is not None else "coalition"
    users_file = project / "broker.json"
    users = BrokerUsers.load(users_file) if users_file.exists() and not tls else None
    reused = users is not None and set(users.passwords) == {*ids, *OBSERVERS}
    users = BrokerUsers(
        dict(users.passwords) if reused and users else BrokerUsers.generate(ids).passwords,
        tuple(colluders),
        coalition,
    )
    if tls:  # the certificates are the logins: no password is kept anywhere
        users_file.unlink(missing_ok=True)
    else:
        _write_file(
            users_file,
            json.dumps(
                {
                    "passwords": dict(users.passwords),
                    "colluders": colluders,
                    "coalition": coalition,
                },
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
        if tls_dir is None:
            _write_file(folder / PASSWORD_FILE, users.passwords[pid].encode(), owner)
            shutil.rmtree(folder / TLS_FOLDER, ignore_errors=True)
            continue
        (folder / PASSWORD_FILE).unlink(missing_ok=True)
        own = folder / TLS_FOLDER
        _ensure_dir(own, owner, 0o700)
        for name, mode in ((CA_CERT, 0o644), (f"{pid}.pem", 0o644), (f"{pid}.key", 0o600)):
            _write_file(own / name, (tls_dir / name).read_bytes(), owner, mode)

    # The dashboard: the public roster and its own broker password, nothing else. With TLS
    # there is no dashboard service (it has no client certificate yet) and no password at all.
    folder = project / DASHBOARD
    if tls_dir is None:
        _ensure_dir(folder, owner, 0o700)
        _write_file(folder / ROSTER_FILE, roster, owner, 0o644)
        _write_file(folder / PASSWORD_FILE, users.passwords[DASHBOARD].encode(), owner)
    else:
        shutil.rmtree(folder, ignore_errors=True)

    broker_dir = project / "broker"
    _ensure_dir(broker_dir, broker_owner, 0o700)
    written = broker_files(run, users, tls_dir, config_dir=broker_config_dir)
    for filename, text in written.items():
        _write_file(broker_dir / filename, text.encode(), broker_owner)
    for stale in _BROKER_FILES - set(written):  # e.g. the passwords of a run without TLS
        (broker_dir / stale).unlink(missing_ok=True)

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
    for root, dirs, files in os.walk(run_folder):
        for entry in [*dirs, *files]:
            _chown(Path(root) / entry, owner)
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


@click.command("setup")
@click.option("--scenario", "scenario_path", required=True, type=click.Path(path_type=Path))
@click.option("--name", required=True, help="The scenario name the compose file was made for.")
@click.option("--secrets", "secrets_root", default=SETUP_SECRETS, type=click.Path(path_type=Path))
@click.option("--runs", "runs_root", default=SETUP_RUNS, type=click.Path(path_type=Path))
@click.option("--broker-data", default=SETUP_BROKER_DATA, type=click.Path(path_type=Path))
@click.option("--ready", "ready_file", default=READY_FILE, type=click.Path(path_type=Path))
@click.option("--once", is_flag=True, help="Exit when done instead of idling (tests, hosts).")
@click.option("--tls", is_flag=True, help="Certificates instead of passwords (TLS only).")
def setup_command(
    scenario_path: Path,
    name: str,
    secrets_root: Path,
    runs_root: Path,
    broker_data: Path,
    ready_file: Path,
    once: bool,
    tls: bool,
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
            tls=tls,
        )
    except Exception as exc:  # whatever it is, Compose must not start on stale files
        if isinstance(exc, ScenarioError | ComposeError | OSError):
            say("setup", "ERROR", str(exc))
        else:
            say("setup", "ERROR", f"unexpected {type(exc).__name__}: {exc}")
            traceback.print_exc()
        if once:
            sys.exit(2)
        _drop_privileges()
        _idle(60.0)
        sys.exit(2)
    colluders = ", ".join(result.colluders) or "none"
    say(
        "setup",
        "INFO",
        f"run {run}: keys and broker credentials for {len(result.participants)} participants "
        + (
            "(TLS certificates, no passwords)"
            if tls
            else f"({'kept' if result.reused_passwords else 'new'} passwords)"
        )
        + f", ACL for run {run} "
        f"(colluders: {colluders}); results in runs/{run}/",
    )
    if Owner.from_env("PRIVGRID", DEFAULT_UID, env).uid == 0:
        say("setup", "WARNING", "PRIVGRID_UID=0: every participant runs as root")
    ready_file.parent.mkdir(parents=True, exist_ok=True)
    ready_file.write_text(f"{run}\n", encoding="utf-8")
    if once:
        return
    _drop_privileges()
    _idle(None)
