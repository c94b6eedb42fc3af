"""Fixtures for tests that need a Docker engine and the project's image.

The engine and the offline base and broker images are the machine's set-up, made by
``scripts/docker_offline.py`` (``make docker-images``; ``make test`` runs it before pytest);
these fixtures only use them. CI must prove that the image works, so a missing engine or image
makes the tests fail with a message naming the script, never skip quietly.
``PRIVGRID_SKIP_DOCKER=1`` is the one explicit way to skip them (e.g. on a laptop without
root or Docker).

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
    pytest.fail(f"{what}: {exc}", pytrace=False)


_SETUP_ERRORS = (harness.HarnessError, docker.errors.DockerException, OSError)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[harness.EngineState]:
    """The Docker daemon that answers (the set-up script started it); the tests' leftovers
    are removed at the end, the daemon keeps running."""
    if os.environ.get("PRIVGRID_SKIP_DOCKER") == "1":
        pytest.skip("PRIVGRID_SKIP_DOCKER=1: docker tests skipped on request")
    try:
        engine = harness.require_engine()
    except _SETUP_ERRORS as exc:
        _fail("no Docker engine", exc)
    try:
        yield engine
    finally:
        harness.remove_test_resources()


@pytest.fixture(scope="session")
def docker_client(docker_engine: harness.EngineState) -> Iterator[docker.DockerClient]:
    """A docker SDK client for the harness's daemon."""
    client = harness.docker_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_engine: harness.EngineState) -> str:
    """The offline stand-in for python:3.12-slim (Debian bookworm with python3, venv and
    mosquitto), or whatever ``PRIVGRID_BASE_IMAGE`` names."""
    try:
        return harness.required_image(harness.BASE_VARIABLE)
    except _SETUP_ERRORS as exc:
        _fail("no base image", exc)


@pytest.fixture(scope="session")
def mosquitto_image(docker_engine: harness.EngineState) -> str:
    """The offline stand-in for eclipse-mosquitto:2 (same binary, config path, default
    command, and uid 1883 for its ``mosquitto`` user), or whatever
    ``PRIVGRID_MOSQUITTO_IMAGE`` names."""
    try:
        return harness.required_image(harness.MOSQUITTO_VARIABLE)
    except _SETUP_ERRORS as exc:
        _fail("no Mosquitto image", exc)


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
