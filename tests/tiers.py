"""Test tiers: what a test needs decides its marker, and a guard holds the fast tier to it.

The markers (declared in pyproject.toml):

- ``grid``: role processes over a real broker — the ``grid_factory`` fixture, or ``privgrid
  run`` and the role modules started by the test itself (those files say so with
  ``pytestmark``);
- ``broker``: a real MQTT broker (Mosquitto or the embedded one) without role processes — a
  fixture named ``broker``;
- ``docker``: a Docker engine (everything under tests/docker);
- ``browser``: a real browser (the dashboard's browser test);
- ``slow``: long, whatever it uses;
- ``fast``: every other test. It is added here, at collection, never written by hand:
  ``make check`` runs ``pytest -m fast``, and ``make test`` runs every tier.

So a new test is fast unless it uses one of the fixtures above or is marked. A test that is
fast by that rule but starts a broker (every grid starts one first), Docker or a browser —
itself, through a fixture, or through any child process (``privgrid run`` starting its
grid) — would silently slow ``make check`` down; the guard below fails it instead, naming
the process and the marker to add. Two watches, both only while a fast test runs:

1. an audit hook (:func:`sys.addaudithook`) on ``subprocess.Popen`` in the test process:
   a forbidden process is refused before it starts, so nothing runs for long;
2. a thread that looks at the test process's descendants twice a second (psutil), for what
   a child starts: a broker lives as long as its run, seconds at least, so it is seen.
   Descendants already running when the fast test starts (a broker of a module-scoped grid
   fixture, kept for the file's later grid tests) are not the fast test's doing.

Not seen: a broker run inside the test process itself (no test does; the harness starts
the embedded one as a process too).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).resolve().parent
#: The markers of the tiers beyond ``fast`` (``make check`` deselects them all).
HEAVY = ("grid", "broker", "docker", "browser", "slow")
#: Fixtures that make a test ``grid`` or ``broker``.
GRID_FIXTURES = frozenset({"grid_factory"})
BROKER_FIXTURES = frozenset({"broker"})

#: What a fast test may not start, by program name or ``python -m`` module → the marker it
#: needs. A broker is what every grid starts first (``grid_factory``, ``privgrid run`` and its
#: embedded fallback); a role process alone is no grid — without a broker it can only refuse
#: its input or wait — so the tests of the role commands' input checks stay fast.
_PROGRAMS = {
    "mosquitto": "broker",
    "docker": "docker",
    "dockerd": "docker",
    "docker-compose": "docker",
    "containerd": "docker",
    "debootstrap": "docker",
    "chromium": "browser",
    "chrome": "browser",
    "chrome-headless-shell": "browser",
    "headless_shell": "browser",
}
_MODULES = {"broker": "broker", "privgrid.broker.embedded": "broker"}


def heavy_process(argv: Sequence[str]) -> str | None:
    """The marker a test needs to start the process ``argv`` (None: a fast test may)."""
    if not argv:
        return None
    name = os.path.basename(argv[0])
    if name in _PROGRAMS:
        return _PROGRAMS[name]
    if name.startswith("python") and "-m" in argv[:-1]:
        return _MODULES.get(argv[argv.index("-m") + 1])
    return None


# -- classification ---------------------------------------------------------------------------
def classify(item: pytest.Item) -> None:
    """Add the tier markers that follow from ``item``'s fixtures and place; ``fast`` if none."""
    names = set(getattr(item, "fixturenames", ()))
    if names & GRID_FIXTURES:
        item.add_marker(pytest.mark.grid)
    if names & BROKER_FIXTURES:
        item.add_marker(pytest.mark.broker)
    if HERE / "docker" in Path(str(item.path)).resolve().parents:
        item.add_marker(pytest.mark.docker)
    if not any(item.get_closest_marker(name) for name in HEAVY):
        item.add_marker(pytest.mark.fast)


# -- the guard --------------------------------------------------------------------------------
class _Watch:
    """The fast test running now (if any) and what it started that it should not have."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.nodeid: str | None = None
        self.found: list[str] = []
        self.seen_pids: set[int] = set()

    def note(self, marker: str, argv: Sequence[str], how: str) -> str:
        text = (
            f"a fast-tier test {how} {' '.join(argv)[:200]!r}: mark it "
            f"@pytest.mark.{'grid (or broker)' if marker == 'broker' else marker} (tests/tiers.py)"
        )
        with self.lock:
            if self.nodeid is not None:
                self.found.append(text)
        return text


_watch = _Watch()


def _audit(event: str, args: tuple) -> None:
    if event != "subprocess.Popen" or _watch.nodeid is None:
        return
    argv = args[1]
    argv = [argv] if isinstance(argv, (str, bytes)) else [str(a) for a in argv]
    marker = heavy_process(argv)
    if marker is not None:
        raise RuntimeError(_watch.note(marker, argv, "started"))


def _look_at_descendants() -> None:
    me = psutil.Process()
    while True:
        threading.Event().wait(0.5)
        if _watch.nodeid is None:
            continue
        with contextlib.suppress(psutil.Error):
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if child.pid in _watch.seen_pids:
                        continue
                    argv = child.cmdline()
                    marker = heavy_process(argv)
                    if marker is not None:
                        _watch.seen_pids.add(child.pid)
                        _watch.note(marker, argv, "had a child process start")


_started = False


def start_guard() -> None:
    """Install the audit hook and the descendants' watch (once per process)."""
    global _started
    if _started:
        return
    _started = True
    sys.addaudithook(_audit)
    threading.Thread(target=_look_at_descendants, name="fast-tier-guard", daemon=True).start()


def drain() -> list[str]:
    """What the running fast test has started that it should not have, forgotten from now on
    (for the guard's own tests, which provoke it on purpose)."""
    with _watch.lock:
        found, _watch.found = _watch.found, []
    return found


@contextlib.contextmanager
def watching(item: pytest.Item) -> Iterator[None]:
    """While ``item`` (a fast test) runs a phase: refuse heavy processes; fail it if any ran."""
    if item.get_closest_marker("fast") is None:
        yield
        return
    # What already runs (a broker a module-scoped grid fixture started for earlier tests)
    # was not started by this test: only processes that appear from now on count.
    running: set[int] = set()
    with contextlib.suppress(psutil.Error):
        running = {child.pid for child in psutil.Process().children(recursive=True)}
    with _watch.lock:
        _watch.seen_pids |= running
        _watch.nodeid, _watch.found = item.nodeid, []
    try:
        yield
    finally:
        with _watch.lock:
            found, _watch.nodeid, _watch.found = _watch.found, None, []
    if found:
        pytest.fail("\n".join(dict.fromkeys(found)), pytrace=False)
