"""Docker test harness: engine, local base image, project image and docker-compose.

The CI machines reach package registries (PyPI, Debian) but no container registry, and have no
Docker engine running. So, unlike a developer's laptop, everything an image test needs is made
here from Debian packages:

* :func:`ensure_engine` installs Debian's ``docker.io``/``docker-compose``/``debootstrap`` when
  missing and starts ``dockerd`` when no daemon answers, recording that it did so, so that
  :func:`stop_engine` stops only a daemon the harness started.
* :func:`ensure_base_image` debootstraps a minimal Debian bookworm with python3, venv and
  mosquitto, caches the tarball under ``/var/cache/privgrid-tests`` and imports it.
  The image stands in both for ``python:3.12-slim`` (as the Dockerfile's ``BASE_IMAGE``) and for
  ``eclipse-mosquitto:2`` (same binary path, same config path, same default command).
* :func:`ensure_mosquitto_image` derives from it the stand-in for ``eclipse-mosquitto:2`` that
  compose files use: the same, with the ``mosquitto`` user at the official image's uid 1883.
* :func:`build_project_image` builds the repository's Dockerfile on that base.
* :class:`ComposeProject` wraps whichever compose is installed (Debian bookworm ships the v1
  ``docker-compose`` 1.29) and always tears a project down with ``down -v --remove-orphans``.

Every function is idempotent (safe to call twice) and the steps that change the machine run
under a file lock, so two sessions (or xdist workers) on one machine do not install, start a
daemon, debootstrap or build at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
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

#: Kept between runs on one machine: rootfs tarball, debootstrap's .deb cache, logs, lock.
CACHE_DIR = Path(os.environ.get("PRIVGRID_TEST_CACHE", "/var/cache/privgrid-tests"))
#: Forgotten at reboot, like the daemon it describes.
STATE_DIR = Path(os.environ.get("PRIVGRID_TEST_STATE", "/run/privgrid-tests"))
ENGINE_STATE_FILE = STATE_DIR / "dockerd.json"
LOG_DIR = CACHE_DIR / "logs"

DOCKER_SOCKET = "unix:///var/run/docker.sock"
DOCKER_DATA_ROOT = "/var/lib/docker"

#: Debian packages the harness itself needs on the host, by the binary that proves each.
HOST_PACKAGES: Mapping[str, str] = {
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("PRIVGRID_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: What the base image must hold: python3 + venv for the Dockerfile, mosquitto (+ clients) to
#: stand in for eclipse-mosquitto:2, ca-certificates for the standard /etc/ssl layout.
BASE_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-venv",
    "ca-certificates",
    "mosquitto",
    "mosquitto-clients",
)
#: Bump when the rootfs post-processing below changes, to invalidate cached tarballs.
ROOTFS_RECIPE = 1
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

BASE_IMAGE_REPO = "privgrid-local/bookworm-base"
PROJECT_IMAGE = "privgrid-local/privgrid:test"
MOSQUITTO_IMAGE_REPO = "privgrid-local/mosquitto"
#: eclipse-mosquitto:2 creates its ``mosquitto`` user with this uid/gid (Debian's gets ~100).
MOSQUITTO_UID = 1883
#: Labels everything the harness or the tests create, so leftovers can be found and removed.
HARNESS_LABEL = "org.privgrid.harness"
TEST_LABEL = "org.privgrid.test"

#: The same environment python:3.12-slim gives (PATH, LANG), plus the host's CA bundle for
#: pip, since ``docker import`` produces an image with no configuration at all.
_IMPORT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
}
#: eclipse-mosquitto:2 runs exactly this by default.
MOSQUITTO_COMMAND = ("/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf")
_MOSQUITTO_DEFAULT_CONF = """\
# Stand-in for eclipse-mosquitto:2's default file: no listener is configured, so mosquitto 2
# accepts connections on loopback only. As with the official image, mount your own
# configuration here or give the command explicitly.
"""


class HarnessError(RuntimeError):
    """The Docker environment could not be prepared; the message says why and what to read."""


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


def _is_root() -> bool:
    return os.geteuid() == 0


def _which(binary: str) -> str | None:
    """Find a binary also in sbin dirs, which a non-login PATH may lack."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(binary, path=path)


