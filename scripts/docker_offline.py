#!/usr/bin/env python3
"""Docker without a container registry: set up this machine to build and run privgrid's images.

privgrid's Dockerfile and compose files use official images (``python:3.12-slim``,
``eclipse-mosquitto:2``), overridable by variables. A machine that reaches package registries
(Debian, PyPI) but no container registry — CI's, or an offline developer's — makes stand-ins
for both from Debian packages instead. This script does all of it, as root, and is safe to run
again (every step is cached or skipped when done):

1. installs Debian's ``docker.io``, ``docker-compose`` (Compose v1) and ``debootstrap`` if
   their binaries are missing;
2. starts ``dockerd`` if no Docker daemon answers (it keeps running; ``stop`` stops it, and
   only a daemon this script started);
3. debootstraps a minimal Debian bookworm with python3, venv and mosquitto (the tarball is
   cached in ``/var/cache/privgrid-tests``) and imports it as ``privgrid-local/bookworm-base``:
   the stand-in for ``python:3.12-slim`` (the Dockerfile's ``BASE_IMAGE``);
4. derives ``privgrid-local/mosquitto`` from it, the stand-in for ``eclipse-mosquitto:2``:
   same binary, config path and default command, and its ``mosquitto`` user at uid 1883;
5. prints the variables that point the Dockerfile and the compose files at them
   (``export PRIVGRID_BASE_IMAGE=…``, ``export PRIVGRID_MOSQUITTO_IMAGE=…``, ready for
   ``eval``) and writes them to ``/var/cache/privgrid-tests/images.env`` (``VAR=value``, for
   ``docker compose --env-file`` and for the tests in tests/docker, which read it).

Usage::

    sudo python3 scripts/docker_offline.py          # all of the above (``make docker-images``)
    python3 scripts/docker_offline.py env           # the variables of images already built
    sudo python3 scripts/docker_offline.py stop     # stop the dockerd this script started

Needs only Python 3.11+ and, once installed, the ``docker`` command. Logs go to stderr and to
``/var/cache/privgrid-tests/logs``. Environment: ``PRIVGRID_TEST_CACHE`` (cache folder),
``PRIVGRID_TEST_STATE`` (where the started daemon is recorded, default /run/privgrid-tests),
``PRIVGRID_DEBIAN_MIRROR`` (debootstrap's mirror).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

CACHE_DIR = Path(os.environ.get("PRIVGRID_TEST_CACHE", "/var/cache/privgrid-tests"))
STATE_DIR = Path(os.environ.get("PRIVGRID_TEST_STATE", "/run/privgrid-tests"))
ENGINE_STATE_FILE = STATE_DIR / "dockerd.json"
LOG_DIR = CACHE_DIR / "logs"
ENV_FILE = CACHE_DIR / "images.env"

DOCKER_SOCKET = "unix:///var/run/docker.sock"
DOCKER_DATA_ROOT = "/var/lib/docker"
#: Debian packages this script needs on the host, by the binary that proves each.
HOST_PACKAGES: Mapping[str, str] = {
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("PRIVGRID_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: python3 + venv for the Dockerfile, mosquitto (+ clients) to stand in for eclipse-mosquitto:2,
#: ca-certificates for the standard /etc/ssl layout.
BASE_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-venv",
    "ca-certificates",
    "mosquitto",
    "mosquitto-clients",
)
#: Bump when the rootfs post-processing changes, to invalidate cached tarballs.
ROOTFS_RECIPE = 1
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

BASE_IMAGE_REPO = "privgrid-local/bookworm-base"
MOSQUITTO_IMAGE_REPO = "privgrid-local/mosquitto"
#: eclipse-mosquitto:2 creates its ``mosquitto`` user with this uid/gid (Debian's gets ~100).
MOSQUITTO_UID = 1883
#: Labels what this script builds, so it can be found and removed.
LABEL = "org.privgrid.harness"
#: The variables the Dockerfile's and compose files' users set (docs/docker.md).
BASE_VARIABLE = "PRIVGRID_BASE_IMAGE"
MOSQUITTO_VARIABLE = "PRIVGRID_MOSQUITTO_IMAGE"

#: What python:3.12-slim sets (PATH, LANG), plus the host's CA bundle for pip, since
#: ``docker import`` makes an image with no configuration at all.
IMPORT_ENV = {
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
_MOSQUITTO_DOCKERFILE = """\
FROM {base}
# eclipse-mosquitto:2's user is uid/gid {uid}, and /mosquitto belongs to it: compose files give
# the broker's files to that uid and run the broker as it.
RUN sed -i 's/^mosquitto:x:[0-9]*:[0-9]*:/mosquitto:x:{uid}:{uid}:/' /etc/passwd \\
 && sed -i 's/^mosquitto:x:[0-9]*:/mosquitto:x:{uid}:/' /etc/group \\
 && chown -R {uid}:{uid} /mosquitto /var/lib/mosquitto /var/log/mosquitto \\
 && test "$(id -u mosquitto)" = {uid}
