"""The Docker set-up is one script (scripts/docker_offline.py, ``make docker-images``); the
docker tests only use what it left and, when something is missing, say to run it. No Docker
engine is needed here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PRIVGRID_TEST_CACHE", str(tmp_path))
    for variable in ("PRIVGRID_BASE_IMAGE", "PRIVGRID_MOSQUITTO_IMAGE"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


@pytest.fixture
def harness(cache: Path) -> ModuleType:
    return _load("privgrid_docker_harness", ROOT / "tests" / "docker" / "harness.py")


@pytest.fixture
def script(cache: Path) -> ModuleType:
    return _load("privgrid_docker_offline", ROOT / "scripts" / "docker_offline.py")


def test_the_docker_tests_name_the_setup_script_when_no_engine_answers(
    harness: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    with pytest.raises(harness.HarnessError) as caught:
        harness.require_engine()
    message = str(caught.value)
    assert "no Docker daemon answers" in message
    assert "make docker-images" in message and "scripts/docker_offline.py" in message


def test_the_docker_tests_name_the_setup_script_when_no_image_is_named(
    harness: ModuleType,
) -> None:
    with pytest.raises(harness.HarnessError) as caught:
        harness.required_image("PRIVGRID_BASE_IMAGE")
    message = str(caught.value)
    assert "PRIVGRID_BASE_IMAGE is not set" in message and "images.env" in message
    assert "scripts/docker_offline.py" in message


def test_the_setup_script_publishes_the_variables_the_tests_and_compose_read(
    script: ModuleType, harness: ModuleType, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, broker = script.base_image_tag(), script.mosquitto_image_tag()
    assert base.startswith("privgrid-local/bookworm-base:")
    assert broker.startswith(f"privgrid-local/mosquitto:{base.rsplit(':', 1)[1]}-")
    script.publish(script.variables(base, broker), harness.IMAGES_ENV_FILE)
    assert capsys.readouterr().out.splitlines() == [  # for eval "$(…)"
        f"export PRIVGRID_BASE_IMAGE={base}",
        f"export PRIVGRID_MOSQUITTO_IMAGE={broker}",
    ]
    assert harness.IMAGES_ENV_FILE == cache / "images.env"
    text = harness.IMAGES_ENV_FILE.read_text()  # docker compose --env-file's format
    assert text == f"PRIVGRID_BASE_IMAGE={base}\nPRIVGRID_MOSQUITTO_IMAGE={broker}\n"
    assert harness._read_env_file(harness.IMAGES_ENV_FILE) == {
        harness.BASE_VARIABLE: base,
        harness.MOSQUITTO_VARIABLE: broker,
    }
