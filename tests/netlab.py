"""Several "hosts" on one machine: Linux network namespaces joined by a virtual switch.

A test that must prove something about the network between hosts — what is reachable, what
crosses the wire — gets here separate network stacks without separate machines:

- one namespace per host (its own interfaces, addresses, routes and firewall), and a ``lan``
  namespace holding a bridge that every host's veth cable plugs into, so the hosts' traffic
  crosses one link where :meth:`Lab.capture` records it;
- addresses from a private /24 that exists only inside these namespaces (nothing is added to
  the machine's own network namespace, and nothing outside the lab is ever addressed);
- :meth:`Lab.popen` runs a command "on" a host (``ip netns exec``), as a new session so that
  :meth:`Lab.destroy` can end it; destroying the lab removes every namespace, and with them
  every cable, even after a failed test.

Needs root and iproute2 (Debian's ``iproute2``); the firewall needs ``iptables`` and the
capture ``tcpdump`` (scripts/setup.sh --system-packages installs both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.203.7"  # a /24 that exists only inside the lab's namespaces
LAN = "lan"


class LabError(RuntimeError):
    """The lab cannot be built here (not root, a tool missing); the message says what."""


def _ip() -> str:
    found = shutil.which("ip", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise LabError("iproute2's `ip` is missing (apt-get install iproute2)")
    return found


def require(tool: str, package: str) -> str:
    found = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise LabError(
            f"`{tool}` is missing (apt-get install {package}, or "
            "scripts/setup.sh --system-packages)"
        )
    return found


@dataclass
class Lab:
    """Hosts on one switch. ``hosts`` maps a host name to the last byte of its address."""

    prefix: str
    hosts: Mapping[str, int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self.hosts[host]}"

    def _run(self, *args: str) -> None:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise LabError(f"{' '.join(args)} failed: {proc.stderr.strip()}")

    def ip(self, host: str, *args: str) -> None:
        self._run(_ip(), "-n", self.namespace(host), *args)

    def build(self) -> None:
        """The namespaces, the switch, one cable and one address per host."""
        if os.geteuid() != 0:
            raise LabError("network namespaces need root")
        ip = _ip()
        for host in [LAN, *self.hosts]:
            self._run(ip, "netns", "add", self.namespace(host))
            self.created.append(self.namespace(host))
            self.ip(host, "link", "set", "lo", "up")
        self.ip(LAN, "link", "add", "br0", "type", "bridge")
        self.ip(LAN, "link", "set", "br0", "up")
        for host in self.hosts:
            port = f"v-{host}"[:15]
            self.ip(
                LAN,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                self.namespace(host),
            )
            self.ip(LAN, "link", "set", port, "master", "br0", "up")
            self.ip(host, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            self.ip(host, "link", "set", "eth0", "up")

    def only_tcp_port(self, host: str, port: int) -> None:
        """Firewall ``host``: drop every incoming packet but loopback and TCP to ``port``."""
        iptables = require("iptables", "iptables")
        for rule in (
            ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
            ["-A", "INPUT", "-p", "tcp", "--dport", str(port), "-j", "ACCEPT"],
            ["-P", "INPUT", "DROP"],
        ):
            self._run(_ip(), "netns", "exec", self.namespace(host), iptables, *rule)

    def popen(
        self,
        host: str,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdout: object = subprocess.DEVNULL,
        stderr: object = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` on ``host`` (``ip netns exec`` execs it: the pid is the command's)."""
        process = subprocess.Popen(
            [_ip(), "netns", "exec", self.namespace(host), *args],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=stdout,  # type: ignore[arg-type]
            stderr=stderr,  # type: ignore[arg-type]
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def run(
        self, host: str, args: Sequence[str], *, timeout: float = 60, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_ip(), "netns", "exec", self.namespace(host), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )

    def capture(self, path: Path, timeout: float = 20) -> subprocess.Popen[bytes]:
        """Record every frame on the switch to a pcap file; returns once tcpdump listens."""
        tcpdump = require("tcpdump", "tcpdump")
        log = path.with_suffix(".log")
        with log.open("wb") as handle:
            process = self.popen(
                LAN,
                [tcpdump, "-i", "br0", "-n", "-s", "0", "-U", "-Z", "root", "-w", str(path)],
                stderr=handle,
            )
        deadline = time.monotonic() + timeout
        while b"listening on br0" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"tcpdump did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        return process

    @staticmethod
    def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 10) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def destroy(self) -> None:
        """End every process started here, then delete the namespaces (and their cables)."""
        for process in self.processes:
            self.stop(process, wait=5)
        for name in reversed(self.created):
            subprocess.run([_ip(), "netns", "del", name], capture_output=True, check=False)
        self.created.clear()
