"""``privgrid broker config``: a Mosquitto configuration for a broker started by hand.

``privgrid run`` and ``privgrid compose`` write their broker's files themselves; a deployment
over several hosts (docs/deploy.md) needs the same files on the broker host: ``mosquitto.conf``,
the run's ``acl``, and either the TLS files (``ca.pem``, ``broker.pem``, ``broker.key``, copied
from ``privgrid keys init --tls``) or a password file with one random password per participant
(``broker.json`` keeps them, to hand out). Then ``mosquitto -c DIR/mosquitto.conf``.
"""

from __future__ import annotations

import getpass
import shutil
import sys
from pathlib import Path

import click

from privgrid.broker.config import (
    OBSERVERS,
    TLS_PORT,
    BrokerTls,
    BrokerUsers,
    write_mosquitto_files,
)
from privgrid.crypto.tls import (
    BROKER,
    CA_CERT,
    TLS_DIR,
    TlsError,
    certificate_problem,
    check_ca,
    load_cert,
    load_key,
    write_private,
)

PLAIN_PORT = 1883


def _fail(message: str) -> None:
    click.echo(f"privgrid: error: {message}", err=True)
    sys.exit(2)


def copy_broker_tls(source: Path, folder: Path) -> None:
    """Copy the CA and the broker's certificate and key from a TLS set, checked first.

    Raises:
        TlsError: a file is missing, or the broker certificate is not the CA's or not valid.
    """
    ca = check_ca(source / CA_CERT)
    cert = load_cert(source / f"{BROKER}.pem")
    load_key(source / f"{BROKER}.key")
    problem = certificate_problem(cert, ca)
    if problem is not None:
        raise TlsError(f"{source / f'{BROKER}.pem'}: {problem}")
    for name in (CA_CERT, f"{BROKER}.pem"):
        shutil.copyfile(source / name, folder / name)
    write_private(folder / f"{BROKER}.key", (source / f"{BROKER}.key").read_bytes())


@click.group("broker")
def broker_group() -> None:
    """The broker's files for a deployment by hand (docs/deploy.md)."""


@broker_group.command("config")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("broker"),
    show_default=True,
    help="Folder for mosquitto.conf, acl, the TLS files or passwd, and data/.",
)
@click.option(
    "--run", "run_id", help="The run id every participant uses [default: the scenario name]."
)
@click.option(
    "--tls",
    is_flag=True,
    help="A TLS-only listener with client certificates as logins; copies ca.pem, broker.pem "
    "and broker.key from KEYS/tls (privgrid keys init --tls).",
)
@click.option(
    "--keys",
    "keys_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("secrets"),
    show_default=True,
    help="The folder privgrid keys init wrote (with --tls: its tls/ subfolder is used).",
)
@click.option("--port", type=click.IntRange(1, 65535), help="[default: 8883 with --tls, else 1883]")
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--config-dir",
    help="Where OUT will be on the broker host, if it is not this folder (the paths in "
    "mosquitto.conf are absolute) [default: OUT's absolute path].",
)
@click.option(
    "--user",
    default=None,
    help="The account Mosquitto runs as when started as root [default: whoever runs this].",
)
def config_command(
    scenario: Path,
    out: Path,
    run_id: str | None,
    tls: bool,
    keys_dir: Path,
    port: int | None,
    bind: str,
    config_dir: str | None,
    user: str | None,
) -> None:
    """Write OUT/mosquitto.conf and the run's ACL for a Mosquitto you start yourself.

    Accounts: every participant of SCENARIO and the read-only monitor. Without --tls, a
    password per account goes into OUT/passwd (hashed) and OUT/broker.json (to hand out: each
    participant's URL is mqtt://ID:PASSWORD@HOST:PORT); existing passwords are kept.
    """
    from privgrid.keys import participants
    from privgrid.process import RUN_ID_PATTERN, _valid_run_id
    from privgrid.scenario import ScenarioError, load_scenario

    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        _fail(str(exc))
        return
    run = run_id or loaded.name
    if not _valid_run_id(run):
        _fail(f"run id {run!r} must match {RUN_ID_PATTERN}")
    ids = participants(loaded)
    attack = loaded.attack
    colluders, coalition = (attack.colluders, attack.coalition) if attack else ([], "coalition")
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    users_file = out / "broker.json"
    users = BrokerUsers.load(users_file) if users_file.exists() and not tls else None
    if users is None or set(users.passwords) != {*ids, *OBSERVERS}:
        users = BrokerUsers.generate(ids, colluders, coalition)
    users = BrokerUsers(users.passwords, tuple(colluders), coalition)
    where = Path(config_dir) if config_dir else out.resolve()
    files = None
    if tls:
        try:
            copy_broker_tls(keys_dir / TLS_DIR, out)
        except TlsError as exc:
            _fail(f"{exc} (make the TLS files with privgrid keys init {scenario} --tls)")
        files = BrokerTls(
            str(where / CA_CERT), str(where / f"{BROKER}.pem"), str(where / f"{BROKER}.key")
        )
    else:
        users.save(users_file)
    port = port or (TLS_PORT if tls else PLAIN_PORT)
    conf = write_mosquitto_files(
        out,
        run,
        users,
        port=port,
        bind=bind,
        config_dir=str(where),
        data_dir=str(where / "data"),
        user=user or getpass.getuser(),
        tls=files,
    )
    login = (
        f"clients log in with their certificates (mqtts://HOST:{port})"
        if tls
        else f"passwords in {users_file} (mqtt://ID:PASSWORD@HOST:{port})"
    )
    click.echo(
        f"wrote {conf} and the ACL for run {run} ({len(ids)} participants + monitor); {login}; "
        f"start it with: mosquitto -c {where / 'mosquitto.conf'}; open TCP port {port} to the "
        "participants' hosts"
    )
