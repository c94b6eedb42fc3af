"""Batch verification and obfuscator pools in whole runs (#8), on the in-process bus
(tests/bus.py: the product's runtime and nodes, every message through the real channel; slow:
Paillier for everyone in one process).

1024-bit keys (``insecure_test_keys``) keep these fast. The lie in the first test is below the
convergence tolerance and the pair checks (I4) are off, so only the deferred proof check can
stop the run from committing a block computed with a false decryption.
"""

from pathlib import Path

import pytest

from privgrid.keys import participants
from privgrid.ledger import Ledger
from privgrid.market.setup import build_setup
from privgrid.scenario import MO_ID, load_scenario
from privgrid.solve import solve
from tests.test_grid_secure import TEST_KEYS

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
BATCH = {**TEST_KEYS, "verify": "batch"}


@pytest.fixture(scope="module")
def reference():
    """The in-process negotiation: every mode's run must reproduce it bit for bit."""
    return solve(build_setup(load_scenario(ROOT / "configs" / "paper.toml")))


def test_a_lying_decryptor_is_caught_by_batch_verification_before_the_block(bus_factory):
    grid = bus_factory(
        privacy={**BATCH, "pair_checks": False},
        agents={"S1": {"behaviour": "lying-decryptor", "lie": 2e-5, "lie_from_round": 4}},
    )
    assert grid.run(timeout=600) == 3, grid.log(MO_ID)[-3000:]
    results = grid.results()
    assert not results["converged"]
    assert "protocol violation by S1 in round 4" in results["error"]
    # Found when B's batch of S1's proofs is checked: at its size limit (128 pending, round
    # ≈ 131 here) or before the final report, whichever comes first — never at arrival.
    assert "batch verification" in results["error"]
    reports = results["violations"]
    assert reports and {v["offender"] for v in reports} == {"S1"}
    assert {v["round"] for v in reports} == {4}
    assert {v["reporter"] for v in reports} <= {"B1", "B2", "B3"}
    assert all("batch verification" in v["reason"] for v in reports)
    assert results["ledger"]["committed"] is False
    assert "block" not in results["ledger"]  # the MO never even proposed one
    assert Ledger.open(grid.folder / "ledger.sqlite").height == 0


def test_honest_batch_run_with_pools_converges_to_the_every_round_result(bus_factory, reference):
    grid = bus_factory(privacy={**BATCH, "pool_rounds": 4})
    assert grid.run(timeout=600) == 0, grid.log(MO_ID)[-3000:]
    results = grid.results()
    assert results["converged"] and results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        for key in ("power", "price", "charge"):  # the secure every-round run is bit-equal too
            assert abs(ours[key] - theirs[key]) <= 1e-6
    proofs = results["proofs"]
    assert proofs["made"] == proofs["verified"] == 24 * results["rounds"]
    assert proofs["failed"] == 0
    assert results["ledger"]["committed"]
    assert {"batch_verify_s", "offline_s"} <= set(results["crypto_phases"])
    for pid in participants(grid.scenario):
        assert grid.codes[pid] == 0
