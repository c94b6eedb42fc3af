"""The embedded broker: amqtt in its own process, for machines without Mosquitto.

Same users and the same ACL rules as the Mosquitto configuration
(:func:`privgrid.broker.config.acl_rules`): password file with argon2 hashes, publish and
subscribe ACLs per user, and client ids bound to accounts (:mod:`privgrid.broker.binding`,
enforced by :mod:`privgrid.broker.amqtt_binding`). Mosquitto remains the reference broker
(persistence across restarts, performance); this one keeps a fresh machine able to run a whole
grid with nothing but Python.

    python -m privgrid.broker.embedded --config FOLDER/embedded.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import warnings
from pathlib import Path
from typing import Any

from privgrid.broker.binding import bound_client_ids
from privgrid.broker.config import BrokerUsers, acl_rules


def write_embedded_files(folder: Path, run: str, users: BrokerUsers, *, port: int) -> Path:
    """Password file (argon2) and a JSON config for :func:`serve`; returns the config path."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    folder.mkdir(parents=True, exist_ok=True)
    hasher = PasswordHash((Argon2Hasher(),))
    passwd = folder / "passwd.argon2"
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for user, password in sorted(users.passwords.items()):
            handle.write(f"{user}:{hasher.hash(password)}\n")
    rules = acl_rules(run, users)
    config = {
        "port": port,
        "password_file": str(passwd.resolve()),
        "publish_acl": {u: r["write"] for u, r in rules.items()},
        "subscribe_acl": {u: r["read"] for u, r in rules.items()},
        "client_ids": bound_client_ids(run, users),
    }
    path = folder / "embedded.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def amqtt_config(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": {
            "default": {
                "type": "tcp",
                "bind": f"127.0.0.1:{config['port']}",
                "max_connections": 10_000,
            },
        },
        "plugins": {
            "amqtt.plugins.authentication.FileAuthPlugin": {
                "password_file": config["password_file"],
            },
            "privgrid.broker.amqtt_binding.ClientIdBinding": {"client_ids": config["client_ids"]},
            "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {
                "publish_acl": config["publish_acl"],
                "acl": config["subscribe_acl"],
            },
        },
    }


async def serve(config: dict[str, Any]) -> None:
    from privgrid.broker.amqtt_binding import BindingBroker  # amqtt only in the broker process

    broker = BindingBroker(amqtt_config(config))
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description="privgrid's embedded MQTT broker (amqtt)")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s broker %(levelname)s %(message)s"
    )
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    asyncio.run(serve(json.loads(args.config.read_text(encoding="utf-8"))))


if __name__ == "__main__":
    main()
