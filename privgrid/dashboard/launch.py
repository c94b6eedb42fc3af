"""Starting the dashboard beside a run: its address, the checks before the run, its process.

``privgrid run --dashboard [HOST:]PORT`` checks the address before anything starts (a port in
use is invalid input, exit 2), then, once the broker is up, starts ``python -m
privgrid.dashboard`` as a child process of its own — with the run folder, the public roster
and the dashboard account's broker URL (in its environment, like every participant's: never
on a command line) — waits until it listens, and only then starts the participants. At the
end it stops it with SIGTERM, after the results are written: the dashboard reads them one
last time and sends them to the open pages before it exits.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from privgrid.dashboard.server import Listen, in_use
from privgrid.dashboard.watch import DashboardError
from privgrid.wire.session import ENV_URL, BrokerUrl, BrokerUrlError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
#: Seconds the dashboard gets to start listening (it draws the grid first).
START_TIMEOUT = 120.0
#: Seconds it gets to send the final state to its pages and exit.
STOP_TIMEOUT = 10.0


def parse_listen(text: str, flag: str) -> Listen:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` (host default: loopback only).

    Raises:
        DashboardError: naming the flag and what is wrong.
    """
    host, port_text = DEFAULT_HOST, text.strip()
    if port_text.startswith("["):
        inside, _, rest = port_text[1:].partition("]")
        host, port_text = inside, rest.removeprefix(":")
    elif ":" in port_text:
        host, _, port_text = port_text.rpartition(":")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise DashboardError(f"{flag} {text!r}: the port must be a number from 1 to 65535")
    if not host:
        raise DashboardError(f"{flag} {text!r}: the host is empty")
    return Listen(host, int(port_text))


def check_free(listen: Listen, flag: str) -> None:
    """Raise :class:`DashboardError` if nothing could listen on ``listen`` now (as aiohttp
    would bind it: address reuse on, so a closed connection's TIME_WAIT does not count)."""
    try:
        v6 = ipaddress.ip_address(listen.host).version == 6
        family = socket.AF_INET6 if v6 else socket.AF_INET
    except ValueError:  # a host name: resolve it as the server will
        family = socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((listen.host, listen.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise in_use(listen, flag) from None
            raise DashboardError(
                f"{flag}: cannot listen on {listen.host}:{listen.port}: {exc}"
            ) from None


@dataclass(frozen=True)
class DashboardPlan:
    """What ``privgrid run --dashboard`` will start, checked before the run starts."""

    listen: Listen
    #: With ``--broker``: the dashboard's own account there (``--dashboard-broker``).
    broker_url: str | None = None

    @classmethod
    def check(cls, spec: str, broker: str | None, dashboard_broker: str | None) -> DashboardPlan:
        """Parse and check ``--dashboard`` (and, with ``--broker``, ``--dashboard-broker``).

        Raises:
            DashboardError: the port is in use, or there is no dashboard account.
        """
        listen = parse_listen(spec, "--dashboard")
        check_free(listen, "--dashboard")
        if broker is not None and dashboard_broker is None:
            raise DashboardError(
                "--dashboard with --broker: privgrid run has no account of the dashboard's on "
                "that broker; give it one with --dashboard-broker "
                "mqtt://USER:PASSWORD@HOST:PORT (a read-only account like monitor's, not a "
                "participant's, docs/dashboard.md)"
            )
        if dashboard_broker is not None:
            try:
                url = BrokerUrl.parse(dashboard_broker)
            except BrokerUrlError as exc:
                raise DashboardError(f"--dashboard-broker: {exc}") from None
            if not url.username or not url.password:
                raise DashboardError(
                    f"--dashboard-broker {url}: names no account and password of the "
                    "dashboard's (mqtt://USER:PASSWORD@HOST:PORT)"
                )
        return cls(listen, dashboard_broker)


@dataclass
class DashboardProcess:
    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (it sends the final state to its pages), SIGKILL if it does not exit."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_dashboard(
    folder: Path,
    run: str,
    listen: Listen,
    broker_url: str,
    roster: Path | None,
    log_path: Path,
    timeout: float = START_TIMEOUT,
) -> DashboardProcess:
    """Start ``python -m privgrid.dashboard`` for a run; return once it listens.

    Raises:
        DashboardError: it exited first (its last log line says why) or did not listen in time.
    """
    command = [
        sys.executable,
        "-m",
        "privgrid.dashboard",
        str(folder),
        "--run",
        run,
        "--listen",
        f"[{listen.host}]:{listen.port}" if ":" in listen.host else f"{listen.host}:{listen.port}",
        "--flag",
        "--dashboard",
        "--parent",
        str(os.getpid()),
    ]
    if roster is not None:
        command += ["--roster", str(roster)]
    env = {**os.environ, ENV_URL: broker_url}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    first: list[bytes] = []
    stdout = process.stdout
    assert stdout is not None  # stdout=subprocess.PIPE
    reader = threading.Thread(target=lambda: first.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = first[0].decode(errors="replace").strip() if first else ""
    if not line.startswith("dashboard: "):
        dashboard = DashboardProcess(process, "", log_path)
        dashboard.stop(timeout=5)
        raise DashboardError(_last_error(log_path) or "the dashboard did not start in time")
    return DashboardProcess(process, line.removeprefix("dashboard: "), log_path)


def _last_error(log_path: Path) -> str | None:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("privgrid: error: "):
            return line.removeprefix("privgrid: error: ")
        if " ERROR " in line:
            return line.split(" ERROR ", 1)[1].strip()
    return lines[-1] if lines else None
