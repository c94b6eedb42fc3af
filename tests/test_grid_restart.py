"""Crash and restart: a participant killed with SIGKILL mid-run rejoins from its checkpoint.

Every process runs with ``--state`` (sealed checkpoints, :mod:`privgrid.state`) and the
scenario says ``timeouts.on_missing = "wait"``: the MO pauses the round clock while someone is
missing. The victim is started again with the same identity; the run must converge to the
same result as the undisturbed in-process negotiation (within 1e-6), and the logs must show
the pause, the rejoin and — for a partner of the victim — the redone pair computations.
"""

import time
from pathlib import Path

import pytest

from privgrid.keys import participants
from privgrid.ledger import Ledger, verify_ledger
from privgrid.market.setup import build_setup
from privgrid.scenario import LM_ID, MO_ID, load_scenario
from privgrid.solve import solve

pytestmark = pytest.mark.timeout(400)
ROOT = Path(__file__).resolve().parent.parent
TEST_KEYS = {"key_bits": 1024, "insecure_test_keys": True}
WAIT = {"on_missing": "wait", "missing": 60.0}


@pytest.fixture(scope="module")
def reference():
    return solve(build_setup(load_scenario(ROOT / "configs" / "paper.toml")))


def restartable(grid_factory, **overrides):
    grid = grid_factory(timeouts=WAIT, **overrides)
    for pid in participants(grid.scenario):
        grid.extra_args[pid] = ["--state", str(grid.folder / "state")]
    return grid


def finish(grid, timeout: float = 300) -> int:
    code = grid.wait(MO_ID, timeout=timeout)
    for pid in participants(grid.scenario):
        grid.wait(pid, timeout=60)
    return code


def kill_and_restart(grid, victim: str, at_round: int, *extra: str) -> None:
    grid.wait_for_round(at_round)
    grid.kill(victim)
    grid.wait(victim, timeout=10)
    # The broker publishes the victim's last will (held 2 s by each session, see
    # privgrid/wire/session.py WILL_HOLD); restart only once it has been seen.
    witness = "S1" if victim == MO_ID else MO_ID
    grid.wait_log(witness, f"{victim} left the run")
    grid.extra_args[victim] = [*grid.extra_args[victim], *extra]
    grid.start(victim)


def assert_same_result(grid, reference) -> dict:
    results = grid.results()
    assert results["converged"], results.get("error")
    assert results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        assert (ours["seller"], ours["buyer"]) == (theirs["seller"], theirs["buyer"])
        for key in ("power", "price", "charge"):
            assert abs(ours[key] - theirs[key]) <= 1e-6, (ours, theirs)
    for ours, theirs in zip(results["lines"], reference["lines"], strict=True):
        assert abs(ours["flow"] - theirs["flow"]) <= 1e-6
    assert results["kkt"]["passed"], results["kkt"]["failures"][:3]
    return results


@pytest.mark.parametrize("victim", ["S1", LM_ID, MO_ID])
def test_a_participant_killed_mid_run_rejoins_and_the_result_is_unchanged(
    grid_factory, reference, victim
):
    grid = restartable(grid_factory, privacy={"mode": "plain"})
    grid.start_all()
    kill_and_restart(grid, victim, 25)
    assert finish(grid) == 0, grid.log(MO_ID)[-3000:]
    assert_same_result(grid, reference)
    assert "resuming from checkpoint" in grid.log(victim)
    others = [p for p in participants(grid.scenario) if p != victim]
    assert all(f"{victim} rejoined" in grid.log(p) for p in others)
    if victim != MO_ID:
        assert "the round clock is paused" in grid.log(MO_ID)


@pytest.mark.parametrize(
    ("new_key", "threads"),
    [(False, 0), (True, 0), (True, 2)],
    ids=["same-paillier-key", "new-paillier-key", "new-paillier-key-crypto-threads"],
)
def test_a_secure_agent_restarts_with_its_key_or_a_new_one(
    grid_factory, reference, new_key, threads
):
    """With ``crypto_threads`` the partners have proof checks in flight on worker threads when
    the restart's resync arrives; those messages are handled first, in arrival order."""
    grid = restartable(grid_factory, privacy={**TEST_KEYS, "crypto_threads": threads})
    grid.start_all()
    kill_and_restart(grid, "S1", 20, *(["--new-paillier-key"] if new_key else []))
    assert finish(grid) == 0, grid.log(MO_ID)[-3000:]
    assert_same_result(grid, reference)
    log = grid.log("S1")
    assert "resuming from checkpoint" in log
    assert ("with a new Paillier key" in log) is new_key
    partner_logs = [grid.log(b) for b in ("B1", "B2", "B3")]
    assert any("redoing round" in text for text in partner_logs)
    assert any("new Paillier key" in text for text in partner_logs) is new_key


def test_a_restarted_mo_never_commits_a_block_twice(grid_factory):
    grid = restartable(grid_factory, privacy={"mode": "plain"})
    grid.start_all()
    assert finish(grid) == 0, grid.log(MO_ID)[-3000:]
    ledger_path = grid.folder / "ledger.sqlite"
    with Ledger.open(ledger_path) as ledger:
        assert ledger.height == 1
        head = ledger.head().hash_hex
    grid.start(MO_ID)  # as if it crashed after deciding: it resumes in its last phase
    assert grid.wait(MO_ID, timeout=60) == 0, grid.log(MO_ID)[-2000:]
    assert "is already in" in grid.log(MO_ID)
    with Ledger.open(ledger_path) as ledger:
        assert ledger.height == 1 and ledger.head().hash_hex == head


def test_an_mo_killed_after_the_votes_commits_the_block_once_when_restarted(grid_factory):
    """SIGKILL the MO the moment every vote is in (just before or during its commit); the
    restarted MO finishes the commit from its checkpoint: the ledger verifies and holds the
    block exactly once, with every participant's vote."""
    grid = restartable(grid_factory, privacy={"mode": "plain"})
    grid.start_all()
    log = grid.folder / "logs" / f"{MO_ID}.log"
    deadline = time.monotonic() + 240
    while "accepted: 9 of 9" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the MO never reached the commit"
        time.sleep(0.002)
    grid.kill(MO_ID)
    grid.wait(MO_ID, timeout=10)
    assert verify_ledger(grid.folder / "ledger.sqlite").ok
    grid.start(MO_ID)
    assert grid.wait(MO_ID, timeout=60) == 0, grid.log(MO_ID)[-2000:]
    assert "resuming" in grid.log(MO_ID)
    report = verify_ledger(grid.folder / "ledger.sqlite")
    assert report.ok and report.blocks == 2, report.summary()
    with Ledger.open(grid.folder / "ledger.sqlite") as ledger:
        assert ledger.height == 1
        assert {v.voter for v in ledger.votes(1)} == set(participants(grid.scenario))
    assert grid.results()["converged"]
