"""Fixtures for tests that need a Docker engine and the project's image.

CI must prove that the image works, so a Docker environment that cannot be prepared makes the
tests fail with the reason, never skip quietly. ``PRIVGRID_SKIP_DOCKER=1`` is the one explicit
way to skip them (e.g. on a laptop without root). ``PRIVGRID_KEEP_DOCKERD=1`` leaves a daemon
the harness started running after the session, for quicker reruns while developing.

This directory has no ``__init__.py`` on purpose: as a package it would be imported as
``docker`` (its parent ``tests/`` is not a package) and shadow the docker SDK. Its modules are
imported by basename (``harness``), the rootdir/"prepend" import mode's default.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import docker
import docker.errors
import harness
import pytest

HERE = Path(__file__).resolve().parent

_docker_nodeids: set[str] = set()
_stage = {"seconds": 0.0, "first": 0.0, "last": 0.0}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test here ``docker`` (so ``-m 'not docker'`` always deselects them)."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            _docker_nodeids.add(item.nodeid)
            if item.get_closest_marker("docker") is None:
                item.add_marker(pytest.mark.docker)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up setup + call + teardown of the docker tests: the docker stage's duration."""
    if report.nodeid in _docker_nodeids:
        _stage["seconds"] += report.duration
        now = time.monotonic()
        _stage["first"] = _stage["first"] or now - report.duration
        _stage["last"] = now


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how long the docker stage took and which steps a cache made cheap."""
    if not _stage["seconds"] and not harness.TIMINGS:
        return
    terminalreporter.section("docker stage")
    for record in harness.TIMINGS:
        note = f"  ({record.note})" if record.note else ""
        terminalreporter.write_line(f"{record.step:<28} {record.seconds:7.1f} s{note}")
    terminalreporter.write_line(
        f"docker stage total: {_stage['seconds']:.1f} s in the docker tests "
        f"(wall {_stage['last'] - _stage['first']:.1f} s)"
    )


def _fail(what: str, exc: BaseException) -> NoReturn:
    pytest.fail(
        f"{what}: {exc}\n(set PRIVGRID_SKIP_DOCKER=1 to skip the docker tests on purpose)",
        pytrace=False,
    )


_SETUP_ERRORS = (harness.HarnessError, docker.errors.DockerException, OSError)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[harness.EngineState]:
    """A Docker daemon that answers; stopped at the end if (and only if) the harness started it."""
    if os.environ.get("PRIVGRID_SKIP_DOCKER") == "1":
        pytest.skip("PRIVGRID_SKIP_DOCKER=1: docker tests skipped on request")
    try:
        engine = harness.ensure_engine()
    except _SETUP_ERRORS as exc:
        _fail("the Docker engine could not be started", exc)
    try:
        yield engine
    finally:
        try:
            harness.remove_test_resources()
        finally:
            if engine.started_by_harness and os.environ.get("PRIVGRID_KEEP_DOCKERD") != "1":
                harness.stop_engine()


@pytest.fixture(scope="session")
def docker_client(docker_engine: harness.EngineState) -> Iterator[docker.DockerClient]:
    """A docker SDK client for the harness's daemon."""
    client = harness.docker_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_engine: harness.EngineState) -> str:
    """Tag of the local Debian bookworm base (python3 + venv + mosquitto), cached on disk."""
    try:
        return harness.ensure_base_image()
    except _SETUP_ERRORS as exc:
        _fail("the local base image could not be built", exc)


@pytest.fixture(scope="session")
def mosquitto_image(base_image: str) -> str:
    """Stand-in for eclipse-mosquitto:2: same binary, config path, default command, and the
    same uid (1883) for its ``mosquitto`` user, which owns /mosquitto."""
    try:
        return harness.ensure_mosquitto_image(base_image)
    except _SETUP_ERRORS as exc:
        _fail("the Mosquitto stand-in image could not be built", exc)


@pytest.fixture(scope="session")
def privgrid_image(base_image: str) -> str:
    """Tag of the project's image, built from the repository's Dockerfile on ``base_image``."""
    try:
        return harness.build_project_image(base_image)
    except _SETUP_ERRORS as exc:
        _fail("the project image could not be built", exc)


@pytest.fixture
def compose_project(
    docker_engine: harness.EngineState,
) -> Iterator[Callable[..., harness.ComposeProject]]:
    """Factory for compose projects with unique names, all taken ``down`` after the test."""
    projects: list[harness.ComposeProject] = []

    def make(compose_file: Path, env: dict[str, str] | None = None) -> harness.ComposeProject:
        project = harness.ComposeProject(
            compose_file, harness.unique_name("privgrid-test"), env or {}
        )
        projects.append(project)
        return project

    yield make
    for project in projects:
        with contextlib.suppress(harness.HarnessError):
            project.down()
