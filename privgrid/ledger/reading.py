"""Read a ledger file without writing anything: on a read-only file, folder or mount, as a user
who does not own it, and while the market operator may be appending to it.

A ledger is in WAL mode. While any connection has it open, ``ledger.sqlite-wal`` (committed
blocks not yet copied into the main file) and ``ledger.sqlite-shm`` (the WAL index) exist
beside it; the last connection to close copies the WAL into the main file and deletes both.
A reader therefore chooses by what it finds (why each is safe, and what it never does):

- **-wal and -shm both exist** — a writer is live, or one crashed: SQLite's read-only mode
  (``mode=ro``). It reads the committed blocks in the WAL and takes the ordinary read locks, so
  a live writer's appends never tear the snapshot. It works when neither the files nor the
  folder are writable (SQLite then rebuilds the index in its own memory).
- **neither exists** — no connection has the file open, so everything is in the main file:
  ``mode=ro&immutable=1``, which creates no -wal/-shm. A plain ``mode=ro`` open would create
  them, which fails where the folder is read-only and elsewhere leaves two files owned by the
  reader that can stop the owner's next writer.
- **only -wal exists** (a ledger copied with its WAL but not the index): no connection is
  live (a live one always has the index), so the pair is copied into a private temporary
  folder and read there with ``mode=ro``, which replays the WAL. The original is untouched.

The last two are snapshots of files at rest, taken without locks. A writer that opens the
ledger while they are read could change the main file under them, so the read counts only if
the files' inode, size and modification time, and which of -wal/-shm exist, are the same
after the read as before; otherwise it is repeated (by then the writer's files exist, and the
locked ``mode=ro`` path applies). A reader never changes the journal mode, never creates a
file beside the ledger and never writes the ledger or its WAL; in the first case it updates
the existing -shm index in place where that file is writable (it is shared memory, not data).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from privgrid.ledger.errors import LedgerFormatError

BUSY_TIMEOUT_S = 10.0
ATTEMPTS = 3
SQLITE_MAGIC = b"SQLite format 3\x00"

T = TypeVar("T")


def check_magic(path: Path) -> None:
    """Raise :class:`LedgerFormatError` unless ``path`` can be read and starts as SQLite."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise LedgerFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if magic != SQLITE_MAGIC:
        raise LedgerFormatError(f"{path}: not a privgrid ledger (not an SQLite file)")


def sqlite_uri(path: Path, **params: str) -> str:
    """``file:`` URI of ``path`` (absolute, percent-quoted) with query ``params``."""
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"file:{urllib.parse.quote(str(path.absolute()))}?{query}"


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class _Files:
    """What a reader sees of the ledger file and its two companions."""

    db: tuple[int, int, int] | None
    wal: tuple[int, int, int] | None
    shm: bool

    @classmethod
    def of(cls, path: Path) -> _Files:
        return cls(_stat(path), _stat(Path(f"{path}-wal")), os.path.lexists(f"{path}-shm"))

    @property
    def live(self) -> bool:
        """A writer has the file open (or crashed with it open): read under SQLite's locks."""
        return self.wal is not None and self.shm


def _open(uri: str, shown: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise LedgerFormatError(f"{shown}: cannot open for reading: {exc}") from exc
    return conn


def _read(uri: str, shown: Path, read: Callable[[sqlite3.Connection], T]) -> T:
    conn = _open(uri, shown)
    try:
        return read(conn)
    except sqlite3.Error as exc:
        raise LedgerFormatError(f"{shown}: not a readable SQLite database: {exc}") from exc
    finally:
        conn.close()


def _read_copy(path: Path, read: Callable[[sqlite3.Connection], T]) -> T:
    """Copy the main file and its WAL to a private folder and read the copy (WAL replayed)."""
    with tempfile.TemporaryDirectory(prefix="privgrid-ledger-") as folder:
        copy = Path(folder) / path.name
        try:
            shutil.copyfile(path, copy)
            shutil.copyfile(f"{path}-wal", f"{copy}-wal")
        except OSError as exc:
            raise LedgerFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        return _read(sqlite_uri(copy, mode="ro"), path, read)


def read_ledger_file(path: str | os.PathLike[str], read: Callable[[sqlite3.Connection], T]) -> T:
    """Call ``read`` with a read-only connection to the SQLite file at ``path``; return its result.

    ``read`` may be called more than once (see the module docstring); it must only read.

    Raises:
        LedgerFormatError: ``path`` is missing, unreadable, not SQLite, or kept changing under
            every attempt; ``sqlite3.Error`` raised by ``read`` is turned into this too.
    """
    target = Path(path)
    for _ in range(ATTEMPTS):
        check_magic(target)
        before = _Files.of(target)
        if before.live:
            return _read(sqlite_uri(target, mode="ro"), target, read)
        if before.wal is not None:
            result = _read_copy(target, read)
        else:
            result = _read(sqlite_uri(target, mode="ro", immutable="1"), target, read)
        if _Files.of(target) == before:
            return result
    raise LedgerFormatError(
        f"{target}: changed while being read, {ATTEMPTS} times (a writer opened it); run again"
    )
