"""Checkpoints (privgrid/state.py): atomic, sealed to the participant and run, checked."""

import os
import stat
from pathlib import Path

import pytest

from privgrid.crypto.identity import Identity
from privgrid.state import CheckpointStore, StateError, scenario_digest

CONTENT = {"incarnation": 2, "node": {"completed": 7, "trades": [0.5, -1.25]}, "k": b"\x01\x02"}


@pytest.fixture
def identity() -> Identity:
    return Identity.generate()


def store(folder: Path, identity: Identity, run: str = "r1", me: str = "S1", scenario: str = "a"):
    return CheckpointStore(folder, run, me, identity, scenario)


def test_a_checkpoint_round_trips_exactly_and_is_private(tmp_path, identity):
    s = store(tmp_path, identity)
    assert s.load() is None  # nothing yet: a fresh start
    s.save(CONTENT)
    assert s.load() == CONTENT
    assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
    assert b"trades" not in s.path.read_bytes()  # sealed, not just encoded
    assert [p.name for p in s.path.parent.iterdir()] == ["S1.state"]  # no temporary left


def test_a_save_replaces_the_previous_checkpoint(tmp_path, identity):
    s = store(tmp_path, identity)
    s.save(CONTENT)
    s.save({**CONTENT, "incarnation": 3})
    assert s.load()["incarnation"] == 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"run": "r2"}, "does not open"),
        ({"me": "S2"}, "does not open"),
        ({"scenario": "b"}, "different scenario"),
    ],
)
def test_a_checkpoint_of_another_run_participant_or_scenario_is_refused(
    tmp_path, identity, change, reason
):
    store(tmp_path, identity).save(CONTENT)
    args = {"run": "r1", "me": "S1", "scenario": "a", **change}
    other = store(tmp_path, identity, **args)
    other.path.parent.mkdir(parents=True, exist_ok=True)
    if other.path != store(tmp_path, identity).path:  # same bytes under the other name
        other.path.write_bytes(store(tmp_path, identity).path.read_bytes())
    with pytest.raises(StateError, match=reason) as err:
        other.load()
    assert str(other.path) in str(err.value)


def test_another_identity_or_a_damaged_file_is_refused(tmp_path, identity):
    s = store(tmp_path, identity)
    s.save(CONTENT)
    with pytest.raises(StateError, match="does not open"):
        store(tmp_path, Identity.generate()).load()
    raw = bytearray(s.path.read_bytes())
    raw[-1] ^= 1
    s.path.write_bytes(bytes(raw))
    with pytest.raises(StateError, match="does not open"):
        s.load()
    s.path.write_bytes(b"short")
    with pytest.raises(StateError, match="truncated"):
        s.load()


def test_the_scenario_digest_depends_on_every_byte():
    assert scenario_digest(b"[scenario]\nseed = 1\n") != scenario_digest(b"[scenario]\nseed = 2\n")
