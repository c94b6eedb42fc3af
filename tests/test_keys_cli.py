"""``privgrid keys init SCENARIO --out DIR`` as a user types it (the command, not the function).

The roster pins every participant's public key; each private key must be readable by its owner
only, whatever the user's umask, because anyone who can read it can sign as that participant.
"""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from privgrid.cli import main
from privgrid.crypto.identity import Identity, Roster

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "configs" / "paper.toml"
EVERYONE = ["S1", "S2", "S3", "S4", "B1", "B2", "B3", "LM", "MO"]


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable: the modes must not depend on it."""
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)


def keys_init(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["keys", "init", *args])
    return result.exit_code, result.output


def test_keys_init_writes_the_roster_and_one_private_key_per_participant(tmp_path, open_umask):
    out = tmp_path / "secrets"
    code, output = keys_init(str(PAPER), "--out", str(out))
    assert code == 0, output
    assert f"wrote {out / 'roster.json'} and 9 private keys" in output

    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["roster.json", *(f"{pid}.key" for pid in EVERYONE)])
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    roster = Roster.load(out / "roster.json")
    assert sorted(roster) == sorted(EVERYONE)
    for pid in EVERYONE:
        key = out / f"{pid}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, pid
        roster.check_identity(pid, Identity.load(key))  # the roster pins this very key
    assert len(set(roster.values())) == len(EVERYONE)  # no two participants share a key


def test_keys_init_keeps_valid_keys_and_force_makes_new_ones(tmp_path):
    out = tmp_path / "secrets"
    assert keys_init(str(PAPER), "--out", str(out))[0] == 0
    first = dict(Roster.load(out / "roster.json"))
    assert keys_init(str(PAPER), "--out", str(out))[0] == 0
    assert dict(Roster.load(out / "roster.json")) == first  # no silent rotation
    assert keys_init(str(PAPER), "--out", str(out), "--force")[0] == 0
    again = Roster.load(out / "roster.json")
    assert sorted(again) == sorted(first)
    assert all(again[pid] != first[pid] for pid in EVERYONE)
    for pid in EVERYONE:
        again.check_identity(pid, Identity.load(out / f"{pid}.key"))


def test_keys_init_rejects_an_invalid_scenario_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(PAPER.read_text().replace('id = "B3"', 'id = "S1"'))
    out = tmp_path / "secrets"
    code, output = keys_init(str(bad), "--out", str(out))
    assert code == 2, output
    assert "privgrid: error:" in output and "duplicate agent id 'S1'" in output
    assert not out.exists()