LABEL {label}=mosquitto
CMD {cmd}
"""


class SetupError(RuntimeError):
    """A step failed; the message says why and which log to read."""


def log(message: str) -> None:
    print(f"[docker-offline] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def timed(step: str) -> Iterator[list[str]]:
    """Log how long ``step`` took; the caller may append a note (e.g. "cached")."""
    notes: list[str] = []
    start = time.monotonic()
    try:
        yield notes
    finally:
        note = f" ({'; '.join(notes)})" if notes else ""
        log(f"{step}: {time.monotonic() - start:.1f} s{note}")


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise a step across processes: two runs must not install, debootstrap or build at
    once (engineers and CI may share a machine)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(
    args: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    log_file: Path | None = None,
    check: bool = True,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise SetupError with the tail of its output."""
    try:
        proc = subprocess.run(
            list(args),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
        )
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"{' '.join(args)} did not finish within {timeout:.0f} s") from exc
    except FileNotFoundError as exc:
        raise SetupError(f"{args[0]} is not installed") from exc
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if check and proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
        where = f" (full log: {log_file})" if log_file else ""
        raise SetupError(f"{' '.join(args)} exited {proc.returncode}{where}:\n" + "\n".join(tail))
    return proc


def is_root() -> bool:
    return os.geteuid() == 0


def which(binary: str) -> str | None:
    """Find a binary also in the sbin folders, which a non-login PATH may lack."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(binary, path=path)


def docker(*args: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    binary = which("docker")
    if binary is None:
        raise SetupError("the docker command is missing (Debian package docker.io)")
    env = {"DOCKER_BUILDKIT": "0"}  # the classic builder: Debian's engine has no buildx
    if not os.environ.get("DOCKER_HOST"):
        env["DOCKER_HOST"] = DOCKER_SOCKET
    return run([binary, *args], timeout=timeout, env=env, **kwargs)  # type: ignore[arg-type]


# --- 1. host packages ---------------------------------------------------------------------------
def install_host_packages() -> list[str]:
    """Install the Debian packages whose binaries are missing; return what was installed."""
    missing = [pkg for binary, pkg in HOST_PACKAGES.items() if which(binary) is None]
    if not missing:
        return []
    if not is_root() or shutil.which("apt-get") is None:
        raise SetupError(f"missing {', '.join(missing)}: run this script as root on Debian")
    with locked("apt"), timed(f"apt-get install {' '.join(missing)}"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], timeout=300, env=env, log_file=LOG_DIR / "apt-update.log")
        run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            timeout=900,
            env=env,
            log_file=LOG_DIR / "apt-install.log",
        )
    return missing


# --- 2. the engine ------------------------------------------------------------------------------
def engine_answers() -> bool:
    """True when a Docker daemon answers right now."""
    if which("docker") is None:
        return False
    try:
        return (
            docker("version", "--format", "{{.Server.Version}}", timeout=20, check=False).returncode
            == 0
        )
    except SetupError:
        return False


def _is_dockerd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except OSError:
        return False


def _host_mtu() -> int | None:
    """MTU of the default route's interface (1400 on the CI VMs, not Docker's 1500)."""
    try:
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return int(Path(f"/sys/class/net/{fields[0]}/mtu").read_text())
    except (OSError, ValueError, IndexError):
        return None
    return None


def _dockerd_flag_sets() -> list[tuple[str, ...]]:
    """The defaults first (overlay2, iptables, a bridge: what the CI VMs support), then flags
    for a poorer kernel: vfs copies layers (slow, works anywhere); without iptables, containers
    on a user-defined bridge still reach each other and builds use the host's network."""
    common = ["--data-root", DOCKER_DATA_ROOT, "--host", DOCKER_SOCKET]
    mtu = _host_mtu()
    if mtu and mtu < 1500:  # else containers send 1500-byte packets the uplink drops
        common += ["--mtu", str(mtu)]
    return [
        tuple(common),
        (*common, "--storage-driver=vfs", "--iptables=false", "--ip-masq=false"),
    ]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):  # reap it if it is our zombie
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL, one process we started; dockerd stops its containerd itself."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start_dockerd(flags: Sequence[str], log_path: Path, timeout: float) -> int:
    dockerd = which("dockerd")
    if dockerd is None:
        raise SetupError("dockerd is not installed (Debian package docker.io)")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n=== {time.ctime()} {dockerd} {' '.join(flags)}\n".encode())
        proc = subprocess.Popen(
            [dockerd, *flags],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this script, and a Ctrl-C of whoever called it
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"dockerd exited {proc.returncode}: {_tail(log_path)}")
        if engine_answers():
            return proc.pid
        time.sleep(0.5)
    _terminate(proc.pid)
    raise SetupError(f"dockerd did not answer within {timeout:.0f} s: {_tail(log_path)}")


