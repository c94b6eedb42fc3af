"""Smoke tests of the benchmark scripts (``--quick``), so that they cannot rot.

Each script runs for real (real keys, real Mosquitto where it starts grids) on a tiny
problem, prints its table and rewrites its own section of a scratch copy of the performance
document, leaving the rest of it alone. No timing is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
SECTIONS = ("crypto", "paper", "scale", "rho", "steps", "day", "dashboard", "wire")


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "performance.md"
    parts = ["# Performance", "Hand-written text."]
    for name in SECTIONS:
        parts += [f"<!-- {name}:begin -->", f"old {name} table", f"<!-- {name}:end -->", "kept"]
    path.write_text("\n".join(parts) + "\n")
    return path


def run_script(name: str, doc: Path, *options: str) -> str:
    """``benchmarks/<name>.py --quick --write-docs [options]``: its stdout and its section."""
    env = {**os.environ, "PRIVGRID_PERF_DOC": str(doc)}
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", "--quick", "--write-docs", *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    text = doc.read_text()
    assert f"old {name} table" not in text  # its own section was rewritten …
    for other in set(SECTIONS) - {name}:
        assert f"old {other} table" in text  # … and nothing else
    assert text.count("kept") == len(SECTIONS) and "Hand-written text." in text
    section = text.split(f"<!-- {name}:begin -->")[1].split(f"<!-- {name}:end -->")[0]
    assert "| " in section and "Measured " in section
    return proc.stdout + section


def test_crypto_benchmark(doc):
    out = run_script("crypto", doc)
    assert "floor: gmpy2.powmod" in out and "batch verify, per proof" in out
    assert "1024 ms" in out and "× floor" in out
    # Every operation of a direction has its own row: encrypt, contract, decrypt, prove, verify.
    rows = ("encrypt c_A", "contract product", "decrypt (CRT), alone", "decrypt + prove", "verify")
    for row in rows:
        assert f"| {row}" in out, row


def test_rho_benchmark(doc):
    out = run_script("rho", doc)
    assert "rounds ρ=1.5" in out and "paper" in out


def test_steps_benchmark(doc):
    out = run_script("steps", doc)
    assert "rounds before" in out and "| paper | 7 | 12 | 195 | 72 |" in out
    assert "paper ÷ 20" in out and "ε = 1e-6 (the property test's)" in out and "FAIL" not in out


@pytest.mark.grid
def test_paper_benchmark(doc):
    out = run_script("paper", doc)
    assert "plain" in out and "secure, pools + batch" in out and "online ÷ plain" in out


@pytest.mark.grid
def test_scale_benchmark(doc):
    out = run_script("scale", doc)
    assert "secure 1024-bit (insecure test size)" in out and "CPU ms/pair-dir/round" in out


def test_day_benchmark(doc):
    out = run_script("day", doc)
    assert "day-rural1 (1-LV-rural1--2-sw)" in out and "warm ÷ cold" in out
    assert "| 2/2 |" in out  # both intervals converged


def test_day_benchmark_over_the_wire(doc):
    """``--wire``: the same two intervals through ``privgrid run`` (plain, Mosquitto), a row
    that compares them with the in-process day."""
    run_script("day", doc, "--wire")
    section = doc.read_text().split("<!-- day:begin -->")[1].split("<!-- day:end -->")[0]
    assert "day (feeder), over the wire" in section and "max |ΔP|" in section
    row = next(
        line for line in section.splitlines() if line.startswith("| day-rural1") and "plain" in line
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "2/2 / 2"  # both intervals converged, each with its block
    assert float(cells[5]) <= 1e-6 and float(cells[6]) <= 1e-6  # the in-process day's trades


def run_plain(*args: str) -> str:
    """A benchmark that writes no docs section: it must run and print its table."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=580
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.grid
def test_dashboard_benchmark(doc):
    """Three variants (without, with, with a page), each a real run over Mosquitto."""
    out = run_script("dashboard", doc)
    for variant in ("| without |", "| with |", "| with a page |"):
        assert variant in out, out
    assert "| 5 |" in out  # the quick runs stop at their round limit, the same in each


@pytest.mark.grid
def test_wire_benchmark(doc):
    """A tiny plain grid over Mosquitto and over the embedded broker, and a profiled run."""
    out = run_script("wire", doc, "--profile")
    assert "mosquitto" in out and "embedded" in out and "wire ÷ in process" in out
    assert "paho-mqtt" in out and "signatures (Ed25519)" in out  # the profile's components
    assert "Over the wire vs in process" in out


def test_market_benchmark():
    out = run_plain("benchmarks/market.py", "configs/paper.toml", "--repeat", "1")
    assert "paper" in out and "solve/QP" in out


def test_investigations_benchmark():
    out = run_plain("benchmarks/investigations.py", "--quick")
    assert "h_s^s with CRT" in out and "÷ floor" in out
    assert "two workers, GIL released (crypto_pool)" in out


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("privgrid.roles.agent", ("agents", 2)),
        ("agents", ("agents", 2)),
        ("privgrid.roles.line_manager", ("LM", 0)),
        ("privgrid.roles.market_operator", ("MO", 0)),
    ],
)
def test_the_sampler_tells_role_processes_apart(module, expected):
    """The wire benchmarks' /proc sampler classifies processes by their command line. The
    launcher starts the roles as ``-m privgrid.roles.<role>``: knowing only the role folders'
    ``-m agents``, it counted no agent process (the paper table's agent CPU read 0.0)."""
    from benchmarks.scale import _classify

    code = "import sys; print('ready', flush=True); sys.stdin.read()"
    argv = [sys.executable, "-c", code, "-m", module, "--id", "A", "--id", "B"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"  # exec'd
        assert _classify(proc.pid) == expected
    finally:
        proc.communicate(b"")
