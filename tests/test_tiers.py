"""The test tiers (tests/tiers.py): each test's marker follows from what it uses, and a fast
test that starts a broker, Docker or a browser — itself or through a child — is stopped and
told which marker it needs."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests import tiers
from tests.waiting import wait_until


@pytest.mark.parametrize(
    ("argv", "marker"),
    [
        (["/usr/sbin/mosquitto", "-c", "mosquitto.conf"], "broker"),
        ([sys.executable, "-m", "privgrid.broker.embedded", "--config", "x"], "broker"),
        (["python3", "-m", "broker"], "broker"),
        (["docker", "compose", "up"], "docker"),
        (["/usr/bin/dockerd"], "docker"),
        (["debootstrap", "bookworm", "root"], "docker"),
        (["/usr/lib/chromium/chromium", "--headless"], "browser"),
        # A role process alone is no grid (without a broker it refuses its input or waits):
        ([sys.executable, "-m", "agents", "--scenario", "bad.toml"], None),
        ([sys.executable, "-m", "privgrid.cli", "solve", "configs/paper.toml"], None),
        (["privgrid", "keys", "init", "configs/paper.toml"], None),
        ([sys.executable, "-c", "print(1)"], None),
        ([], None),
    ],
)
def test_each_process_that_makes_a_test_heavy_names_its_marker(argv, marker):
    assert tiers.heavy_process(argv) == marker


def test_every_collected_test_has_its_tier_and_fast_only_alone(request):
    for item in request.session.items:
        heavy = {name for name in tiers.HEAVY if item.get_closest_marker(name)}
        fast = item.get_closest_marker("fast") is not None
        assert fast != bool(heavy), (item.nodeid, heavy)
        names = set(getattr(item, "fixturenames", ()))
        if names & tiers.GRID_FIXTURES:
            assert "grid" in heavy, item.nodeid
        if names & tiers.BROKER_FIXTURES:
            assert "broker" in heavy, item.nodeid
        if "/tests/docker/" in str(item.path):
            assert "docker" in heavy, item.nodeid


def test_this_test_is_fast(request):
    assert request.node.get_closest_marker("fast") is not None


def test_a_fast_test_that_starts_a_broker_is_stopped_naming_the_marker():
    with pytest.raises(RuntimeError, match=r"mark it @pytest\.mark\.grid \(or broker\)"):
        subprocess.Popen(["mosquitto", "-c", "/nonexistent/mosquitto.conf"])
    (found,) = tiers.drain()  # the guard fails the test unless drained
    assert "started 'mosquitto -c /nonexistent/mosquitto.conf'" in found


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for exec -a")
def test_a_broker_started_by_a_child_process_is_seen():
    """The child (bash) is harmless; what it runs is named ``mosquitto`` (exec -a): as a
    ``privgrid run`` starting its broker would, one level down where no audit hook sees it."""
    child = subprocess.Popen(["bash", "-c", "exec -a mosquitto sleep 30"])
    try:
        found = wait_until(lambda: tiers._watch.found, 10, "the guard saw the child's broker")
    finally:
        child.kill()
        child.wait()
    assert "had a child process start 'mosquitto 30'" in found[0]
    assert "@pytest.mark.grid (or broker)" in found[0]
    tiers.drain()
