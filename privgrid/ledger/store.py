"""Crash-safe, append-only storage of the chain in one SQLite file (``ledger.sqlite``).

Layout (``PRAGMA application_id`` 0x50474C44 "PGLD", ``user_version`` 1)::

    blocks(height INTEGER PRIMARY KEY, hash BLOB, prev_hash BLOB, data BLOB)
    votes(height, voter TEXT, data BLOB, PRIMARY KEY (height, voter))  -- WITHOUT ROWID

``data`` is the canonical bytes of a block / vote; ``hash`` and ``prev_hash`` are copies kept
for lookups and cross-checked by ``verify``. Triggers refuse UPDATE and DELETE, so a slip in
SQL cannot rewrite history (they are no defence against someone editing the file — that is
what hashes and signatures are for).

Why this is crash-safe:
- ``append`` writes a block and all its votes in **one** transaction (``BEGIN IMMEDIATE`` …
  ``COMMIT``), after re-reading the head under the write lock. SQLite's atomic commit means a
  crash or ``kill -9`` at any instant leaves either the whole block with its votes or nothing.
- ``journal_mode=WAL`` and ``synchronous=FULL``: at each commit the WAL is fsynced before
  ``append`` returns, so a committed block survives power loss; a transaction whose commit
  frame never reached the disk is ignored on recovery (WAL frames carry checksums).
  ``fullfsync`` is on for macOS, where plain fsync does not flush the drive cache.
- ``create`` builds the file under a temporary name (schema + genesis, one transaction),
  closes it — which checkpoints the WAL into the main file — fsyncs it and hard-links it to
  its final name (refusing to clobber an existing ledger), then fsyncs the directory. A crash
  leaves either no ledger or a complete genesis.

Reading: :meth:`Ledger.read` (and ``verify_ledger``) open the file read-only and create nothing
beside it (:mod:`privgrid.ledger.reading`); :meth:`Ledger.open` and :func:`connect` are for
the writer.

Copying a live ledger: copy ``ledger.sqlite`` and ``ledger.sqlite-wal`` together from a
point-in-time snapshot, or use ``sqlite3 ledger.sqlite ".backup copy.sqlite"``; a file copy
taken while a checkpoint runs may mix pages of two moments.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from privgrid.crypto.identity import Roster
from privgrid.ledger import rules
from privgrid.ledger.block import MARKET, Block
from privgrid.ledger.encoding import sha256
from privgrid.ledger.errors import (
    BlockError,
    ChainError,
    CommitRefused,
    LedgerError,
    LedgerExistsError,
    LedgerFormatError,
)
from privgrid.ledger.genesis import (
    Quorum,
    ledger_id,
    quorum_of,
    required_voters,
    roster_of,
    same_registration,
)
from privgrid.ledger.reading import BUSY_TIMEOUT_S, check_magic, read_ledger_file, sqlite_uri
from privgrid.ledger.votes import Decision, Vote

T = TypeVar("T")

APPLICATION_ID = 0x50474C44  # "PGLD"
SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE blocks (
        height INTEGER PRIMARY KEY CHECK (height >= 0),
        hash BLOB NOT NULL CHECK (length(hash) = 32),
        prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
        data BLOB NOT NULL
    )""",
    """CREATE TABLE votes (
        height INTEGER NOT NULL REFERENCES blocks(height),
        voter TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (height, voter)
    ) WITHOUT ROWID""",
    *(
        f"""CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
            BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END"""
        for table in ("blocks", "votes")
        for op in ("UPDATE", "DELETE")
    ),
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


@dataclass(frozen=True)
class StoredBlock:
    """One row of ``blocks`` as stored, before any check."""

    height: int
    hash: bytes
    prev_hash: bytes
    data: bytes


def connect(path: str | os.PathLike[str], *, create: bool = False) -> sqlite3.Connection:
    """A writer's connection with the ledger's pragmas; never creates a file unless ``create``.

    For reading only, use :meth:`Ledger.read` or :func:`~privgrid.ledger.reading.read_ledger_file`
    instead: this opens read-write and sets WAL mode, which a read-only file or mount refuses.
    """
    target = Path(path)
    if not create:
        check_magic(target)
    uri = sqlite_uri(target, mode="rwc" if create else "rw")
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise LedgerFormatError(f"{target}: cannot open: {exc}") from exc
    try:
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "fullfsync=ON",
            "checkpoint_fullfsync=ON",
            "foreign_keys=ON",
        ):
            conn.execute(f"PRAGMA {pragma}")
    except sqlite3.Error as exc:
        conn.close()
        raise LedgerFormatError(
            f"{target}: cannot open for writing: {exc} (to read it, use privgrid ledger "
            "show/verify, which open it read-only)"
        ) from exc
    return conn


