"""The SQLite ledger: create/open, append rules (nothing half-written), tamper detection."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path

import pytest

from privgrid.ledger import (
    BlockError,
    ChainError,
    CommitRefused,
    Ledger,
    LedgerError,
    LedgerExistsError,
    LedgerFormatError,
    market_block,
    sign_vote,
    verify_ledger,
)
from privgrid.ledger.encoding import encode
from privgrid.ledger.votes import Vote
from privgrid.market.kkt import Check
from tests.test_ledger_support import (
    SMALL_LINES,
    build_ledger,
    make_parties,
    next_block,
    small_trades,
)


def _counts(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        return (
            conn.execute("SELECT count(*) FROM blocks").fetchone()[0],
            conn.execute("SELECT count(*) FROM votes").fetchone()[0],
        )


def _tamper(path: Path, sql: str, args: tuple = ()) -> None:
    """Edit the file behind the ledger's back (the triggers only stop honest mistakes)."""
    conn = sqlite3.connect(path)
    for name in ("blocks_no_update", "blocks_no_delete", "votes_no_update", "votes_no_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


# -- create and open
def test_create_open_and_read(tmp_path):
    path = tmp_path / "ledger.sqlite"
    parties = build_ledger(path, 3)
    assert sorted(os.listdir(tmp_path)) == ["ledger.sqlite"]  # no temporary files left
    with Ledger.open(path) as ledger:
        assert ledger.genesis == parties.genesis
        assert ledger.id == parties.genesis.hash.hex()
        assert ledger.height == 3 and ledger.head().height == 3
        assert [b.height for b in ledger.blocks()] == [0, 1, 2, 3]
        assert ledger.required_voters() == ("S1", "S2", "B1", "B2", "LM", "MO")
        assert ledger.quorum == "all"
        assert dict(ledger.roster()) == {p: k.public_b64 for p, k in parties.identities.items()}
        assert [v.voter for v in ledger.votes(2)] == sorted(parties.identities)
        assert ledger.votes(0) == []
        assert ledger.block(1).prev_hash == parties.genesis.hash
        with pytest.raises(LedgerError, match="no block at height 9"):
            ledger.block(9)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_create_never_overwrites(tmp_path):
    path = tmp_path / "ledger.sqlite"
    build_ledger(path, 1)
    before = path.read_bytes()
    with pytest.raises(LedgerExistsError):
        Ledger.create(path, make_parties().genesis)
    assert path.read_bytes() == before


def test_create_needs_a_genesis_block(tmp_path):
    block = market_block(1, bytes(32), "r", 1, [], [])
    with pytest.raises(BlockError, match="not genesis"):
        Ledger.create(tmp_path / "x.sqlite", block)
    assert not (tmp_path / "x.sqlite").exists()


@pytest.mark.parametrize("content", ["missing", "text", "empty", "other sqlite"])
def test_open_refuses_what_is_not_a_ledger(tmp_path, content):
    path = tmp_path / "file"
    if content == "text":
        path.write_text("hello, this is not a database\n" * 10)
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "other sqlite":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
    with pytest.raises(LedgerFormatError):
        Ledger.open(path)
    with pytest.raises(LedgerFormatError):
        verify_ledger(path)
    if content == "missing":
        assert not path.exists()  # opening never creates a file


def test_open_or_create_continues_the_same_registration(tmp_path):
    path = tmp_path / "ledger.sqlite"
    parties = make_parties()
    for run in range(3):  # three market sessions, three processes' worth of opens
        genesis = dataclasses.replace(parties.genesis, timestamp=parties.genesis.timestamp + run)
        with Ledger.open_or_create(path, genesis) as ledger:
            assert ledger.genesis == parties.genesis  # the first one is kept
            block = next_block(ledger, seed=run)
            ledger.append(block, parties.votes(block))
    report = verify_ledger(path)
    assert report.ok and report.head_height == 3
    with pytest.raises(LedgerError, match="different registration"):
        Ledger.open_or_create(path, make_parties().genesis)


# -- append: checked under the lock, all or nothing
@pytest.fixture
def book(tmp_path):
    path = tmp_path / "ledger.sqlite"
    parties = build_ledger(path, 2)
    ledger = Ledger.open(path)
    yield ledger, parties
    ledger.close()


def _refused(book, block, votes, error, match):
    ledger, _ = book
    before = _counts(ledger.path)
    with pytest.raises(error, match=match) as info:
        ledger.append(block, votes)
    assert _counts(ledger.path) == before  # nothing written
    assert verify_ledger(ledger.path).ok
    return info.value


def test_append_stores_the_block_and_only_counted_votes(book):
    ledger, parties = book
    block = next_block(ledger)
    votes = parties.votes(block)
    decision = ledger.append(block, [*votes, dataclasses.replace(votes[0], signature=bytes(64))])
    assert decision.commit and set(decision.invalid) == {"S1"}
    assert ledger.head() == block
    assert ledger.votes(block.height) == sorted(votes, key=lambda v: v.voter)


def test_append_refuses_wrong_height(book):
    ledger, parties = book
    head = ledger.head()
    block = market_block(head.height + 2, head.hash, "r", 1, small_trades(), SMALL_LINES)
    _refused(book, block, parties.votes(block), ChainError, "does not follow")
    old = market_block(head.height, head.prev_hash, "r", 1, small_trades(), SMALL_LINES)
    _refused(book, old, parties.votes(old), ChainError, "does not follow")


def test_append_refuses_wrong_prev_hash(book):
    ledger, parties = book
    head = ledger.head()
    block = market_block(head.height + 1, head.prev_hash, "r", 1, small_trades(), SMALL_LINES)
    _refused(book, block, parties.votes(block), ChainError, "broken link")


def test_append_refuses_a_rejected_block_with_reasons(book):
    ledger, parties = book
    block = next_block(ledger)
    votes = parties.votes(block, skip=("B2",))
    failed = Check("A3-stationarity", "trade B2-S1", 0.3, 1e-3)
    votes.append(sign_vote(parties.identities["B2"], "B2", block.hash, False, [failed]))
    error = _refused(book, block, votes, CommitRefused, "rejected by B2: A3-stationarity")
    assert not error.decision.commit and "B2" in error.decision.rejected


def test_append_refuses_a_missing_vote(book):
    ledger, parties = book
    block = next_block(ledger)
    _refused(book, block, parties.votes(block, skip=("MO",)), CommitRefused, "from MO")


def test_append_refuses_unregistered_agents_and_bad_settlement(book):
    ledger, parties = book
    head = ledger.head()
    trades = small_trades()
    trades[0]["seller"] = "S7"
    block = market_block(head.height + 1, head.hash, "r", 1, trades, SMALL_LINES)
    _refused(book, block, parties.votes(block), BlockError, "not a registered agent")
    block = next_block(ledger)
    body = dict(block.body)
    body["settlement"] = {**body["settlement"], "congestion_rent": 0}
    forged = dataclasses.replace(block, body=body)
    _refused(book, forged, parties.votes(forged), BlockError, "does not follow from")


def test_append_refuses_a_genesis_block(book):
    ledger, parties = book
    with pytest.raises(BlockError, match="only market blocks"):
        ledger.append(parties.genesis, [])


def test_sql_cannot_rewrite_history(book):
    ledger, _ = book
    with sqlite3.connect(ledger.path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE blocks SET run = 1 WHERE height = 1".replace("run", "data"))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM votes WHERE height = 1")


# -- verify: every stored byte matters
@pytest.fixture
def ledger_file(tmp_path):
    path = tmp_path / "ledger.sqlite"
    build_ledger(path, 3)
    return path


def _flip_each(
    path: Path, table: str, where: str, data: bytes, expect: int, stride: int = 1, start: int = 0
):
    """Flip one bit in each ``stride``-th byte of a stored blob; verify must name ``expect``."""
    for offset in range(start, len(data), stride):
        bad = bytearray(data)
        bad[offset] ^= 0x20
        _tamper(path, f"UPDATE {table} SET data = ? WHERE {where}", (bytes(bad),))
        report = verify_ledger(path)
        assert not report.ok and report.bad_height == expect, (offset, report)
    _tamper(path, f"UPDATE {table} SET data = ? WHERE {where}", (data,))
    assert verify_ledger(path).ok


@pytest.mark.parametrize(
    "height", [0, *(pytest.param(h, marks=pytest.mark.slow) for h in (2, 3))]  # long blocks
)
def test_flipping_any_byte_of_a_stored_block_names_it(ledger_file, height):
    """Every other byte (odd offsets for odd heights, even for even): every field region."""
    with Ledger.open(ledger_file) as ledger:
        data = ledger.block(height).to_bytes()
    _flip_each(ledger_file, "blocks", f"height = {height}", data, height, 2, height % 2)


def test_flipping_any_byte_of_a_stored_vote_names_its_block(ledger_file):
    with Ledger.open(ledger_file) as ledger:
        vote = ledger.votes(2)[3]
    _flip_each(ledger_file, "votes", f"height = 2 AND voter = '{vote.voter}'", vote.to_bytes(), 2)


@pytest.mark.parametrize(
    ("sql", "height", "reason"),
    [
        ("UPDATE blocks SET hash = zeroblob(32) WHERE height = 2", 2, "hash mismatch"),
        ("UPDATE blocks SET prev_hash = zeroblob(32) WHERE height = 1", 1, "stored prev_hash"),
        ("UPDATE blocks SET height = 7 WHERE height = 3", 3, "block 3 is missing"),
        (
            "UPDATE blocks SET (data, hash) = (SELECT data, hash FROM blocks WHERE height = 2)"
            " WHERE height = 3",
            3,
            "say height 2, stored at height 3",
        ),
        ("DELETE FROM blocks WHERE height = 2", 2, "missing"),
        ("DELETE FROM votes WHERE height = 3 AND voter = 'LM'", 3, "no valid vote from LM"),
        ("UPDATE votes SET voter = 'S2' WHERE height = 1 AND voter = 'S1'", 1, "UNIQUE"),
        ("UPDATE votes SET voter = 'S9' WHERE height = 1 AND voter = 'S1'", 1, "signed as"),
        ("INSERT INTO votes SELECT 9, voter, data FROM votes WHERE height = 1", 9, "not stored"),
        ("INSERT INTO votes SELECT 0, voter, data FROM votes WHERE height = 1", 0, "genesis"),
        (
            "UPDATE votes SET data = (SELECT data FROM votes WHERE height = 1 AND voter = 'B1')"
            " WHERE height = 2 AND voter = 'B1'",
            2,
            "is for block",
        ),
    ],
)
def test_structural_tampering_is_named(ledger_file, sql, height, reason):
    try:
        _tamper(ledger_file, sql)
    except sqlite3.IntegrityError as exc:
        assert reason in str(exc)  # the schema itself refuses this one
        return
    report = verify_ledger(ledger_file)
    assert not report.ok and report.bad_height == height and reason in report.reason, report


def test_a_vote_moved_to_another_voter_is_caught(ledger_file):
    _tamper(ledger_file, "DELETE FROM votes WHERE height = 1 AND voter = 'S2'")
    _tamper(ledger_file, "UPDATE votes SET voter = 'S2' WHERE height = 1 AND voter = 'S1'")
    report = verify_ledger(ledger_file)
    assert report.bad_height == 1 and "signed as 'S1'" in report.reason


def test_a_stored_reject_vote_is_caught(tmp_path):
    path = tmp_path / "ledger.sqlite"
    parties = build_ledger(path, 1)
    with Ledger.open(path) as ledger:
        block = ledger.block(1)
    failed = Check("A1-total-bounds", "agent S1", 1.0, 0.1)
    reject = sign_vote(parties.identities["S1"], "S1", block.hash, False, [failed])
    _tamper(
        path, "UPDATE votes SET data = ? WHERE height = 1 AND voter = 'S1'", (reject.to_bytes(),)
    )
    report = verify_ledger(path)
    assert report.bad_height == 1 and "rejects the block" in report.reason


def test_a_consistently_rewritten_block_fails_on_its_votes(ledger_file):
    """Rewriting a block and its hash column is caught: the votes signed the old hash."""
    with Ledger.open(ledger_file) as ledger:
        block = ledger.block(2)
    forged = market_block(
        2, block.prev_hash, block.run, 1, small_trades(9), SMALL_LINES, block.timestamp
    )
    _tamper(
        ledger_file,
        "UPDATE blocks SET data = ?, hash = ? WHERE height = 2",
        (forged.to_bytes(), forged.hash),
    )
    report = verify_ledger(ledger_file)
    assert report.bad_height == 2 and "is for block" in report.reason


def test_a_non_canonical_but_same_content_block_is_caught(ledger_file):
    """Same values, different bytes (an int in a wider format): hash column updated to match."""
    with Ledger.open(ledger_file) as ledger:
        data = ledger.block(1).to_bytes()
    wide = data.replace(b"\xa6rounds\xcc\xc3", b"\xa6rounds\xcd\x00\xc3")  # 195 as uint16
    assert wide != data
    import hashlib

    _tamper(
        ledger_file,
        "UPDATE blocks SET data = ?, hash = ? WHERE height = 1",
        (wide, hashlib.sha256(wide).digest()),
    )
    report = verify_ledger(ledger_file)
    assert report.bad_height == 1 and "non-canonical" in report.reason


def test_pinned_ledger_id(ledger_file):
    with Ledger.open(ledger_file) as ledger:
        real = ledger.id
    assert verify_ledger(ledger_file, ledger_id=real).ok
    report = verify_ledger(ledger_file, ledger_id="00" * 32)
    assert report.bad_height == 0 and "pinned" in report.reason


def test_flipping_block_bytes_in_the_raw_file_names_the_block(ledger_file):
    """The same, one level down: flip bytes of the stored block inside the database file."""
    with Ledger.open(ledger_file) as ledger:
        blobs = {h: ledger.block(h).to_bytes() for h in range(4)}
    original = ledger_file.read_bytes()
    for height, blob in blobs.items():
        start = original.find(blob)
        assert start >= 0 and original.find(blob, start + 1) < 0
        for offset in range(0, len(blob), max(1, len(blob) // 40)):
            raw = bytearray(original)
            raw[start + offset] ^= 0x04
            ledger_file.write_bytes(bytes(raw))
            report = verify_ledger(ledger_file)
            assert not report.ok and report.bad_height == height, (height, offset, report)
    ledger_file.write_bytes(original)
    assert verify_ledger(ledger_file).ok


def test_verify_report(ledger_file):
    report = verify_ledger(ledger_file)
    assert report.ok and report.blocks == 4 and report.head_height == 3
    assert report.summary().startswith("ledger OK: 4 blocks (heights 0-3)")
    with Ledger.open(ledger_file) as ledger:
        assert report.head_hash == ledger.head().hash_hex
        assert report.ledger_id == ledger.id


def test_a_foreign_vote_encoding_is_caught(ledger_file):
    with Ledger.open(ledger_file) as ledger:
        vote = ledger.votes(1)[0]
    fields = {
        "v": 1,
        "voter": vote.voter,
        "block": vote.block_hash,
        "accept": True,
        "failures": [],
        "sig": vote.signature,
        "extra": 1,
    }
    _tamper(
        ledger_file,
        "UPDATE votes SET data = ? WHERE height = 1 AND voter = ?",
        (encode(fields), vote.voter),
    )
    report = verify_ledger(ledger_file)
    assert report.bad_height == 1 and "unexpected" in report.reason
    assert isinstance(Vote.from_bytes(vote.to_bytes()), Vote)
