"""What the compose file and the programs in its containers must agree on.

The compose file (:mod:`.document`) is written on the host; ``setup`` (:mod:`.setup`) and
``exec`` (:mod:`.supervisor`) run inside the containers it describes. Every path, file name,
environment variable, port and default that crosses that line is named once, here, so the
two sides cannot drift apart. Also here: :class:`ComposeError` and the one log-line format
of the container commands.
"""

from __future__ import annotations

import sys
import time

#: The Dockerfile's ``privgrid`` user, and eclipse-mosquitto's ``mosquitto`` user.
DEFAULT_UID = 10001
BROKER_UID = 1883
BROKER_PORT = 1883
#: The broker's port with ``--tls`` (TLS only, client certificates as logins).
BROKER_TLS_PORT = 8883
DEFAULT_LINGER = 300.0
DEFAULT_STOP_GRACE = 20.0

#: Paths inside the containers.
SETUP_SECRETS = "/privgrid/secrets"
SETUP_RUNS = "/privgrid/runs"
SETUP_BROKER_DATA = "/privgrid/broker-data"
READY_FILE = "/run/privgrid-setup/ready"
MOSQUITTO_CONFIG = "/mosquitto/config"
MOSQUITTO_DATA = "/mosquitto/data"

#: Files of one participant's secrets folder.
PASSWORD_FILE = "broker.password"
ROSTER_FILE = "roster.json"
#: With ``--tls``: the folder of a participant's secrets with ca.pem, <id>.pem and <id>.key.
TLS_FOLDER = "tls"
#: The names in the broker's certificate: its service name, and the loopback its
#: healthcheck uses.
BROKER_TLS_NAMES = ("broker", "localhost", "127.0.0.1")

ENV_URL = "PRIVGRID_BROKER_URL"
ENV_PASSWORD_FILE = "PRIVGRID_BROKER_PASSWORD_FILE"
ENV_LINGER = "PRIVGRID_LINGER"
ENV_STOP_GRACE = "PRIVGRID_STOP_GRACE"
ENV_RUN = "PRIVGRID_RUN"
ENV_TLS_DIR = "PRIVGRID_TLS_DIR"


class ComposeError(ValueError):
    """The scenario cannot be turned into a compose file, or a container cannot start its
    part (the message says why)."""


def say(who: str, level: str, message: str) -> None:
    """One line in the format of the role logs (docs/wire.md, "Logs")."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    millis = int(time.time() * 1000) % 1000
    print(f"{stamp}.{millis:03d}Z {who} r=- {level:<5} {message}", file=sys.stderr, flush=True)