def check_format(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> None:
    """Raise :class:`LedgerFormatError` unless ``conn`` holds a privgrid ledger."""
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        raise LedgerFormatError(f"{path}: not a readable SQLite database: {exc}") from exc
    if app != APPLICATION_ID or not {"blocks", "votes"} <= tables:
        raise LedgerFormatError(f"{path}: not a privgrid ledger")
    if version != SCHEMA_VERSION:
        raise LedgerFormatError(f"{path}: ledger schema {version} is not {SCHEMA_VERSION}")


def stored_blocks(conn: sqlite3.Connection) -> Iterator[StoredBlock]:
    """Every ``blocks`` row in height order, unchecked."""
    for row in conn.execute("SELECT height, hash, prev_hash, data FROM blocks ORDER BY height"):
        yield StoredBlock(*row)


def stored_votes(conn: sqlite3.Connection, height: int) -> list[tuple[str, bytes]]:
    """``(voter column, vote bytes)`` of one height, unchecked."""
    rows = conn.execute("SELECT voter, data FROM votes WHERE height = ? ORDER BY voter", (height,))
    return [(voter, data) for voter, data in rows]


def _insert_block(conn: sqlite3.Connection, block: Block, votes: Iterable[Vote]) -> None:
    data = block.to_bytes()
    conn.execute(
        "INSERT INTO blocks (height, hash, prev_hash, data) VALUES (?, ?, ?, ?)",
        (block.height, sha256(data), block.prev_hash, data),
    )
    conn.executemany(
        "INSERT INTO votes (height, voter, data) VALUES (?, ?, ?)",
        [(block.height, v.voter, v.to_bytes()) for v in votes],
    )


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, target: Path) -> None:
    """Give the finished file its name without ever replacing an existing ledger.

    A hard link is atomic and fails if the name exists. Where the file system has no hard
    links, fall back to a rename after an existence check (atomic, but racy against a
    concurrent creator).
    """
    taken = f"{target}: created concurrently by another process"
    try:
        os.link(tmp, target)
    except FileExistsError as exc:
        raise LedgerExistsError(taken) from exc
    except OSError:
        if target.exists():
            raise LedgerExistsError(taken) from None
        os.replace(tmp, target)


