"""Docker test harness: the engine and images already there, the project image, docker-compose.

The machine set-up — Debian's docker.io/docker-compose/debootstrap, a running ``dockerd``, and
the offline stand-ins for ``python:3.12-slim`` and ``eclipse-mosquitto:2`` built from Debian
packages (CI reaches no container registry) — is ``scripts/docker_offline.py`` (``make
docker-images``; ``make test`` runs it first, as root). This harness only uses what it left:

* :func:`require_engine` checks that a Docker daemon answers, and :func:`required_images` finds
  the stand-in images (from ``PRIVGRID_BASE_IMAGE``/``PRIVGRID_MOSQUITTO_IMAGE``, else the
  script's ``images.env``); both fail naming the script when something is missing.
* :func:`build_project_image` builds the repository's Dockerfile on the base image: that build
  is part of what the tests check.
* :class:`ComposeProject` wraps whichever compose is installed (Debian bookworm ships the v1
  ``docker-compose`` 1.29) and always tears a project down with ``down -v --remove-orphans``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

REPO_ROOT = Path(__file__).resolve().parents[2]

#: What scripts/docker_offline.py keeps between runs (its variables file, build logs, locks).
CACHE_DIR = Path(os.environ.get("PRIVGRID_TEST_CACHE", "/var/cache/privgrid-tests"))
LOG_DIR = CACHE_DIR / "logs"
IMAGES_ENV_FILE = CACHE_DIR / "images.env"

DOCKER_SOCKET = "unix:///var/run/docker.sock"
#: What to run when the engine or an image is missing.
SETUP_HINT = (
    "run `sudo make docker-images` (scripts/docker_offline.py: installs Debian's docker.io, "
    "docker-compose and debootstrap, starts dockerd and builds the offline base and broker "
    "images) first, or set PRIVGRID_SKIP_DOCKER=1 to skip the docker tests"
)
#: The variables naming the stand-in images (the compose files read the same ones).
BASE_VARIABLE = "PRIVGRID_BASE_IMAGE"
MOSQUITTO_VARIABLE = "PRIVGRID_MOSQUITTO_IMAGE"

PROJECT_IMAGE = "privgrid-local/privgrid:test"
#: eclipse-mosquitto:2 runs exactly this by default (so does the offline stand-in).
MOSQUITTO_COMMAND = ("/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf")
#: eclipse-mosquitto:2's ``mosquitto`` user (and the stand-in's).
MOSQUITTO_UID = 1883
#: Labels everything the harness or the tests create, so leftovers can be found and removed.
HARNESS_LABEL = "org.privgrid.harness"
TEST_LABEL = "org.privgrid.test"


class HarnessError(RuntimeError):
    """The Docker environment is not ready, or a build failed; the message says why and what to
    run or read."""


@dataclass
class Timing:
    """How long one harness step took, and whether a cache made it cheap."""

    step: str
    seconds: float
    note: str = ""


#: Filled by the harness as it works; the conftest prints it at the end of the session.
TIMINGS: list[Timing] = []


@contextlib.contextmanager
def timed(step: str) -> Iterator[Timing]:
    """Record the duration of a step; the caller may set ``.note`` (e.g. "cached")."""
    record = Timing(step, 0.0)
    start = time.monotonic()
    try:
        yield record
    finally:
        record.seconds = time.monotonic() - start
        TIMINGS.append(record)
        _log(f"{step}: {record.seconds:.1f} s{f' ({record.note})' if record.note else ''}")


def _log(message: str) -> None:
    print(f"[docker-harness] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise a step across processes: debootstrap and dockerd must not run twice."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(
    args: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise HarnessError with the tail of its output."""
    try:
        proc = subprocess.run(
            list(args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{' '.join(args)} did not finish within {timeout:.0f} s") from exc
    except FileNotFoundError as exc:
        raise HarnessError(f"{args[0]} is not installed") from exc
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if check and proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
        raise HarnessError(
            f"{' '.join(args)} exited {proc.returncode}"
            + (f" (full log: {log})" if log else "")
            + ":\n"
            + "\n".join(tail)
        )
    return proc


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _which(binary: str) -> str | None:
    """Find a binary also in sbin dirs, which a non-login PATH may lack."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(binary, path=path)


# ---------------------------------------------------------------------------------------------
# The engine and the images scripts/docker_offline.py prepared


@dataclass(frozen=True)
class EngineState:
    """The daemon the tests use."""

    server_version: str
    storage_driver: str


def docker_client(timeout: int = 900) -> docker.DockerClient:
    """A client for ``DOCKER_HOST`` if set, else the local socket the set-up script uses."""
    if os.environ.get("DOCKER_HOST"):
        return docker.from_env(timeout=timeout)
    return docker.DockerClient(base_url=DOCKER_SOCKET, version="auto", timeout=timeout)


def engine_answers() -> bool:
    """True when a daemon answers a ping right now (no retries)."""
    try:
        client = docker_client(timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def require_engine() -> EngineState:
    """The Docker daemon that answers; :class:`HarnessError` naming the set-up script if none."""
    where = os.environ.get("DOCKER_HOST") or DOCKER_SOCKET
    if not engine_answers():
        raise HarnessError(f"no Docker daemon answers at {where}: {SETUP_HINT}")
    client = docker_client(timeout=30)
    try:
        info = client.info()
    finally:
        client.close()
    return EngineState(str(info.get("ServerVersion", "?")), str(info.get("Driver", "?")))


def _read_env_file(path: Path) -> dict[str, str]:
    """``VAR=value`` lines (an optional ``export`` prefix allowed); {} if there is no file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and name and not name.startswith("#"):
            found[name.strip()] = value.strip()
    return found


def required_image(variable: str) -> str:
    """The image named by ``variable`` (environment first, then the script's variables file),
    which must exist in the engine; :class:`HarnessError` naming the set-up script if not."""
    ref = os.environ.get(variable) or _read_env_file(IMAGES_ENV_FILE).get(variable)
    if not ref:
        raise HarnessError(
            f"{variable} is not set and {IMAGES_ENV_FILE} names no image: {SETUP_HINT}"
        )
    client = docker_client(timeout=60)
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise HarnessError(f"{variable}={ref} is not in the Docker engine: {SETUP_HINT}") from None
    finally:
        client.close()
    return ref


# ---------------------------------------------------------------------------------------------
# Project image


_PIP_OPTION = re.compile(r"^(\S*?)\.?(index-url|extra-index-url|trusted-host)='(.*)'$")


def host_pip_index_args() -> dict[str, str]:
    """The host's pip index settings as PIP_* build args, keeping only what a build can reach.

    A ``file://`` index or a ``find-links`` directory exists only on the host and is dropped;
    an http(s) mirror is passed on. Nothing set means PyPI, as in the Dockerfile's default.
    """
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    found: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        match = _PIP_OPTION.match(line.strip())
        if not match:
            continue
        scope, option, value = match.groups()
        rank = 2 if scope.startswith(":env:") else 1  # environment beats config files
        if option not in found or rank >= found[option][0]:
            found[option] = (rank, value)
    args: dict[str, str] = {}
    for option, (_, value) in found.items():
        words = value.split()
        if option != "trusted-host":
            words = [w for w in words if w.startswith(("http://", "https://"))]
        if words:
            args["PIP_" + option.upper().replace("-", "_")] = " ".join(words)
    return args


def build_project_image(base_image: str, tag: str = PROJECT_IMAGE) -> str:
    """Build the repository's Dockerfile on ``base_image``; return ``tag``.

    Uses the classic builder through the API (Debian's engine has no buildx), whose layer cache
    keeps the dependency layer until the dependency list changes. RUN steps use the host's
    network: they only need to reach PyPI, exactly as the host does, and so need neither NAT
    nor a matching MTU on a bridge.
    """
    client = docker_client(timeout=1800)
    log_path = LOG_DIR / "build-project-image.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    buildargs = {"BASE_IMAGE": base_image, **host_pip_index_args()}
    deps_cached = False
    step = ""
    try:
        with _locked("build"), timed("build project image") as record, open(log_path, "w") as log:
            stream = client.api.build(
                path=str(REPO_ROOT),
                tag=tag,
                buildargs=buildargs,
                network_mode="host",
                labels={HARNESS_LABEL: "project"},
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            error = None
            for chunk in stream:
                text = chunk.get("stream", "")
                if text:
                    log.write(text)
                    if text.startswith("Step "):
                        step = text
                        _log(text.strip()[:100])
                    elif "Using cache" in text and "pip install -r" in step:
                        deps_cached = True
                if "error" in chunk:
                    error = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    log.write(f"ERROR: {error}\n")
            if error:
                raise HarnessError(
                    f"docker build failed: {error}\n(full log: {log_path})\n{_tail(log_path, 30)}"
                )
            size = client.images.get(tag).attrs.get("Size", 0) / 1e6
            record.note = (
                f"dependency layer {'cached' if deps_cached else 'built'}, image {size:.0f} MB"
            )
        # The previous build's image, now untagged: drop it and its unshared layers. Only the
        # final stage carries "=project"; the small requirements stage stays cached.
        with contextlib.suppress(docker.errors.APIError):
            client.images.prune(filters={"dangling": True, "label": f"{HARNESS_LABEL}=project"})
        return tag
    finally:
        client.close()


def remove_test_resources() -> None:
    """Remove containers and networks labelled as the tests' own (leftovers of a crash)."""
    client = docker_client(timeout=60)
    try:
        for container in client.containers.list(all=True, filters={"label": TEST_LABEL}):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
        for network in client.networks.list(filters={"label": TEST_LABEL}):
            with contextlib.suppress(docker.errors.APIError):
                network.remove()
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# docker-compose


@functools.cache
def compose_command() -> tuple[str, ...]:
    """The compose CLI installed here: the v2 plugin if present, else Debian's v1 binary.

    Debian bookworm's ``docker-compose`` package is Compose v1 (1.29, Python); the differences
    that matter to callers: container names are ``<project>_<service>_1`` (v1) rather than
    ``<project>-<service>-1``, and v1 has no ``wait``/``--wait``. Use the compose labels
    (:meth:`ComposeProject.containers`) rather than container names.
    """
    docker_cli = _which("docker")
    if docker_cli:
        probe = subprocess.run(
            [docker_cli, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return (docker_cli, "compose")
    v1 = _which("docker-compose")
    if v1:
        return (v1,)
    raise HarnessError("neither `docker compose` nor `docker-compose` is installed")


_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass
class ComposeProject:
    """One compose project: a file, a project name, extra environment; ``down`` on exit.

    ``env`` is added to the environment of every compose call, for ``${VAR}`` interpolation
    in the file (e.g. the image tags the harness built).
    """

    compose_file: Path
    project_name: str
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 600
    _client: docker.DockerClient | None = field(default=None, init=False, repr=False)
    _background: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not _PROJECT_NAME.match(self.project_name):
            raise ValueError(f"compose project name must match {_PROJECT_NAME.pattern}")
        self.compose_file = Path(self.compose_file).resolve()
        # The dashboard's published port: any free one on loopback, never a fixed 8050 that
        # another project (or session) may hold.
        self.env = {"PRIVGRID_DASHBOARD": "127.0.0.1:", **self.env}

    def compose(
        self, *args: str, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one compose subcommand for this project and return its completed process."""
        cmd = [*compose_command(), "-f", str(self.compose_file), "-p", self.project_name, *args]
        env = {**self.env}
        if not os.environ.get("DOCKER_HOST"):
            env["DOCKER_HOST"] = DOCKER_SOCKET
        return _run(cmd, timeout=timeout or self.timeout, env=env, check=check)

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Run one compose subcommand in the background (an attached ``up``), output to ``log``.

        :meth:`down` stops it if it is still running, so a failing test leaves nothing behind.
        """
        cmd = [*compose_command(), "-f", str(self.compose_file), "-p", self.project_name, *args]
        env = {**os.environ, **self.env}
        if not os.environ.get("DOCKER_HOST"):
            env["DOCKER_HOST"] = DOCKER_SOCKET
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as handle:
            process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, env=env
            )
        self._background.append(process)
        return process

    def up(self, *services: str) -> None:
        """Start services (all by default) in the background, never building or pulling."""
        self.compose("up", "-d", "--no-build", *services)

    def logs(self, *services: str) -> str:
        """All output of the services so far, without colours."""
        return self.compose("logs", "--no-color", *services, check=False).stdout

    def containers(self, service: str | None = None) -> list[Any]:
        """The project's containers (docker SDK objects), found by compose's labels."""
        labels = [f"com.docker.compose.project={self.project_name}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        if self._client is None:
            self._client = docker_client(timeout=60)
        # A sparse listing, then one inspect each: compose may remove a container between
        # the two (the SDK's full listing raises NotFound then); a vanished one is skipped.
        found = []
        for sparse in self._client.containers.list(
            all=True, sparse=True, filters={"label": labels}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                found.append(self._client.containers.get(sparse.id))
        return found

    def wait(self, service: str, timeout: float = 120) -> int:
        """Wait for a service's container to exit and return its exit code (v1 has no wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.containers(service)
            if found and all(c.status == "exited" for c in found):
                return max(int(c.attrs["State"]["ExitCode"]) for c in found)
            time.sleep(0.5)
        raise HarnessError(f"service {service} still running after {timeout:.0f} s")

    def down(self) -> None:
        """Remove containers, networks, volumes and orphans; harmless when nothing is up."""
        for process in self._background:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # compose: "Gracefully stopping..."
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._background.clear()
        self.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False)
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> ComposeProject:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.down()


def unique_name(prefix: str) -> str:
    """A name for containers/networks/projects that two sessions will not both pick."""
    return f"{prefix}-{os.getpid()}-{int(time.time() * 1000) % 10**8}"


__all__ = [
    "BASE_VARIABLE",
    "HARNESS_LABEL",
    "IMAGES_ENV_FILE",
    "MOSQUITTO_COMMAND",
    "MOSQUITTO_UID",
    "MOSQUITTO_VARIABLE",
    "PROJECT_IMAGE",
    "SETUP_HINT",
    "TEST_LABEL",
    "TIMINGS",
    "ComposeProject",
    "EngineState",
    "HarnessError",
    "Timing",
    "build_project_image",
    "compose_command",
    "docker_client",
    "engine_answers",
    "host_pip_index_args",
    "remove_test_resources",
    "require_engine",
    "required_image",
    "unique_name",
]
