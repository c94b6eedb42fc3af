"""The ledger in real runs: Proof of Solution by every participant, commit, tampering MOs,
successive sessions, and a Market Operator killed while it commits."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privgrid.keys import participants
from privgrid.ledger import Ledger, imbalance, verify_ledger
from privgrid.scenario import MO_ID

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parent.parent
PLAIN = {"mode": "plain"}


def finish(grid, timeout=300) -> int:
    code = grid.wait(MO_ID, timeout=timeout)
    for pid in participants(grid.scenario):
        grid.wait(pid, timeout=60)
    return code


def test_a_converged_secure_run_commits_a_block_everyone_accepted(grid_factory):
    grid = grid_factory(privacy={"mode": "paillier", "key_bits": 1024, "insecure_test_keys": True})
    grid.start_all()
    assert finish(grid) == 0, grid.log(MO_ID)[-2000:]
    info = grid.results()["ledger"]
    assert info["committed"] and info["height"] == 1
    assert info["votes"] == dict.fromkeys(participants(grid.scenario), True)
    path = grid.folder / "ledger.sqlite"
    assert verify_ledger(path).ok
    block = Ledger.open(path).head()
    settlement = block.body["settlement"]
    assert abs(imbalance(settlement)) <= 1e-6
    rent = settlement["congestion_rent"] / 2**32
    assert rent == pytest.approx(10.868, abs=5e-3)
    proc = subprocess.run(
        [sys.executable, "-m", "privgrid.cli", "ledger", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "ledger OK: 2 blocks" in proc.stdout


#: What docs/ledger.md's table says, exactly: each rejecter → the conditions it names (the part
#: of each failure before " at <subject>"); everyone else accepts.
OWN_A2 = {"A0-own-record", "A2-complementarity"}
OWN_A3 = {"A0-own-record", "A3-stationarity"}
EVERY_AGENT = ("S1", "S2", "S3", "S4", "B1", "B2", "B3")
BOTH_LINES = ("line 2-3", "line 4-5")


@pytest.mark.parametrize(
    ("behaviour", "expected", "lm_failures"),
    [
        (
            "tamper-trade",
            {"S1": OWN_A2, "B1": OWN_A2, "LM": {"L1-line-limit"}},
            {f"L1-line-limit at {line}" for line in BOTH_LINES},
        ),
        ("tamper-price", {"S1": OWN_A3, "B1": OWN_A3}, None),
        (
            "suboptimal",  # feasible, not optimal: only the optimality conditions object
            {**dict.fromkeys(EVERY_AGENT, OWN_A2), "LM": {"L2-complementarity"}},
            {f"L2-complementarity at {line}" for line in BOTH_LINES},
        ),
    ],
)
def test_a_tampering_mo_is_rejected_by_those_it_affects(
    bus_factory, behaviour, expected, lm_failures
):
    """On the in-process bus (tests/bus.py): the block, the votes and the commit decision go
    through the real channel and the MO's own ledger code, as in its process."""
    grid = bus_factory(privacy=PLAIN, market_operator={"behaviour": behaviour})
    assert grid.run(timeout=300) == 3
    results = grid.results()
    info = results["ledger"]
    assert info["committed"] is False and "not committed" in results["error"]
    everyone = set(participants(grid.scenario))
    assert set(info["votes"]) == everyone  # every vote came in: the rejecters are all of them
    assert {voter for voter, accept in info["votes"].items() if not accept} == set(expected)
    failed = {
        voter: {entry.split(" at ")[0] for entry in entries}
        for voter, entries in info["rejected"].items()
    }
    assert failed == expected
    if lm_failures is not None:
        assert set(info["rejected"]["LM"]) == lm_failures
    report = verify_ledger(grid.folder / "ledger.sqlite")
    assert report.ok and report.blocks == 1  # only genesis: nothing half-written
    assert "rejected by S1" in grid.log(MO_ID) or "REJECTS the block" in grid.log(MO_ID)
    for voter in everyone - {MO_ID}:  # the MO's closing word, however long, is a valid message
        assert "the MO closed the run" in grid.log(voter), voter
        assert "longer than" not in grid.log(voter), voter


@pytest.mark.grid
def test_successive_runs_append_to_one_ledger_and_other_keys_are_refused(tmp_path):
    ledger, keys = tmp_path / "ledger.sqlite", tmp_path / "keys"
    base = [
        sys.executable,
        "-m",
        "privgrid.cli",
        "run",
        "configs/paper-unconstrained.toml",
        "--privacy",
        "plain",
        "--ledger",
        str(ledger),
    ]
    for i in (1, 2):
        proc = subprocess.run(
            [*base, "--keys", str(keys), "--out", str(tmp_path / f"run{i}")],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    report = verify_ledger(ledger)
    assert report.ok and report.blocks == 3
    heights = [b.height for b in Ledger.open(ledger).blocks()]
    assert heights == [0, 1, 2]
    proc = subprocess.run(
        [*base, "--out", str(tmp_path / "run3")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )  # new keys: a different registration
    assert proc.returncode != 0
    assert "different registration" in (tmp_path / "run3" / "logs" / "MO.log").read_text()
    assert verify_ledger(ledger).blocks == 3


def test_killing_the_mo_while_it_commits_never_corrupts_the_ledger(grid_factory):
    grid = grid_factory(privacy=PLAIN)
    grid.start_all()
    log = grid.folder / "logs" / f"{MO_ID}.log"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if "accepted: 9 of 9" in log.read_text(errors="replace"):
            os.killpg(grid.processes[MO_ID].pid, signal.SIGKILL)  # mid-commit, or just before
            break
        time.sleep(0.002)
    else:
        pytest.fail("the MO never reached the commit")
    grid.processes[MO_ID].wait(10)
    report = verify_ledger(grid.folder / "ledger.sqlite")
    assert report.ok, report.summary()
    book = Ledger.open(grid.folder / "ledger.sqlite")
    assert book.height in (0, 1)
    if book.height == 1:
        assert {v.voter for v in book.votes(1)} == set(participants(grid.scenario))
