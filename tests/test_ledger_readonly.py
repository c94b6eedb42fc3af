"""``privgrid ledger verify|show`` read a ledger they cannot write: a 0444 file in a 0555 folder
as a user who does not own it, a read-only mount, and the owner's own folder, in every state
the file can be in (closed cleanly, a writer live with blocks only in its WAL, a writer that
crashed, a copy with its WAL but no index). Through the real CLI, in subprocesses; the user
switch and the mount need root (root itself ignores file permissions, so the permission tests
run the command as ``nobody``), and the mount is made in a private mount namespace
(``unshare -m``), so nothing is left mounted if a test dies.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from privgrid.ledger import Ledger
from privgrid.ledger.errors import LedgerFormatError
from privgrid.ledger.reading import read_ledger_file, sqlite_uri
from tests.test_ledger_support import build_ledger, next_block

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # dozens of CLI subprocesses, as another user
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
STATES = ["closed", "live writer", "crashed writer", "copy without index"]
root_only = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("unshare"),
    reason="needs root, setpriv and unshare to switch user and mount read-only",
)


@pytest.fixture(scope="module", autouse=True)
def code_reachable_by_nobody() -> Iterator[None]:
    """nobody runs ``python -m privgrid.cli`` from this checkout: every folder above it must
    let others pass (a clone in a private ``mktemp -d`` folder does not). Adds the search bit
    where it is missing for the module's duration and takes it away again."""
    changed = []
    for parent in REPO.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
            changed.append((parent, mode))
    yield
    for parent, mode in changed:
        parent.chmod(mode)


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder every user can reach (pytest's tmp_path is private to root)."""
    top = Path(tempfile.mkdtemp(prefix="privgrid-ro-"))
    top.chmod(0o755)
    yield top
    for path in [top, *top.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(top)


def _wal_only_height(path: Path) -> int:
    """The head height stored in the main file alone (what a reader ignoring the WAL sees)."""
    with sqlite3.connect(sqlite_uri(path, mode="ro", immutable="1"), uri=True) as conn:
        return int(conn.execute("SELECT max(height) FROM blocks").fetchone()[0])


@pytest.fixture
def ledger_in(folder: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, int]]:
    """``(ledger path, head height)`` in the state named by the test's ``state`` parameter.

    The last two blocks of every state but ``closed`` are only in ``ledger.sqlite-wal``.
    """
    state: str = request.param
    runs = folder / "runs"
    runs.mkdir()
    path = runs / "ledger.sqlite"
    parties = build_ledger(path, 1)
    if state == "closed":
        yield path, 1
        return
    writer = Ledger.open(path)
    for seed in (1, 2):
        block = next_block(writer, seed=seed)
        writer.append(block, parties.votes(block))
    assert _wal_only_height(path) == 1  # the new blocks are in the WAL only
    if state == "live writer":
        yield path, 3
        writer.close()
        return
    image = folder / "image"
    image.mkdir()
    suffixes = ["", "-wal"] if state == "copy without index" else ["", "-wal", "-shm"]
    for suffix in suffixes:  # a point-in-time image of a writer between two commits
        shutil.copyfile(f"{path}{suffix}", image / f"ledger.sqlite{suffix}")
    writer.close()
    shutil.rmtree(runs)
    image.rename(runs)
    yield path, 3


def _privgrid(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "privgrid.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def _read_mounted(source: Path, mountpoint: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``privgrid`` with ``source`` bind-mounted read-only at ``mountpoint``, as nobody."""
    script = 'mount --bind "$1" "$2" && mount -o remount,ro,bind "$2" && shift 2 && exec "$@"'
    prefix = ("unshare", "--mount", "sh", "-c", script, "sh", str(source), str(mountpoint))
    return _privgrid(*args, prefix=(*prefix, *NOBODY))


def _assert_reads(
    run: Callable[..., subprocess.CompletedProcess[str]], path: Path, height: int
) -> None:
    verified = run("ledger", "verify", str(path), "--json")
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and report["head_height"] == height
    shown = run("ledger", "show", str(path), "--json")
    assert shown.returncode == 0, shown.stderr
    assert [b["height"] for b in json.loads(shown.stdout)["blocks"]] == list(range(height + 1))
    table = run("ledger", "show", str(path))
    assert table.returncode == 0 and f"({height + 1} blocks, not verified)" in table.stdout


def _listing(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Size and mtime of every file; only the name of the -shm index, which SQLite's readers
    update in place (read marks) where they may: it is shared memory, not stored data."""
    return {
        p.name: None if p.name.endswith("-shm") else (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.iterdir()
    }


@root_only
@pytest.mark.parametrize("ledger_in", STATES, indirect=True)
def test_verify_and_show_read_a_0444_ledger_in_a_0555_folder_as_a_user_who_does_not_own_it(
    ledger_in: tuple[Path, int],
) -> None:
    path, height = ledger_in
    for file in path.parent.iterdir():
        file.chmod(0o444)
    path.parent.chmod(0o555)
    before = _listing(path.parent)
    _assert_reads(lambda *a: _privgrid(*a, prefix=tuple(NOBODY)), path, height)
    assert _listing(path.parent) == before


@root_only
@pytest.mark.parametrize("ledger_in", STATES, indirect=True)
def test_verify_and_show_read_a_ledger_on_a_read_only_mount(
    ledger_in: tuple[Path, int], folder: Path
) -> None:
    path, height = ledger_in
    mountpoint = folder / "mnt"
    mountpoint.mkdir()
    before = _listing(path.parent)
    seen = mountpoint / path.name
    _assert_reads(lambda *a: _read_mounted(path.parent, mountpoint, *a), seen, height)
    assert _listing(path.parent) == before
    assert not any(mountpoint.iterdir())  # the mount never escaped its namespace


@pytest.mark.parametrize("ledger_in", STATES, indirect=True)
def test_verify_and_show_write_nothing_beside_a_ledger_they_could_write(
    ledger_in: tuple[Path, int],
) -> None:
    path, height = ledger_in
    before = _listing(path.parent)
    _assert_reads(_privgrid, path, height)
    assert _listing(path.parent) == before
    header = path.read_bytes()[18:20]
    assert header == b"\x02\x02"  # still WAL mode: a reader never switches the journal mode


def test_a_read_that_a_writer_changed_underneath_is_repeated(tmp_path: Path) -> None:
    """A lock-free read of a ledger at rest counts only if the file did not change under it."""
    path = tmp_path / "ledger.sqlite"
    parties = build_ledger(path, 1)
    heights: list[int] = []

    def read(conn: sqlite3.Connection) -> int:
        height = int(conn.execute("SELECT max(height) FROM blocks").fetchone()[0])
        heights.append(height)
        if len(heights) == 1:  # a writer opens, appends and closes (checkpoint) meanwhile
            with Ledger.open(path) as writer:
                block = next_block(writer, seed=5)
                writer.append(block, parties.votes(block))
        return height

    assert read_ledger_file(path, read) == 2
    assert heights == [1, 2]


def test_a_ledger_that_keeps_changing_under_every_read_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    parties = build_ledger(path, 0)

    def read(conn: sqlite3.Connection) -> None:
        with Ledger.open(path) as writer:
            block = next_block(writer)
            writer.append(block, parties.votes(block))

    with pytest.raises(LedgerFormatError, match="changed while being read"):
        read_ledger_file(path, read)