def ensure_engine(timeout: float = 60) -> None:
    """Use the Docker daemon that answers, or start one and record its pid for ``stop``."""
    with locked("engine"):
        if engine_answers():
            log("a Docker daemon answers: using it")
            return
        if os.environ.get("DOCKER_HOST"):
            raise SetupError(
                f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer; this script starts "
                "a daemon only on the local socket (unset DOCKER_HOST to let it)"
            )
        if not is_root():
            raise SetupError(
                f"no Docker daemon answers at {DOCKER_SOCKET}; starting one needs root"
            )
        log_path = LOG_DIR / "dockerd.log"
        errors: list[str] = []
        with timed("start dockerd") as notes:
            for flags in _dockerd_flag_sets():
                try:
                    pid = _start_dockerd(flags, log_path, timeout)
                except SetupError as exc:
                    errors.append(f"with {' '.join(flags)}: {exc}")
                    continue
                STATE_DIR.mkdir(parents=True, exist_ok=True)
                ENGINE_STATE_FILE.write_text(
                    json.dumps({"pid": pid, "flags": list(flags), "log": str(log_path)}),
                    encoding="utf-8",
                )
                notes.append(f"pid {pid}, flags: {' '.join(flags)}, log {log_path}")
                return
        raise SetupError("could not start dockerd:\n" + "\n\n".join(errors))