class Ledger:
    """One open ledger file. Reads trust the file; :func:`~privgrid.ledger.verify.verify_ledger`
    re-checks everything. Appends enforce every rule ``verify`` checks."""

    def __init__(self, path: Path, conn: sqlite3.Connection, genesis: Block) -> None:
        self.path = path
        self._conn = conn
        self._genesis = genesis

    # -- opening
    @classmethod
    def create(cls, path: str | os.PathLike[str], genesis: Block) -> Ledger:
        """Write a new ledger holding only ``genesis``; refuses to overwrite any file."""
        target = Path(path)
        ledger_id(genesis)  # raises unless it is a genesis block
        if target.exists():
            raise LedgerExistsError(f"{target}: already exists; open it instead of creating it")
        tmp = target.with_name(f".{target.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            conn = connect(tmp, create=True)
            try:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                _insert_block(conn, genesis, ())
                conn.execute("COMMIT")
            finally:
                conn.close()  # last connection: checkpoints the WAL into the file
            _fsync_path(tmp)
            _publish(tmp, target)
            _fsync_path(target.parent, directory=True)
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
        return cls.open(target)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Ledger:
        """Open an existing ledger to append to it (its genesis must decode; nothing else is
        checked). Needs write access; :meth:`read` does not."""
        target = Path(path)
        conn = connect(target)
        try:
            return cls._load(target, conn)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def read(cls, path: str | os.PathLike[str], use: Callable[[Ledger], T]) -> T:
        """Call ``use`` with the ledger at ``path`` opened read-only and return its result.

        Never writes the ledger, works on a read-only file, folder or mount, and reads one
        consistent snapshot while a writer appends (:mod:`privgrid.ledger.reading`). ``use``
        may be called again if the file changed under a lock-free read; it must only read, and
        the ledger is closed when it returns.
        """
        target = Path(path)
        return read_ledger_file(target, lambda conn: use(cls._load(target, conn)))

    @classmethod
    def _load(cls, target: Path, conn: sqlite3.Connection) -> Ledger:
        check_format(conn, target)
        row = conn.execute("SELECT data FROM blocks WHERE height = 0").fetchone()
        if row is None:
            raise LedgerFormatError(f"{target}: ledger has no genesis block")
        try:
            genesis = Block.from_bytes(row[0])
            ledger_id(genesis)
        except BlockError as exc:
            raise LedgerFormatError(f"{target}: unreadable genesis: {exc.reason}") from exc
        return cls(target, conn, genesis)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], genesis: Block) -> Ledger:
        """Open the ledger at ``path`` — which must register exactly what ``genesis``
        registers (timestamps aside) — or create it. Successive runs append to one ledger."""
        target = Path(path)
        if not target.exists():
            with contextlib.suppress(LedgerExistsError):  # lost a race: open theirs
                return cls.create(target, genesis)
        ledger = cls.open(target)
        if not same_registration(ledger.genesis, genesis):
            ledger.close()
            raise LedgerError(
                f"{target}: belongs to a different registration (scenario, roster, keys or "
                "quorum differ); use a new ledger file"
            )
        return ledger

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- what genesis pins
    @property
    def genesis(self) -> Block:
        return self._genesis

    @property
    def id(self) -> str:
        """The ledger id: hex SHA-256 of the genesis block."""
        return ledger_id(self._genesis)

    def roster(self) -> Roster:
        return roster_of(self._genesis)

    def required_voters(self) -> tuple[str, ...]:
        return required_voters(self._genesis)

    @property
    def quorum(self) -> Quorum:
        return quorum_of(self._genesis)

    # -- reading
    def head(self) -> Block:
        """The block with the greatest height."""
        row = self._conn.execute("SELECT data FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        return Block.from_bytes(row[0])

    @property
    def height(self) -> int:
        return int(self._conn.execute("SELECT max(height) FROM blocks").fetchone()[0])

    def block(self, height: int) -> Block:
        row = self._conn.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise LedgerError(f"{self.path}: no block at height {height}")
        return Block.from_bytes(row[0])

    def votes(self, height: int) -> list[Vote]:
        return [Vote.from_bytes(data) for _, data in stored_votes(self._conn, height)]

    def blocks(self) -> Iterator[Block]:
        for row in stored_blocks(self._conn):
            yield Block.from_bytes(row.data)

    # -- writing
    def append(self, block: Block, votes: Iterable[Vote]) -> Decision:
        """Append ``block`` with its votes in one transaction, or write nothing and raise.

        Checked under the write lock: ``block`` is a market block at height head + 1 whose
        ``prev_hash`` is the head's hash (:class:`ChainError`), its content follows the rules
        (:class:`BlockError`) and the votes meet the commit rule (:class:`CommitRefused`, with
        the decision). Only the counted accept votes are stored.
        """
        if block.kind != MARKET:
            raise BlockError(f"only market blocks can be appended, not {block.kind!r}")
        votes = list(votes)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            head = self._locked_head()
            try:
                rules.check_link(block, head)
            except BlockError as exc:
                raise ChainError(f"cannot append block {block.height}: {exc.reason}") from exc
            rules.check_market_block(block, self._genesis)
            decision = rules.decide(block, votes, self._genesis)
            if not decision.commit:
                raise CommitRefused(decision)
            _insert_block(conn, block, decision.accepted)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return decision

    def _locked_head(self) -> Block:
        row = self._conn.execute(
            "SELECT height, hash, data FROM blocks ORDER BY height DESC LIMIT 1"
        ).fetchone()
        height, stored_hash, data = row
        if sha256(data) != stored_hash:
            raise ChainError(f"{self.path}: head block {height} is corrupt (hash mismatch)")
        try:
            return Block.from_bytes(data)
        except BlockError as exc:
            raise ChainError(f"{self.path}: head block {height} is corrupt: {exc.reason}") from exc
