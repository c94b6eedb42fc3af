"""``privgrid ledger show|verify``: output and exit codes (the click group, invoked directly)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from privgrid.ledger import Ledger
from privgrid.ledger.cli import ledger
from tests.test_ledger_support import build_ledger


@pytest.fixture
def ledger_file(tmp_path):
    path = tmp_path / "ledger.sqlite"
    build_ledger(path, 2)
    return path


def _run(*args: str):
    return CliRunner().invoke(ledger, [str(a) for a in args])


def test_show_prints_blocks_trades_and_settlement(ledger_file):
    result = _run("show", ledger_file)
    assert result.exit_code == 0, result.output
    out = result.output
    expected = [
        "block 0",
        "genesis",
        "block 2",
        "market",
        "run-2",
        "Registered participants",
        "Trades",
        "Settlement",
        "congestion rent to the LM",
        "S1",
        "B2",
        "2-3",
    ]
    for text in expected:
        assert text in out, text
    with Ledger.open(ledger_file) as book:
        assert book.head().hash_hex[:16] in out


def test_show_json(ledger_file):
    result = _run("show", ledger_file, "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    blocks = data["blocks"]
    assert [b["height"] for b in blocks] == [0, 1, 2]
    assert data["ledger_id"] == blocks[0]["hash"]
    market = blocks[2]
    assert market["prev_hash"] == blocks[1]["hash"]
    assert market["settlement"]["imbalance"] == 0.0
    assert {v["voter"] for v in market["votes"]} == {"S1", "S2", "B1", "B2", "LM", "MO"}
    trade = market["trades"][0]
    payment = market["settlement"]["trades"][0]["payment"]
    assert payment == pytest.approx(trade["power"] * trade["price"], abs=1e-9)


def test_verify_ok(ledger_file):
    result = _run("verify", ledger_file)
    assert result.exit_code == 0
    assert "ledger OK: 3 blocks (heights 0-2)" in result.output
    report = json.loads(_run("verify", ledger_file, "--json").output)
    assert report["ok"] and report["head_height"] == 2


def test_verify_names_the_first_bad_block(ledger_file):
    conn = sqlite3.connect(ledger_file)
    conn.execute("DROP TRIGGER blocks_no_update")
    data = conn.execute("SELECT data FROM blocks WHERE height = 1").fetchone()[0]
    flipped = bytes([data[0], *data[1:40], data[40] ^ 1, *data[41:]])
    conn.execute("UPDATE blocks SET data = ? WHERE height = 1", (flipped,))
    conn.commit()
    conn.close()
    result = _run("verify", ledger_file)
    assert result.exit_code == 1
    assert "ledger BAD at block 1: hash mismatch" in result.output


def test_verify_with_a_pinned_ledger_id(ledger_file):
    with Ledger.open(ledger_file) as book:
        real = book.id
    assert _run("verify", ledger_file, "--ledger-id", real).exit_code == 0
    result = _run("verify", ledger_file, "--ledger-id", "ab" * 32)
    assert result.exit_code == 1 and "block 0" in result.output


@pytest.mark.parametrize("command", ["show", "verify"])
def test_unreadable_paths_exit_2(tmp_path, command):
    missing = _run(command, tmp_path / "nope.sqlite")
    assert missing.exit_code == 2 and "nope.sqlite" in missing.output
    text = tmp_path / "notes.txt"
    text.write_text("not a ledger at all, just some words\n")
    result = _run(command, text)
    assert result.exit_code == 2 and "not a privgrid ledger" in result.output


def test_the_group_runs_as_a_program(ledger_file):
    code = "from privgrid.ledger.cli import ledger; ledger()"
    done = subprocess.run(
        [sys.executable, "-c", code, "verify", str(ledger_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "ledger OK" in done.stdout
