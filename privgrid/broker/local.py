"""Start a broker for a local run: Mosquitto on a free loopback port, else the embedded one.

With ``tls`` (a folder made by ``privgrid keys init --tls``) Mosquitto listens on TLS only and
takes each account from its client certificate; the embedded broker has no TLS, so asking for
it is an error naming Mosquitto (docs/deploy.md says why).
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from privgrid.broker.config import BrokerTls, BrokerUsers, write_mosquitto_files
from privgrid.broker.embedded import write_embedded_files
from privgrid.crypto.tls import BROKER, CA_CERT

TLS_NEEDS_MOSQUITTO = (
    "TLS needs Mosquitto (apt-get install mosquitto): the embedded broker has no TLS listener"
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the broker exited with status {process.returncode} at start")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s")


@dataclass
class LocalBroker:
    kind: str  # "mosquitto" or "embedded"
    host: str
    port: int
    process: subprocess.Popen
    log_path: Path
    tls: bool = False

    def url(self, user: str, password: str | None = None) -> str:
        """``user``'s broker URL; over TLS the certificate is the login (no user, no password)."""
        if self.tls:
            return f"mqtts://{self.host}:{self.port}"
        return f"mqtt://{user}:{password}@{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def mosquitto_binary() -> str | None:
    """Mosquitto if it is on PATH (Debian puts it in /usr/sbin, on root's PATH)."""
    return shutil.which("mosquitto")


def start_broker(
    folder: Path,
    run: str,
    users: BrokerUsers,
    *,
    prefer: str = "auto",
    port: int | None = None,
    timeout: float = 15.0,
    tls: Path | None = None,
) -> LocalBroker:
    """Start Mosquitto (if installed and ``prefer`` allows) or the embedded broker.

    ``tls``: the folder with ``ca.pem``, ``broker.pem`` and ``broker.key``; Mosquitto then
    listens on TLS only. Raises ``RuntimeError`` if that needs a broker we cannot start.
    """
    host = "127.0.0.1"
    binary = mosquitto_binary() if prefer in ("auto", "mosquitto") else None
    if prefer == "mosquitto" and binary is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    if tls is not None and binary is None:
        raise RuntimeError(TLS_NEEDS_MOSQUITTO)
    port = port or free_port(host)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "broker.log"
    log = log_path.open("ab")
    if binary is not None:
        files = None
        if tls is not None:
            where = tls.resolve()
            files = BrokerTls(
                str(where / CA_CERT), str(where / f"{BROKER}.pem"), str(where / f"{BROKER}.key")
            )
        conf = write_mosquitto_files(
            folder, run, users, port=port, bind=host, user=getpass.getuser(), tls=files
        )
        cmd = [binary, "-c", str(conf)]
        kind = "mosquitto"
    else:
        conf = write_embedded_files(folder, run, users, port=port)
        cmd = [sys.executable, "-m", "privgrid.broker.embedded", "--config", str(conf)]
        kind = "embedded"
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    broker = LocalBroker(kind, host, port, process, log_path, tls is not None)
    try:
        wait_for_port(host, port, timeout, process)
    except (RuntimeError, TimeoutError) as exc:
        broker.stop()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{kind} broker did not start: {exc}\n{tail}") from None
    return broker
