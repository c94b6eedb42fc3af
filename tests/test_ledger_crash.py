"""Crash safety: a writer killed with SIGKILL mid-commit, and copies taken mid-write.

A writer process appends blocks as fast as it can (each one a full transaction with fsync);
the test kills it at random instants, then checks that the ledger verifies and its head is a
complete block with all its votes. Copies of the files taken while the writer runs (frozen
with SIGSTOP, like a crash image), and copies whose WAL is cut inside the last transaction,
must open as a complete prefix of the chain — never a corrupt one.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privgrid.ledger import Ledger, verify_ledger
from tests.test_ledger_support import build_ledger

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # writers killed with SIGKILL, many times over
KILLS = 50

# The writer prints one letter per phase: B (append starts), C (SQLite starts executing
# COMMIT; via the connection's trace hook), E (append returned). The letters tell the test
# where each kill landed, and let it aim kills at the COMMIT itself.
WRITER = """
import os, sys
from pathlib import Path
from privgrid.crypto.identity import Identity
from privgrid.ledger import Ledger, market_block, sign_vote
from tests.test_ledger_support import SMALL_LINES, small_trades

path, keys, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
ledger = Ledger.open(path)
ledger._conn.set_trace_callback(lambda sql: sql == "COMMIT" and os.write(1, b"C"))
ids = {p: Identity.load(keys / f"{p}.key") for p in ledger.required_voters()}
os.write(1, b"ready\\n")
while True:
    head = ledger.head()
    if head.height >= limit:
        sys.stdin.read()  # wait to be killed
    block = market_block(head.height + 1, head.hash, f"run-{head.height + 1}", 195,
                         small_trades(head.height), SMALL_LINES)
    votes = [sign_vote(ids[p], p, block.hash, True) for p in ids]
    os.write(1, b"B")
    ledger.append(block, votes)
    os.write(1, b"E")
"""


def _start_writer(path: Path, keys: Path, limit: int = 10**9) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(keys), str(limit)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != b"ready\n":
        _kill(proc)
        raise AssertionError(f"the writer did not start: {line!r}")
    return proc


def _kill(proc: subprocess.Popen[bytes]) -> bytes:
    """SIGKILL; returns the phase letters the writer printed since the last read."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.stdout is not None and proc.stdin is not None
    rest = proc.stdout.read()
    proc.stdout.close()
    proc.stdin.close()
    return rest


def _wait_for_commit(proc: subprocess.Popen[bytes], commits: int) -> None:
    """Read phase letters until the writer has started ``commits`` COMMITs."""
    assert proc.stdout is not None
    seen = 0
    while seen < commits:
        letter = proc.stdout.read(1)
        assert letter, "writer died"
        seen += letter == b"C"


def _assert_complete(path: Path) -> int:
    """The ledger verifies and its head has every vote; returns the head height."""
    report = verify_ledger(path)
    assert report.ok, report
    with Ledger.open(path) as ledger:
        head = ledger.head()
        assert head.height == report.head_height
        votes = ledger.votes(head.height)
        if head.height:
            assert {v.voter for v in votes} == set(ledger.required_voters())
    return head.height


@pytest.fixture
def writer_setup(tmp_path):
    path, keys = tmp_path / "ledger.sqlite", tmp_path / "keys"
    parties = build_ledger(path, 0)
    parties.save_keys(keys)
    return path, keys


@pytest.mark.timeout(120)
def test_kill_9_during_commits_never_breaks_the_chain(writer_setup):
    """KILLS kills: half at random instants, half right as SQLite starts the COMMIT."""
    path, keys = writer_setup
    rng = random.Random(7)
    heights, landed = [], {"in append": 0, "in COMMIT": 0}
    for i in range(KILLS):
        proc = _start_writer(path, keys)
        try:
            if i % 2:
                _wait_for_commit(proc, rng.randint(1, 4))
            else:
                # A random moment to kill at is what is tested; an append takes a few ms.
                time.sleep(rng.uniform(0.0, 0.05))
        finally:
            last = _kill(proc)[-1:]  # the phase the writer was in when it died
        landed["in append"] += last in (b"B", b"C") or (i % 2 == 1 and not last)
        landed["in COMMIT"] += last == b"C" or (i % 2 == 1 and not last)
        heights.append(_assert_complete(path))
    assert len(heights) == KILLS >= 50  # issue #9: at least 50 kills, each one verified
    assert heights == sorted(heights)  # nothing committed is ever lost
    assert heights[-1] >= KILLS // 2, heights  # the writer did get blocks in
    assert landed["in COMMIT"] >= KILLS // 4, landed  # kills did hit commits
    cli = Path(sys.executable).parent / "privgrid"  # and the command users run agrees
    done = subprocess.run([cli, "ledger", "verify", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _wal_frames(wal: bytes) -> list[tuple[int, int]]:
    """``(end offset, db size after commit)`` of each valid-salt frame of a WAL file."""
    if len(wal) < 32:
        return []
    page_size = struct.unpack(">I", wal[8:12])[0]
    salt = wal[16:24]
    frames, offset = [], 32
    while offset + 24 + page_size <= len(wal):
        header = wal[offset : offset + 24]
        if header[8:16] != salt:
            break
        offset += 24 + page_size
        frames.append((offset, struct.unpack(">I", header[4:8])[0]))
    return frames


def _copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    wal = Path(f"{src}-wal")
    if wal.exists():
        shutil.copyfile(wal, Path(f"{dst}-wal"))


@pytest.mark.timeout(120)
def test_copies_taken_mid_write_are_complete_prefixes(writer_setup, tmp_path):
    path, keys = writer_setup
    rng = random.Random(11)
    # few enough blocks that the writer's WAL never reaches SQLite's auto-checkpoint
    proc = _start_writer(path, keys, limit=150)
    try:
        snapshots = []
        for i in range(12):
            time.sleep(rng.uniform(0.005, 0.05))  # a random moment to copy at: what is tested
            copy = tmp_path / f"copy{i}.sqlite"
            if i % 2:
                _copy(path, copy)  # a plain copy while the writer runs
            else:
                os.kill(proc.pid, signal.SIGSTOP)  # a point-in-time image, as after a crash
                try:
                    _copy(path, copy)
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
            snapshots.append(copy)
    finally:
        _kill(proc)
    cut_checked = 0
    for copy in snapshots:
        main = copy.read_bytes()  # read before verify: closing it checkpoints the WAL away
        wal_path = Path(f"{copy}-wal")
        wal = wal_path.read_bytes() if wal_path.exists() else b""
        full = _assert_complete(copy)
        # The same image with its WAL cut inside the last committed transaction (a torn
        # write): it must lose exactly that block, never show part of it.
        commits = [end for end, size in _wal_frames(wal) if size]
        if len(commits) < 2:
            continue
        torn = copy.with_name(f"torn-{copy.name}")
        torn.write_bytes(main)
        Path(f"{torn}-wal").write_bytes(wal[: rng.randrange(commits[-2] + 1, commits[-1])])
        assert _assert_complete(torn) == full - 1
        cut_checked += 1
    assert cut_checked >= 6
