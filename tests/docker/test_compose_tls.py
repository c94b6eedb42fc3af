"""``privgrid compose SCENARIO --tls``: the compose grid with certificates instead of passwords.

Generated and run as a user would (``docker compose up --abort-on-container-exit
--exit-code-from mo``) on the harness's images, in plain privacy mode: the MO's status is 0,
the result is ``privgrid solve``'s, every participant logged in over TLS by its certificate
(the broker's log names each account on port 8883), and no password exists anywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import harness
import pytest
import tomli_w

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1200)]

SCENARIO = harness.REPO_ROOT / "configs" / "paper.toml"
PARTICIPANTS = ("LM", "MO", "S1", "S2", "S3", "S4", "B1", "B2", "B3")
UP = ("up", "--no-build", "--abort-on-container-exit", "--exit-code-from", "mo")


def privgrid(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privgrid.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_compose_tls_grid_converges_like_solve_with_certificates_as_logins(
    tmp_path: Path,
    compose_project: Callable[..., harness.ComposeProject],
    privgrid_image: str,
    mosquitto_image: str,
) -> None:
    data = tomllib.loads(SCENARIO.read_text())
    data["privacy"] = {"mode": "plain"}
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "paper.toml").write_text(tomli_w.dumps(data))
    reference = json.loads(privgrid("solve", "configs/paper.toml", "--json", cwd=tmp_path).stdout)
    made = privgrid("compose", "configs/paper.toml", "--tls", "-o", "compose.yaml", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = compose_project(
        tmp_path / "compose.yaml",
        {"PRIVGRID_IMAGE": privgrid_image, "PRIVGRID_MOSQUITTO_IMAGE": mosquitto_image},
    )
    log = tmp_path / "up.log"
    process = project.start(*UP, log=log)
    try:
        code = process.wait(timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail(f"compose up still running:\n{log.read_text()[-3000:]}")
    assert code == 0, log.read_text()[-4000:]

    results = json.loads((tmp_path / "runs" / "paper" / "results.json").read_text())
    assert results["converged"] and results["ledger"]["committed"]
    assert results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        for key in ("power", "price"):
            assert abs(ours[key] - theirs[key]) <= 1e-9, (key, ours, theirs)

    broker_log = project.logs("broker")
    for pid in PARTICIPANTS:
        assert f" as {pid} (" in broker_log and f"u'{pid}'" in broker_log, pid
    assert "on port 8883." in broker_log and "on port 1883." not in broker_log
    secrets = tmp_path / "secrets" / "paper"
    assert not list(secrets.rglob("*.password")) and not (secrets / "broker.json").exists()
    assert not (secrets / "broker" / "passwd").exists()
    for pid in PARTICIPANTS:
        assert sorted(p.name for p in (secrets / pid / "tls").iterdir()) == sorted(
            ["ca.pem", f"{pid}.pem", f"{pid}.key"]
        )
