"""``verify_ledger``: re-check a whole ledger file from its bytes, trusting nothing but genesis.

For every block, in height order, and stopping at the first problem (reported with its
height): the stored hash equals SHA-256 of the stored bytes; the bytes are canonical and well
formed; heights are contiguous and every ``prev_hash`` is the previous block's hash; the
stored copies of height and ``prev_hash`` agree with the block; market blocks name registered
agents and carry a settlement that follows from their trades and balances; every stored vote
decodes, is filed under its own voter, is for this block, accepts it and verifies under the
genesis roster; and the votes meet the genesis quorum. Votes filed under a missing block are
reported too. So a single flipped byte in any stored block or vote fails naming that block.

What it cannot see without outside help: a ledger cut back to a shorter prefix (keep the head
hash you trust) or rewritten wholesale with other keys from genesis on (pin the ledger id:
``--ledger-id``).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from privgrid.crypto.identity import Roster
from privgrid.ledger import rules
from privgrid.ledger.block import GENESIS, Block
from privgrid.ledger.encoding import sha256
from privgrid.ledger.errors import BlockError, VoteError
from privgrid.ledger.genesis import ledger_id as genesis_id
from privgrid.ledger.genesis import quorum_of, required_voters, roster_of
from privgrid.ledger.reading import read_ledger_file
from privgrid.ledger.store import StoredBlock, check_format, stored_blocks, stored_votes
from privgrid.ledger.votes import Vote, needed_votes, verify_vote


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :func:`verify_ledger`. ``bad_height`` names the first bad block."""

    path: str
    ok: bool
    blocks: int  # blocks that passed every check
    ledger_id: str | None = None
    head_height: int | None = None
    head_hash: str | None = None
    bad_height: int | None = None
    reason: str | None = None

    def summary(self) -> str:
        if self.ok:
            return (
                f"ledger OK: {self.blocks} blocks (heights 0-{self.head_height}), "
                f"id {self.ledger_id}, head {self.head_hash}"
            )
        return f"ledger BAD at block {self.bad_height}: {self.reason}"


class _Bad(Exception):  # noqa: N818 — internal control flow: the first failure found
    def __init__(self, height: int, reason: str) -> None:
        super().__init__(reason)
        self.height = height
        self.reason = reason


@dataclass(frozen=True)
class _Registration:
    """What genesis pins, computed once per verification."""

    genesis: Block
    roster: Roster
    required: frozenset[str]
    needed: int

    @classmethod
    def of(cls, genesis: Block) -> _Registration:
        voters = required_voters(genesis)
        return cls(
            genesis, roster_of(genesis), frozenset(voters), needed_votes(voters, quorum_of(genesis))
        )


def _check_votes(
    conn: sqlite3.Connection, block: Block, block_hash: bytes, reg: _Registration
) -> None:
    """Every stored vote is a valid accept by a registered voter, and there are enough.

    Stored votes are distinct per voter (the table's key), so after each passes, the commit
    rule reduces to counting them against the quorum.
    """
    count = 0
    for column_voter, data in stored_votes(conn, block.height):
        where = f"vote filed under {column_voter!r}"
        try:
            vote = Vote.from_bytes(data)
        except VoteError as exc:
            raise _Bad(block.height, f"{where}: {exc.reason}") from exc
        if vote.voter != column_voter:
            raise _Bad(block.height, f"{where} is signed as {vote.voter!r}")
        if vote.voter not in reg.required:
            raise _Bad(block.height, f"{where}: not a registered voter")
        try:
            verify_vote(reg.roster, vote, block_hash=block_hash)
        except VoteError as exc:
            raise _Bad(block.height, f"bad vote: {exc.reason}") from exc
        if not vote.accept:
            raise _Bad(block.height, f"stored vote by {vote.voter} rejects the block")
        count += 1
    if count < reg.needed:
        stored = {voter for voter, _ in stored_votes(conn, block.height)}
        absent = ", ".join(sorted(reg.required - stored))
        raise _Bad(
            block.height,
            f"commit rule not met: {count} of {reg.needed} needed "
            f"accept votes; no valid vote from {absent}",
        )


def _check_block(
    conn: sqlite3.Connection, row: StoredBlock, prev: Block | None, reg: _Registration | None
) -> Block:
    h = row.height
    if sha256(row.data) != row.hash:
        raise _Bad(h, "hash mismatch: the stored hash is not SHA-256 of the stored block")
    try:
        block = Block.from_bytes(row.data)  # canonical, so its hash is row.hash
    except BlockError as exc:
        raise _Bad(h, exc.reason) from exc
    if block.height != h:
        raise _Bad(h, f"block bytes say height {block.height}, stored at height {h}")
    if block.prev_hash != row.prev_hash:
        raise _Bad(h, "the stored prev_hash differs from the block's prev_hash")
    if prev is None or reg is None:
        if block.kind != GENESIS:
            raise _Bad(h, f"block 0 is a {block.kind!r} block, not genesis")
        if stored_votes(conn, 0):
            raise _Bad(0, "the genesis block has votes filed under it")
        return block
    try:
        rules.check_link(block, prev)
        rules.check_market_block(block, reg.genesis)
    except BlockError as exc:
        raise _Bad(h, exc.reason) from exc
    _check_votes(conn, block, row.hash, reg)
    return block


def _walk(conn: sqlite3.Connection, path: str, pinned_id: str | None) -> VerifyReport:
    genesis: Block | None = None
    reg: _Registration | None = None
    prev: Block | None = None
    checked = 0
    expected = 0
    try:
        for row in stored_blocks(conn):
            if row.height != expected:
                raise _Bad(expected, f"block {expected} is missing (next stored is {row.height})")
            block = _check_block(conn, row, prev, reg)
            if genesis is None:
                genesis = block
                reg = _Registration.of(genesis)
                if pinned_id is not None and genesis_id(genesis) != pinned_id.lower():
                    raise _Bad(0, f"genesis hash {genesis_id(genesis)} is not the pinned id")
            prev = block
            checked += 1
            expected += 1
        if genesis is None or prev is None:
            raise _Bad(0, "the ledger has no genesis block")
        orphan = conn.execute(
            "SELECT min(height) FROM votes WHERE height NOT IN (SELECT height FROM blocks)"
        ).fetchone()[0]
        if orphan is not None:
            raise _Bad(orphan, f"votes are filed under block {orphan}, which is not stored")
    except _Bad as bad:
        return VerifyReport(path, False, checked, bad_height=bad.height, reason=bad.reason)
    except sqlite3.DatabaseError as exc:
        return VerifyReport(
            path, False, checked, bad_height=expected, reason=f"storage error while reading: {exc}"
        )
    return VerifyReport(path, True, checked, genesis_id(genesis), prev.height, prev.hash_hex)


def verify_ledger(path: str | os.PathLike[str], *, ledger_id: str | None = None) -> VerifyReport:
    """Check every block, link, vote and signature of the ledger at ``path``.

    Returns a report (``ok`` or the first bad height and why); raises
    :class:`~privgrid.ledger.errors.LedgerFormatError` if ``path`` is not a readable ledger.
    ``ledger_id``: the hex genesis hash to pin the ledger to. Opens the file read-only and
    never writes the ledger (:mod:`privgrid.ledger.reading`).
    """
    target = Path(path)

    def check(conn: sqlite3.Connection) -> VerifyReport:
        check_format(conn, target)
        conn.execute("BEGIN")  # one read snapshot, even while a writer appends
        try:
            return _walk(conn, str(target), ledger_id)
        finally:
            conn.execute("ROLLBACK")

    return read_ledger_file(target, check)