def stop_engine() -> bool:
    """Stop dockerd if, and only if, this script started it; True if it stopped one."""
    with locked("engine"):
        try:
            state = json.loads(ENGINE_STATE_FILE.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        pid = int(state["pid"])
        stopped = _is_dockerd(pid)
        if stopped:
            with timed("stop dockerd"):
                _terminate(pid)
        ENGINE_STATE_FILE.unlink(missing_ok=True)
        return stopped


# --- 3. the base image --------------------------------------------------------------------------
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
        "env": IMPORT_ENV,
        "cmd": MOSQUITTO_COMMAND,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def base_image_tag() -> str:
    return f"{BASE_IMAGE_REPO}:{base_image_key()}"


def _mosquitto_dockerfile(base: str) -> str:
    return _MOSQUITTO_DOCKERFILE.format(
        base=base, uid=MOSQUITTO_UID, label=LABEL, cmd=json.dumps(list(MOSQUITTO_COMMAND))
    )


def mosquitto_image_tag(base: str | None = None) -> str:
    base = base or base_image_tag()
    digest = hashlib.sha256(_mosquitto_dockerfile(base).encode()).hexdigest()[:8]
    return f"{MOSQUITTO_IMAGE_REPO}:{base.rsplit(':', 1)[-1]}-{digest}"


def _mounts_below(root: Path) -> list[str]:
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_rootfs(root: Path) -> None:
    """Delete a (possibly half-built) rootfs without ever recursing into a mounted /proc."""
    if not root.exists():
        return
    for point in _mounts_below(root):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if _mounts_below(root):
        raise SetupError(f"{root} still has mounts below it; not deleting it")
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
    # The host may reach PyPI through a TLS proxy whose CA is only in the host's bundle.
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
    for name in ("etc/hostname", "etc/resolv.conf"):  # no host identity inside the image
        (root / name).unlink(missing_ok=True)


def ensure_rootfs_tarball(key: str) -> Path:
    """The cached rootfs tarball for ``key``, debootstrapped first if it is not there."""
    tarball = CACHE_DIR / f"rootfs-{DEBIAN_SUITE}-{key}.tar"
    with locked("rootfs"):
        if tarball.is_file():
            return tarball
        if not is_root():
            raise SetupError("building the base image's rootfs (debootstrap) needs root")
        install_host_packages()
        work = CACHE_DIR / f"build-{key}"
        _remove_rootfs(work)
        root = work / "rootfs"
        root.mkdir(parents=True)
        debs = CACHE_DIR / "debs"  # keeps the .debs, so a changed package list is a quick redo
        debs.mkdir(parents=True, exist_ok=True)
        try:
            with timed("debootstrap") as notes:
                run(
                    [
                        which("debootstrap") or "debootstrap",
                        "--variant=minbase",
                        f"--include={','.join(BASE_PACKAGES)}",
                        f"--cache-dir={debs}",
                        DEBIAN_SUITE,
                        str(root),
                        DEBIAN_MIRROR,
                    ],
                    timeout=1800,
                    log_file=LOG_DIR / "debootstrap.log",
                )
                _postprocess_rootfs(root)
                notes.append(f"{DEBIAN_SUITE} minbase + {' '.join(BASE_PACKAGES)}")
            with timed("tar rootfs"):
                partial = tarball.with_suffix(".tar.partial")
                run(
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


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False, timeout=60).returncode == 0


def _remove_other_tags(repository: str, keep: str) -> None:
    """Images of earlier recipes: nothing built here uses them any more."""
    listing = docker("image", "ls", repository, "--format", "{{.Repository}}:{{.Tag}}", check=False)
    for ref in listing.stdout.split():
        if ref != keep:
            docker("image", "rm", ref, check=False)


def ensure_base_image() -> str:
    """The tag of the base image (stand-in for python:3.12-slim), imported if needed."""
    key = base_image_key()
    tag = f"{BASE_IMAGE_REPO}:{key}"
    with timed("base image") as notes:
        if image_exists(tag):
            notes.append(f"cached image {tag}")
            return tag
        tarball = ensure_rootfs_tarball(key)
        with locked("import"):
            if not image_exists(tag):
                changes = [f"ENV {name}={value}" for name, value in IMPORT_ENV.items()]
                changes += [
                    f"LABEL {LABEL}=base {LABEL}.key={key}",
                    f"CMD {json.dumps(list(MOSQUITTO_COMMAND))}",
                ]
                args = [arg for change in changes for arg in ("--change", change)]
                docker("import", *args, str(tarball), tag, timeout=900)
        notes.append(f"imported {tag}")
        _remove_other_tags(BASE_IMAGE_REPO, tag)
        return tag


# --- 4. the broker image ------------------------------------------------------------------------
def ensure_mosquitto_image(base: str) -> str:
    """The tag of the stand-in for eclipse-mosquitto:2, built (without network) if needed.

    Debian's mosquitto user has a small system uid; the official image's is 1883, which the
    compose files rely on (they run the broker as 1883 and give its files to that uid).
    """
    tag = mosquitto_image_tag(base)
    with timed("mosquitto image") as notes:
        if image_exists(tag):
            notes.append(f"cached image {tag}")
            return tag
        with locked("build"):
            docker(
                "build",
                "--network",
                "none",
                "--tag",
                tag,
                "-",
                stdin=_mosquitto_dockerfile(base),
                timeout=600,
                log_file=LOG_DIR / "build-mosquitto-image.log",
            )
        notes.append(f"built {tag} (uid {MOSQUITTO_UID})")
        _remove_other_tags(MOSQUITTO_IMAGE_REPO, tag)
        return tag


# --- 5. the variables ---------------------------------------------------------------------------
def variables(base: str, mosquitto: str) -> dict[str, str]:
    return {BASE_VARIABLE: base, MOSQUITTO_VARIABLE: mosquitto}


def publish(found: Mapping[str, str], env_file: Path) -> None:
    """``export VAR=value`` lines on stdout (for eval), ``VAR=value`` lines in ``env_file``."""
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in found.items()), encoding="utf-8")
    for name, value in found.items():
        print(f"export {name}={value}")
    log(f"variables written to {env_file}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Set up Docker and the offline stand-in images (see the module docstring)."
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="all",
        choices=["all", "env", "stop"],
        help="all: install, start the engine, build the images (default); env: print the "
        "variables of images already built; stop: stop a dockerd this script started",
    )
    parser.add_argument("--env-file", type=Path, default=ENV_FILE, help=f"default {ENV_FILE}")
    args = parser.parse_args(argv)
    try:
        if args.command == "stop":
            log("stopped dockerd" if stop_engine() else "no dockerd started by this script runs")
            return 0
        if args.command == "env":
            base, mosquitto = base_image_tag(), mosquitto_image_tag()
            missing = [ref for ref in (base, mosquitto) if not image_exists(ref)]
            if missing:
                raise SetupError(f"not built yet: {', '.join(missing)}; run without 'env' first")
            publish(variables(base, mosquitto), args.env_file)
            return 0
        started = time.monotonic()
        if is_root():
            install_host_packages()
        ensure_engine()
        base = ensure_base_image()
        mosquitto = ensure_mosquitto_image(base)
        publish(variables(base, mosquitto), args.env_file)
        log(f"done in {time.monotonic() - started:.0f} s")
        return 0
    except SetupError as exc:
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
