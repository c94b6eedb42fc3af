"""Start a broker for a local run: Mosquitto on a free loopback port, else the embedded one."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from privgrid.broker.config import BrokerUsers, write_mosquitto_files
from privgrid.broker.embedded import write_embedded_files


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

    def url(self, user: str, password: str) -> str:
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
) -> LocalBroker:
    """Start Mosquitto (if installed and ``prefer`` allows) or the embedded broker."""
    host = "127.0.0.1"
    port = port or free_port(host)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "broker.log"
    log = log_path.open("ab")
    binary = mosquitto_binary() if prefer in ("auto", "mosquitto") else None
    if prefer == "mosquitto" and binary is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    if binary is not None:
        conf = write_mosquitto_files(
            folder, run, users, port=port, bind=host, user=getpass.getuser()
        )
        cmd = [binary, "-c", str(conf)]
        kind = "mosquitto"
    else:
        conf = write_embedded_files(folder, run, users, port=port)
        cmd = [sys.executable, "-m", "privgrid.broker.embedded", "--config", str(conf)]
        kind = "embedded"
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    broker = LocalBroker(kind, host, port, process, log_path)
    try:
        wait_for_port(host, port, timeout, process)
    except (RuntimeError, TimeoutError) as exc:
        broker.stop()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{kind} broker did not start: {exc}\n{tail}") from None
    return broker
