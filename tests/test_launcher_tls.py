"""``privgrid run --tls``: the whole local grid over TLS, with the plain run's result."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_launcher import assert_same_market_as_solve, path_without_mosquitto

pytestmark = pytest.mark.timeout(400)
ROOT = Path(__file__).resolve().parent.parent
PRIVGRID = [sys.executable, "-m", "privgrid.cli"]
EVERYONE = ["S1", "S2", "S3", "S4", "B1", "B2", "B3", "LM", "MO"]


@pytest.fixture(scope="module")
def solve_json() -> dict[str, Any]:
    proc = subprocess.run(
        [*PRIVGRID, "solve", "configs/paper.toml", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.grid
def test_privgrid_run_tls_reaches_the_plain_runs_result_with_certificates_as_logins(
    tmp_path: Path, solve_json: dict[str, Any]
):
    """Same trades and prices as ``privgrid solve`` (bit for bit, as the plain run promises);
    every participant logged in by its certificate over the one TLS listener, no password
    anywhere, and the ledger's block committed."""
    assert shutil.which("mosquitto"), "Debian's mosquitto must be installed for this test"
    out = tmp_path / "run"
    proc = subprocess.run(
        [*PRIVGRID, "run", "configs/paper.toml", "--privacy", "plain", "--tls", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(TLS, client certificates)" in proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["converged"] and results["kkt"]["passed"]
    assert_same_market_as_solve(results, solve_json)

    broker_log = (out / "broker" / "broker.log").read_text()
    for pid in EVERYONE:
        assert re.search(
            rf"New client connected from 127\.0\.0\.1:\d+ as {pid} \(.*u'{pid}'\)", broker_log
        ), pid
        assert "connected to mqtts://127.0.0.1:" in (out / "logs" / f"{pid}.log").read_text()
    assert not (out / "secrets" / "broker.json").exists()
    assert not (out / "broker" / "passwd").exists()
    tls_dir = out / "secrets" / "tls"
    assert {p.name for p in tls_dir.glob("*.key")} >= {f"{pid}.key" for pid in EVERYONE}
    assert all(p.stat().st_mode & 0o077 == 0 for p in tls_dir.glob("*.key"))

    verify = subprocess.run(
        [*PRIVGRID, "ledger", "verify", str(out / "ledger.sqlite")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize("how", ["--embedded-broker", "no mosquitto"])
def test_privgrid_run_tls_without_mosquitto_says_tls_needs_it(tmp_path: Path, how: str):
    env = None
    args = [*PRIVGRID, "run", "configs/paper.toml", "--tls", "--out", str(tmp_path / "r")]
    if how == "no mosquitto":
        env = {"PATH": path_without_mosquitto(), "PYTHONPATH": str(ROOT)}
    else:
        args.append(how)
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 2
    assert "privgrid: error: TLS needs Mosquitto (apt-get install mosquitto)" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_privgrid_run_tls_with_a_dashboard_says_the_dashboard_cannot_read_tls_yet(tmp_path: Path):
    """Refused before anything starts (exit 2, no run folder), with what to do instead."""
    out = tmp_path / "r"
    args = [*PRIVGRID, "run", "configs/paper.toml", "--tls", "--dashboard", "0", "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert "--dashboard does not read a TLS broker yet" in proc.stderr.splitlines()[-1]
    assert not out.exists()