# ---------------------------------------------------------------------------------------------
# Host packages and the engine


def ensure_host_packages() -> list[str]:
    """Install the Debian packages whose binaries are missing; return what was installed."""
    missing = [pkg for binary, pkg in HOST_PACKAGES.items() if _which(binary) is None]
    if not missing:
        return []
    if not _is_root():
        raise HarnessError(f"missing {', '.join(missing)}; install them as root (apt-get)")
    if shutil.which("apt-get") is None:
        raise HarnessError(f"missing {', '.join(missing)} and no apt-get to install them")
    with _locked("apt"), timed(f"apt-get install {' '.join(missing)}"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], timeout=300, env=env, log=LOG_DIR / "apt-update.log")
        _run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            timeout=600,
            env=env,
            log=LOG_DIR / "apt-install.log",
        )
    return missing


@dataclass(frozen=True)
class EngineState:
    """The daemon the tests use, and whether this harness is the one that started it."""

    started_by_harness: bool
    pid: int | None
    server_version: str
    storage_driver: str
    flags: tuple[str, ...] = ()
    log_path: str | None = None


def docker_client(timeout: int = 900) -> docker.DockerClient:
    """A client for ``DOCKER_HOST`` if set, else the local socket the harness starts."""
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


def _read_engine_state() -> dict[str, Any] | None:
    try:
        return json.loads(ENGINE_STATE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_dockerd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except OSError:
        return False


def _host_mtu() -> int | None:
    """MTU of the interface of the default route (1400 on the CI VMs, not Docker's 1500)."""
    try:
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return int(Path(f"/sys/class/net/{fields[0]}/mtu").read_text())
    except (OSError, ValueError, IndexError):
        return None
    return None


def _dockerd_flag_sets() -> list[tuple[str, ...]]:
    """Flag sets to try in order: the defaults first, then ones for a poorer kernel.

    The defaults (overlay2, iptables via nf_tables, a bridge) work on the CI VMs. The fallback
    is for kernels without overlayfs or netfilter: vfs copies layers (slow, but works
    anywhere); without iptables, containers on a user-defined bridge still reach each other,
    and builds use the host's network, so nothing the tests need is lost.
    """
    common = ["--data-root", DOCKER_DATA_ROOT, "--host", DOCKER_SOCKET]
    mtu = _host_mtu()
    if mtu and mtu < 1500:
        # Containers on the default bridge would otherwise send 1500-byte packets that an
        # uplink with a smaller MTU drops.
        common += ["--mtu", str(mtu)]
    return [
        tuple(common),
        (*common, "--storage-driver=vfs", "--iptables=false", "--ip-masq=false"),
    ]


def _describe_engine(
    started: bool, pid: int | None, flags: Sequence[str], log: str | None
) -> EngineState:
    client = docker_client(timeout=30)
    try:
        info = client.info()
    finally:
        client.close()
    return EngineState(
        started_by_harness=started,
        pid=pid,
        server_version=str(info.get("ServerVersion", "?")),
        storage_driver=str(info.get("Driver", "?")),
        flags=tuple(flags),
        log_path=log,
    )


def _start_dockerd(flags: Sequence[str], log_path: Path, timeout: float) -> int:
    """Start dockerd in its own session and wait for it; return its pid or raise."""
    dockerd = _which("dockerd")
    if dockerd is None:
        raise HarnessError("dockerd is not installed (Debian package docker.io)")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.ctime()} {dockerd} {' '.join(flags)}\n".encode())
        proc = subprocess.Popen(
            [dockerd, *flags],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C to pytest must not kill it mid-teardown
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"dockerd exited {proc.returncode}: {_tail(log_path)}")
        if engine_answers():
            return proc.pid
        time.sleep(0.5)
    _terminate(proc.pid)
    raise HarnessError(f"dockerd did not answer within {timeout:.0f} s: {_tail(log_path)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _terminate(pid: int, timeout: float = 30) -> None:
    """SIGTERM then SIGKILL one process we started; dockerd stops its containerd itself."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    # A zombie child of ours still "exists"; reap it if it is one.
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_engine(timeout: float = 60) -> EngineState:
    """Make sure a Docker daemon answers; start one (and record that) if none does.

    A daemon that answers is used as it is. If its pid is the one a previous harness run
    recorded (say pytest was killed before its teardown), it is adopted, so the next
    :func:`stop_engine` still stops it; a daemon someone else started is never stopped.
    """
    if _is_root():
        ensure_host_packages()  # also docker-compose/debootstrap when a daemon already runs
    with _locked("engine"):
        state = _read_engine_state()
        if engine_answers():
            if state and _is_dockerd(int(state["pid"])):
                engine = _describe_engine(True, int(state["pid"]), state["flags"], state["log"])
            else:
                ENGINE_STATE_FILE.unlink(missing_ok=True)
                engine = _describe_engine(False, None, (), None)
            ours = engine.started_by_harness
            _log(
                f"Docker {engine.server_version} already answers "
                f"({'started by an earlier harness run' if ours else 'not started by us'})"
            )
            return engine
        if os.environ.get("DOCKER_HOST"):
            raise HarnessError(
                f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer; the harness starts "
                "a daemon only on the local socket (unset DOCKER_HOST to let it)"
            )
        if not _is_root():
            raise HarnessError(
                f"no Docker daemon answers at {DOCKER_SOCKET}; starting one needs root"
            )
        log_path = LOG_DIR / "dockerd.log"
        errors: list[str] = []
        with timed("start dockerd") as record:
            for flags in _dockerd_flag_sets():
                try:
                    pid = _start_dockerd(flags, log_path, timeout)
                except HarnessError as exc:
                    errors.append(f"with {' '.join(flags)}: {exc}")
                    continue
                STATE_DIR.mkdir(parents=True, exist_ok=True)
                ENGINE_STATE_FILE.write_text(
                    json.dumps({"pid": pid, "flags": list(flags), "log": str(log_path)}),
                    encoding="utf-8",
                )
                engine = _describe_engine(True, pid, flags, str(log_path))
                record.note = f"pid {pid}, {engine.storage_driver}, flags: {' '.join(flags)}"
                return engine
        raise HarnessError("could not start dockerd:\n" + "\n\n".join(errors))


def stop_engine() -> bool:
    """Stop dockerd if, and only if, the harness started it; True if it stopped one."""
    with _locked("engine"):
        state = _read_engine_state()
        if not state:
            return False
        pid = int(state["pid"])
        stopped = False
        if _is_dockerd(pid):
            with timed("stop dockerd"):
                _terminate(pid)
            stopped = True
        ENGINE_STATE_FILE.unlink(missing_ok=True)
        return stopped


# ---------------------------------------------------------------------------------------------
# Base image: debootstrap -> cached tarball -> docker import


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_image_key() -> str:
    """Hash of everything that goes into the rootfs: a new key means a new debootstrap."""
    recipe = {
        "suite": DEBIAN_SUITE,
        "variant": "minbase",
        "packages": sorted(BASE_PACKAGES),
        "recipe": ROOTFS_RECIPE,
        "ca": _sha256_file(HOST_CA_BUNDLE) if HOST_CA_BUNDLE.is_file() else None,
        "env": _IMPORT_ENV,
        "cmd": MOSQUITTO_COMMAND,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _mounts_below(root: Path) -> list[str]:
    prefix = str(root.resolve())
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            mounts.append(point)
    return sorted(mounts, key=len, reverse=True)


def _remove_rootfs(root: Path) -> None:
    """Delete a (possibly half-built) rootfs without ever recursing into a mounted /proc."""
    if not root.exists():
        return
    for point in _mounts_below(root):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if _mounts_below(root):
        raise HarnessError(f"{root} still has mounts below it; not deleting it")
    shutil.rmtree(root)


def _postprocess_rootfs(root: Path) -> None:
    """Trim the rootfs and make it a stand-in for eclipse-mosquitto:2 and a pip-ready base."""
    for junk in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
    ):
        path = root / junk
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    # The host reaches PyPI through a TLS proxy whose CA is only in the host's bundle.
    if HOST_CA_BUNDLE.is_file():
        target = root / "etc/ssl/certs/ca-certificates.crt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        shutil.copyfile(HOST_CA_BUNDLE, target)
    # eclipse-mosquitto:2's layout: /mosquitto/{config,data,log}, owned by the broker's user.
    uid = gid = 0
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "mosquitto":
            uid, gid = int(fields[2]), int(fields[3])
    for sub in ("config", "data", "log"):
        (root / "mosquitto" / sub).mkdir(parents=True, exist_ok=True)
        os.chown(root / "mosquitto" / sub, uid, gid)
    (root / "mosquitto/config/mosquitto.conf").write_text(_MOSQUITTO_DEFAULT_CONF)
    # No host identity inside the image.
    for name in ("etc/hostname", "etc/resolv.conf"):
        (root / name).unlink(missing_ok=True)


def rootfs_tarball_path(key: str | None = None) -> Path:
    """Where the cached rootfs tarball for ``key`` (default: the current recipe) lives."""
    return CACHE_DIR / f"rootfs-{DEBIAN_SUITE}-{key or base_image_key()}.tar"


def ensure_rootfs_tarball() -> Path:
    """Return the cached rootfs tarball, debootstrapping it first if it is not there."""
    key = base_image_key()
    tarball = rootfs_tarball_path(key)
    with _locked("rootfs"):
        if tarball.is_file():
            return tarball
        if not _is_root():
            raise HarnessError("building the base image rootfs (debootstrap) needs root")
        ensure_host_packages()
        work = CACHE_DIR / f"build-{key}"
        _remove_rootfs(work)
        root = work / "rootfs"
        root.mkdir(parents=True)
        debs = CACHE_DIR / "debs"  # keeps the .debs so a changed package list is a quick redo
        debs.mkdir(parents=True, exist_ok=True)
        try:
            with timed("debootstrap") as record:
                _run(
                    [
                        _which("debootstrap") or "debootstrap",
                        "--variant=minbase",
                        f"--include={','.join(BASE_PACKAGES)}",
                        f"--cache-dir={debs}",
                        DEBIAN_SUITE,
                        str(root),
                        DEBIAN_MIRROR,
                    ],
                    timeout=900,
                    log=LOG_DIR / "debootstrap.log",
                )
                _postprocess_rootfs(root)
                record.note = f"{DEBIAN_SUITE} minbase + {' '.join(BASE_PACKAGES)}"
            with timed("tar rootfs"):
                partial = tarball.with_suffix(".tar.partial")
                _run(
                    ["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."],
                    timeout=600,
                )
                partial.replace(tarball)
        finally:
            _remove_rootfs(work)
        for old in CACHE_DIR.glob(f"rootfs-{DEBIAN_SUITE}-*.tar"):
            if old != tarball:
                old.unlink()
        return tarball


def _image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_image() -> str:
    """Return the tag of the local Debian base image, importing or building it if needed.

    The tag works as the Dockerfile's ``BASE_IMAGE`` and as a drop-in for
    ``eclipse-mosquitto:2`` (default command ``/usr/sbin/mosquitto -c
    /mosquitto/config/mosquitto.conf``, mosquitto_pub/sub included).
    """
    key = base_image_key()
    tag = f"{BASE_IMAGE_REPO}:{key}"
    client = docker_client()
    try:
        with timed("base image") as record:
            if _image_exists(client, tag):
                record.note = f"cached image {tag}"
                return tag
            tarball = ensure_rootfs_tarball()
            with _locked("import"):
                if _image_exists(client, tag):
                    return tag
                changes = [f"ENV {name}={value}" for name, value in _IMPORT_ENV.items()]
                changes += [
                    f"LABEL {HARNESS_LABEL}=base {HARNESS_LABEL}.key={key}",
                    f"CMD {json.dumps(list(MOSQUITTO_COMMAND))}",
                ]
                with timed("docker import"):
                    client.api.import_image(
                        src=str(tarball), repository=BASE_IMAGE_REPO, tag=key, changes=changes
                    )
            size = client.images.get(tag).attrs.get("Size", 0) / 1e6
            record.note = f"imported {tag}, {size:.0f} MB"
            # Earlier recipes' images are no longer used by anything the harness builds.
            for image in client.images.list(name=BASE_IMAGE_REPO):
                if tag not in image.tags:
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(image.id, force=True)
            return tag
    finally:
        client.close()


_MOSQUITTO_DOCKERFILE = """\
FROM {base}
# eclipse-mosquitto:2's user is uid/gid {uid}, and /mosquitto belongs to it: compose files give
# the broker's files to that uid and run the broker as it (no usermod/groupmod needed).
RUN sed -i 's/^mosquitto:x:[0-9]*:[0-9]*:/mosquitto:x:{uid}:{uid}:/' /etc/passwd \\
 && sed -i 's/^mosquitto:x:[0-9]*:/mosquitto:x:{uid}:/' /etc/group \\
 && chown -R {uid}:{uid} /mosquitto /var/lib/mosquitto /var/log/mosquitto \\
 && test "$(id -u mosquitto)" = {uid}
LABEL {label}=mosquitto
CMD {cmd}
"""


def ensure_mosquitto_image(base_image: str) -> str:
    """Return the tag of the stand-in for ``eclipse-mosquitto:2``, building it if needed.

    The base image has Debian's mosquitto, whose user has a small system uid; the official
    image's user is uid 1883, which is what a compose file that runs the broker non-root
    (``user: 1883:1883``) and owns its files by uid relies on. A two-line derived image on the
    base fixes that without a new debootstrap; it needs no network.
    """
    key = base_image.rsplit(":", 1)[-1]
    dockerfile = _MOSQUITTO_DOCKERFILE.format(
        base=base_image,
        uid=MOSQUITTO_UID,
        label=HARNESS_LABEL,
        cmd=json.dumps(list(MOSQUITTO_COMMAND)),
    )
    digest = hashlib.sha256(dockerfile.encode()).hexdigest()[:8]
    tag = f"{MOSQUITTO_IMAGE_REPO}:{key}-{digest}"
    client = docker_client()
    try:
        with timed("mosquitto stand-in image") as record:
            if _image_exists(client, tag):
                record.note = f"cached image {tag}"
                return tag
            with _locked("build"):
                error = None
                for chunk in client.api.build(
                    fileobj=io.BytesIO(dockerfile.encode()),
                    tag=tag,
                    network_mode="none",
                    rm=True,
                    forcerm=True,
                    pull=False,
                    decode=True,
                ):
                    if "error" in chunk:
                        error = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                if error:
                    raise HarnessError(f"building {tag} failed: {error}")
            record.note = f"built {tag} (uid {MOSQUITTO_UID})"
            for image in client.images.list(name=MOSQUITTO_IMAGE_REPO):
                if tag not in image.tags:
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(image.id, force=True)
            return tag
    finally:
        client.close()


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
    "BASE_IMAGE_REPO",
    "HARNESS_LABEL",
    "MOSQUITTO_COMMAND",
    "MOSQUITTO_IMAGE_REPO",
    "MOSQUITTO_UID",
    "PROJECT_IMAGE",
    "TEST_LABEL",
    "TIMINGS",
    "ComposeProject",
    "EngineState",
    "HarnessError",
    "Timing",
    "base_image_key",
    "build_project_image",
    "compose_command",
    "docker_client",
    "engine_answers",
    "ensure_base_image",
    "ensure_engine",
    "ensure_host_packages",
    "ensure_mosquitto_image",
    "ensure_rootfs_tarball",
    "host_pip_index_args",
    "remove_test_resources",
    "rootfs_tarball_path",
    "stop_engine",
    "unique_name",
]
