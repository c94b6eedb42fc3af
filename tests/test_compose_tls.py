"""``privgrid compose --tls``, ``--swarm`` and ``privgrid broker config`` without Docker: the
generated files, the secrets each side gets, and the errors. The same files run in containers
in tests/docker/test_compose_tls.py and tests/docker/test_swarm.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from privgrid.compose.document import generate
from privgrid.compose.setup import Owner, setup_grid
from privgrid.crypto import tls

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "configs" / "paper.toml"
PARTICIPANTS = ["S1", "S2", "S3", "S4", "B1", "B2", "B3", "LM", "MO"]
PRIVGRID = [sys.executable, "-m", "privgrid.cli"]
IS_ROOT = os.geteuid() == 0


def service(pid: str) -> str:
    return {"LM": "lm", "MO": "mo"}.get(pid, f"agent-{pid.lower()}")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PRIVGRID, *args], capture_output=True, text=True, cwd=cwd, timeout=90, check=False
    )


# --- compose --tls --------------------------------------------------------------------------------
def test_compose_tls_points_every_participant_at_mqtts_with_its_own_tls_folder(tmp_path: Path):
    doc = yaml.safe_load(generate(PAPER, tmp_path / "compose.yaml", tls=True))
    assert doc["services"]["setup"]["command"][-1] == "--tls"
    for pid in PARTICIPANTS:
        env = doc["services"][service(pid)]["environment"]
        assert env["PRIVGRID_BROKER_URL"] == "mqtts://broker:8883"
        assert env["PRIVGRID_TLS_DIR"] == "/run/secrets/privgrid/tls"
        assert "PRIVGRID_BROKER_PASSWORD_FILE" not in env
    plain = yaml.safe_load(generate(PAPER, tmp_path / "compose.yaml"))
    assert plain["services"]["lm"]["environment"]["PRIVGRID_BROKER_URL"] == "mqtt://LM@broker:1883"


def setup(tmp_path: Path, *, tls_on: bool) -> Path:
    setup_grid(
        PAPER,
        "paper",
        "demo",
        secrets_root=tmp_path / "secrets",
        runs_root=tmp_path / "runs",
        broker_data=None,
        owner=Owner(10001, 10001),
        broker_owner=Owner(1883, 1883),
        tls=tls_on,
    )
    return tmp_path / "secrets" / "paper"


def test_setup_with_tls_gives_certificates_instead_of_passwords_and_drops_old_passwords(
    tmp_path: Path,
):
    project = setup(tmp_path, tls_on=False)
    assert (project / "S1" / "broker.password").exists() and (project / "broker.json").exists()
    project = setup(tmp_path, tls_on=True)
    ca = tls.load_cert(project / "keys" / "tls" / "ca.pem")
    for pid in PARTICIPANTS:
        folder = project / pid
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["roster.json", f"{pid}.key", "tls"]
        )
        own = folder / "tls"
        assert sorted(p.name for p in own.iterdir()) == sorted(
            ["ca.pem", f"{pid}.pem", f"{pid}.key"]
        )
        assert own.stat().st_mode & 0o077 == 0 and (own / f"{pid}.key").stat().st_mode & 0o077 == 0
        tls.check_client_files(tls.TlsFiles.in_dir(own, pid), pid)
        if IS_ROOT:
            assert (own / f"{pid}.key").stat().st_uid == 10001
    assert not (project / "broker.json").exists()
    assert not list(project.rglob("*.password"))  # the dashboard's of the plain setup too
    broker = project / "broker"
    assert sorted(p.name for p in broker.iterdir()) == sorted(
        [
            "acl",
            "broker.key",
            "broker.pem",
            "ca.pem",
            "healthcheck.sh",
            "monitor.key",
            "monitor.pem",
            "mosquitto.conf",
        ]
    )
    cert = tls.load_cert(broker / "broker.pem")
    assert tls.certificate_problem(cert, ca) is None
    assert sorted(tls.host_names(cert)) == ["127.0.0.1", "broker", "localhost"]
    conf = (broker / "mosquitto.conf").read_text()
    assert "listener 8883 0.0.0.0" in conf and "listener 1883" not in conf
    assert "keyfile /mosquitto/config/broker.key" in conf and "password_file" not in conf
    script = (broker / "healthcheck.sh").read_text()
    assert (
        "-p 8883 --cafile /mosquitto/config/ca.pem --cert /mosquitto/config/monitor.pem" in script
    )
    assert ":22B3 00000000:0000 0A" in script  # 8883, listening


# --- the Swarm stack ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    folder = tmp_path_factory.mktemp("stack")
    shutil.copy(PAPER, folder / "paper.toml")
    made = run("compose", "paper.toml", "--swarm", "--tls", cwd=folder)
    assert made.returncode == 0, made.stderr
    assert "docker stack deploy --resolve-image never -c stack.yaml paper" in made.stdout
    text = (folder / "stack.yaml").read_text()
    return folder, yaml.safe_load(text), text


def test_the_stack_has_an_encrypted_internal_overlay_and_places_services_by_label(stack):
    _, doc, _ = stack
    assert doc["networks"]["grid"] == {
        "driver": "overlay",
        "driver_opts": {"encrypted": "true"},
        "internal": True,
    }
    expected = {"broker": "privgrid.broker", "lm": "privgrid.operators", "mo": "privgrid.operators"}
    expected |= {service(a): "privgrid.agents" for a in PARTICIPANTS if a not in ("LM", "MO")}
    for name, label in expected.items():
        deploy = doc["services"][name]["deploy"]
        assert deploy["placement"]["constraints"] == [f"node.labels.{label} == true"], name
        assert deploy["endpoint_mode"] == "dnsrr"
        assert doc["services"][name]["networks"] == ["grid"]
        assert "ports" not in doc["services"][name]
    assert doc["services"]["mo"]["deploy"]["restart_policy"] == {"condition": "none"}
    for name in expected.keys() - {"mo"}:
        assert doc["services"][name]["deploy"]["restart_policy"]["condition"] == "on-failure"
    assert doc["services"]["mo"]["volumes"] == ["./runs/paper:/app/runs/paper"]
    assert all("volumes" not in doc["services"][n] for n in expected.keys() - {"mo"})


def test_each_service_of_the_stack_gets_only_its_own_secrets(stack):
    folder, doc, text = stack
    for pid in PARTICIPANTS:
        name = service(pid)
        mounts = {m["source"]: m for m in doc["services"][name]["secrets"]}
        assert set(mounts) == {"roster", f"{name}-key", "ca", f"{name}-cert", f"{name}-tls-key"}
        assert mounts[f"{name}-key"]["target"] == f"privgrid/{pid}.key"
        assert mounts[f"{name}-tls-key"]["target"] == f"privgrid/tls/{pid}.key"
        assert mounts[f"{name}-tls-key"]["mode"] == 0o400
        env = doc["services"][name]["environment"]
        assert env["PRIVGRID_BROKER_URL"] == "mqtts://broker:8883"
        assert doc["services"][name]["configs"][0]["target"] == "/privgrid/scenario/paper.toml"
    broker = {m["source"] for m in doc["services"]["broker"]["secrets"]}
    assert broker == {"broker-conf", "broker-acl", "ca", "broker-cert", "broker-tls-key"}
    for source in doc["secrets"].values():  # every file exists, beside the stack file
        assert (folder / source["file"]).is_file(), source
    key = (folder / "secrets" / "paper" / "S1" / "tls" / "S1.key").read_text()
    assert key.split("\n")[1] not in text  # the stack file names secrets, never holds them
    assert (folder / "runs" / "paper").is_dir()


def test_the_stack_without_tls_hands_each_participant_its_password_file(tmp_path: Path):
    shutil.copy(PAPER, tmp_path / "paper.toml")
    assert run("compose", "paper.toml", "--swarm", "-o", "s.yaml", cwd=tmp_path).returncode == 0
    doc = yaml.safe_load((tmp_path / "s.yaml").read_text())
    mounts = {m["source"] for m in doc["services"]["agent-s1"]["secrets"]}
    assert mounts == {"roster", "agent-s1-key", "agent-s1-password"}
    env = doc["services"]["agent-s1"]["environment"]
    assert env["PRIVGRID_BROKER_URL"] == "mqtt://S1@broker:1883"
    assert env["PRIVGRID_BROKER_PASSWORD_FILE"] == "/run/secrets/privgrid/broker.password"
    conf = (tmp_path / "secrets" / "paper" / "broker" / "mosquitto.conf").read_text()
    assert "password_file /run/secrets/broker/passwd" in conf


# --- privgrid broker config -----------------------------------------------------------------------
def test_broker_config_with_tls_copies_the_brokers_files_and_needs_them(tmp_path: Path):
    assert (
        run("keys", "init", str(PAPER), "--out", "secrets", "--tls", cwd=tmp_path).returncode == 0
    )
    made = run("broker", "config", str(PAPER), "--tls", "--run", "demo", "--out", "b", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "open TCP port 8883" in made.stdout
    folder = tmp_path / "b"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["acl", "broker.key", "broker.pem", "ca.pem", "data", "mosquitto.conf"]
    )
    assert (folder / "broker.key").stat().st_mode & 0o077 == 0
    conf = (folder / "mosquitto.conf").read_text()
    assert f"keyfile {folder.resolve()}/broker.key" in conf and "listener 8883 0.0.0.0" in conf
    assert "topic read privgrid/demo/to/S1/#" in (folder / "acl").read_text()

    missing = run("broker", "config", str(PAPER), "--tls", "--keys", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2
    assert "cannot read nowhere/tls/ca.pem: No such file or directory" in missing.stderr


def test_broker_config_without_tls_keeps_the_passwords_it_made(tmp_path: Path):
    first = run("broker", "config", str(PAPER), "--out", "b", cwd=tmp_path)
    assert first.returncode == 0 and "open TCP port 1883" in first.stdout
    passwords = (tmp_path / "b" / "broker.json").read_text()
    assert run("broker", "config", str(PAPER), "--out", "b", cwd=tmp_path).returncode == 0
    assert (tmp_path / "b" / "broker.json").read_text() == passwords
    assert (tmp_path / "b" / "broker.json").stat().st_mode & 0o077 == 0
