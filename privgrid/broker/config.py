"""Broker credentials, password file, ACL and configuration for one run (pure text builders).

The same rules serve the local launcher and the compose files:
- every participant has its own user and random password; anonymous access is off;
- a participant publishes only with its own id in the sender slot
  (``to/+/<id>/+``, ``bcast/<id>/+``, ``keys/<id>``) and reads only its own inbox, the
  broadcasts and the key announcements;
- colluders (an attack scenario) alone read and write the coalition topic;
- ``monitor`` may read everything of the run and write nothing: it sees what the broker sees
  (signed envelopes, sealed bodies, ciphertexts) and is used by tests and benchmarks;
- ``dashboard`` has the same read-only rights, for the live dashboard (docs/dashboard.md): an
  account of its own, because a broker binds one client id to each account
  (:mod:`privgrid.broker.binding`), so a second client of ``monitor`` would cut the first off.

Mosquitto's password format ``$7$`` is PBKDF2-SHA512 with 101 iterations, a 12-byte salt and
a 64-byte hash (what ``mosquitto_passwd`` writes); the embedded broker gets argon2 hashes.

With TLS (:class:`BrokerTls`) there is no password file: the one listener speaks TLS only,
requires a client certificate signed by the run CA and takes the account from its Common Name
(``use_identity_as_username``), so the same ACL applies and no password crosses the wire.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from privgrid.wire import topics

MONITOR = "monitor"
DASHBOARD = "dashboard"
#: Read-only accounts: they may read everything of the run and write nothing.
OBSERVERS = (MONITOR, DASHBOARD)
PBKDF2_ITERATIONS = 101
#: The IANA port of MQTT over TLS, the default of ``mqtts://`` URLs and of TLS listeners.
TLS_PORT = 8883


@dataclass(frozen=True)
class BrokerTls:
    """The broker's TLS files, as paths the broker itself sees (a host or container path)."""

    cafile: str
    certfile: str
    keyfile: str


@dataclass(frozen=True)
class BrokerUsers:
    """Who may connect: participants (with their passwords), colluders, the observers."""

    passwords: Mapping[str, str]  # user → password (participants and the observers)
    colluders: Sequence[str] = ()
    coalition: str = "coalition"

    @classmethod
    def generate(
        cls,
        participants: Sequence[str],
        colluders: Sequence[str] = (),
        coalition: str = "coalition",
    ) -> BrokerUsers:
        users = [*participants, *OBSERVERS]
        return cls({u: secrets.token_urlsafe(18) for u in users}, tuple(colluders), coalition)

    def save(self, path: Path) -> None:
        """Credentials file (mode 0600): the launcher builds each process's broker URL from it."""
        data = {
            "passwords": dict(self.passwords),
            "colluders": list(self.colluders),
            "coalition": self.coalition,
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)

    @classmethod
    def load(cls, path: Path) -> BrokerUsers:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            data["passwords"], tuple(data.get("colluders", ())), data.get("coalition", "coalition")
        )


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    encode = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${encode(salt).decode()}${encode(digest).decode()}"


def password_file(users: BrokerUsers) -> str:
    return "".join(f"{u}:{mosquitto_hash(p)}\n" for u, p in sorted(users.passwords.items()))


def acl_rules(run: str, users: BrokerUsers) -> dict[str, dict[str, list[str]]]:
    """Per user: the topic filters it may ``read`` and ``write`` (one source for both brokers)."""
    p = f"{topics.PREFIX}/{run}"
    rules: dict[str, dict[str, list[str]]] = {}
    for user in users.passwords:
        if user in OBSERVERS:
            rules[user] = {"read": [f"{p}/#"], "write": []}
            continue
        rules[user] = {
            "read": [f"{p}/to/{user}/#", f"{p}/bcast/#", f"{p}/keys/#"],
            "write": [f"{p}/to/+/{user}/+", f"{p}/bcast/{user}/+", f"{p}/keys/{user}"],
        }
        if user in users.colluders:
            coalition = topics.collusion(run, users.coalition)
            rules[user]["read"].append(coalition)
            rules[user]["write"].append(coalition)
    return rules


def mosquitto_acl(run: str, users: BrokerUsers) -> str:
    lines = [f"# privgrid ACL for run {run}: generated, do not edit", ""]
    for user, rule in sorted(acl_rules(run, users).items()):
        lines.append(f"user {user}")
        lines += [f"topic read {t}" for t in rule["read"]]
        lines += [f"topic write {t}" for t in rule["write"]]
        lines.append("")
    return "\n".join(lines)


def mosquitto_conf(
    *,
    port: int,
    bind: str,
    config_dir: str,
    data_dir: str,
    log_dest: str = "stderr",
    user: str | None = None,
    tls: BrokerTls | None = None,
) -> str:
    """Fill ``privgrid/broker/mosquitto.conf.template`` (paths as the broker will see them).

    ``user``: the account Mosquitto runs as when started as root (it otherwise switches to
    ``mosquitto``, which cannot read files private to the user who made them). ``tls``: make
    the one listener TLS-only with client certificates as the login (no password file).
    """
    template_file = resources.files("privgrid.broker").joinpath("mosquitto.conf.template")
    template = template_file.read_text("utf-8")
    return template.format(
        port=port,
        bind=bind,
        config_dir=config_dir.rstrip("/"),
        data_dir=data_dir.rstrip("/"),
        log_dest=log_dest,
        user_line=f"user {user}" if user else "# user: the image's default (mosquitto)",
        password_line=(
            f"password_file {config_dir.rstrip('/')}/passwd"
            if tls is None
            else "# No password file: the TLS listener takes the account from the client "
            "certificate."
        ),
        tls_block="" if tls is None else tls_listener(tls),
    )


def tls_listener(tls: BrokerTls) -> str:
    """The TLS settings of the listener: a certificate signed by the run CA is required and
    its Common Name is the account; TLS 1.2 at least. Mosquitto applies
    ``use_username_as_clientid`` to that account too (tests/test_tls_broker.py)."""
    return (
        "# TLS only: a client must present a certificate signed by the run CA, and its Common\n"
        "# Name is its account (no password crosses the wire). There is no plain listener.\n"
        f"cafile {tls.cafile}\n"
        f"certfile {tls.certfile}\n"
        f"keyfile {tls.keyfile}\n"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        "tls_version tlsv1.2\n"
    )


def write_mosquitto_files(
    folder: Path,
    run: str,
    users: BrokerUsers,
    *,
    port: int,
    bind: str,
    config_dir: str | None = None,
    data_dir: str | None = None,
    log_dest: str = "stderr",
    user: str | None = None,
    tls: BrokerTls | None = None,
) -> Path:
    """Write ``mosquitto.conf``, ``acl`` and (without ``tls``) ``passwd`` into ``folder``;
    return the conf path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    conf = folder / "mosquitto.conf"
    if tls is None:
        passwd = folder / "passwd"
        fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(password_file(users))
    (folder / "acl").write_text(mosquitto_acl(run, users), encoding="utf-8")
    conf.write_text(
        mosquitto_conf(
            port=port,
            bind=bind,
            config_dir=config_dir or str(folder.resolve()),
            data_dir=data_dir or str((folder / "data").resolve()),
            log_dest=log_dest,
            user=user,
            tls=tls,
        ),
        encoding="utf-8",
    )
    return conf
