"""Secure mode with real Paillier keys: on a real Mosquitto with real processes, and — where
a participant's protocol logic is what is tested (a lying decryptor, a second key) — on the
in-process bus (tests/bus.py: the product's runtime and nodes, every message through the real
channel).

1024-bit keys (``insecure_test_keys``) keep CI fast; one test runs the product's 2048 bits
for a few rounds.
"""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from privgrid.crypto import paillier as pl
from privgrid.crypto.identity import Identity
from privgrid.crypto.keyproof import key_proof_to_bytes, make_key_proof
from privgrid.keys import participants
from privgrid.market.setup import build_setup
from privgrid.scenario import MO_ID, load_scenario
from privgrid.solve import solve
from privgrid.wire import topics
from privgrid.wire.envelope import seal_envelope

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parent.parent
TEST_KEYS = {"mode": "paillier", "key_bits": 1024, "insecure_test_keys": True}


@pytest.fixture(scope="module")
def reference():
    return solve(build_setup(load_scenario(ROOT / "configs" / "paper.toml")))


def finish(grid, timeout=400) -> int:
    code = grid.wait(MO_ID, timeout=timeout)
    for pid in participants(grid.scenario):
        grid.wait(pid, timeout=60)
    return code


def test_secure_run_equals_plain_and_every_proof_verifies(grid_factory, reference):
    grid = grid_factory(privacy=TEST_KEYS)
    grid.start_all()
    assert finish(grid) == 0, grid.log(MO_ID)[-3000:]
    results = grid.results()
    assert results["mode"] == "paillier" and results["converged"]
    assert results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        for key in ("power", "price", "charge"):
            assert abs(ours[key] - theirs[key]) <= 1e-6
    proofs = results["proofs"]
    assert proofs["made"] == proofs["verified"] == 24 * results["rounds"]  # 12 pairs, 2 ways
    assert proofs["failed"] == 0
    assert set(results["crypto_phases"]) >= {"encrypt_s", "decrypt_prove_s", "verify_s"}
    assert results["kkt"]["passed"]
    # 1024 bits run only with insecure_test_keys, and every process says so in its log.
    warning = "WARNING using insecure 1024-bit Paillier test keys (privacy.insecure_test_keys)"
    for pid in participants(grid.scenario):
        assert warning in grid.log(pid), pid


@pytest.mark.parametrize(
    "command",
    [
        ["privgrid.cli", "run", "{scenario}", "--out", "{out}"],
        ["agents", "--scenario", "{scenario}", "--id", "S1", "--run", "r", "--keys", "{out}"],
    ],
    ids=["privgrid-run", "agent-process"],
)
def test_1024_bit_keys_without_the_test_flag_are_refused_with_a_clear_error(tmp_path, command):
    """Without ``insecure_test_keys`` a 1024-bit key size stops the command before anything
    starts (no broker, no key), with the reason and the way out in one line."""
    scenario = tmp_path / "paper-1024.toml"
    scenario.write_text(
        (ROOT / "configs" / "paper.toml").read_text() + "\n[privacy]\nkey_bits = 1024\n"
    )
    out = tmp_path / "out"
    args = [a.format(scenario=scenario, out=out) for a in command]
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        f"{scenario}: privacy.key_bits: key_bits = 1024 is below 2048; "
        "set insecure_test_keys = true to allow small test keys"
    ) in proc.stderr
    assert not out.exists()


def test_product_key_size_2048_for_a_few_rounds(grid_factory):
    grid = grid_factory(privacy={"mode": "paillier", "key_bits": 2048}, market={"max_rounds": 3})
    grid.start_all()
    assert finish(grid) == 1  # stopped at the round limit, not converged
    results = grid.results()
    assert results["rounds"] == 3
    assert results["proofs"] == {"made": 72, "verified": 72, "failed": 0}
    assert "insecure" not in grid.log("S1")


def test_lying_decryptor_is_caught_in_its_first_lying_round_and_the_run_aborts(bus_factory):
    grid = bus_factory(
        privacy=TEST_KEYS,
        agents={"S1": {"behaviour": "lying-decryptor", "lie": 0.02, "lie_from_round": 4}},
    )
    assert grid.run(timeout=400) == 3
    results = grid.results()
    assert "protocol violation by S1 in round 4" in results["error"]
    reports = results["violations"]
    assert reports and {v["offender"] for v in reports} == {"S1"}
    assert {v["round"] for v in reports} == {4}
    assert {v["reporter"] for v in reports} <= {"B1", "B2", "B3"}
    assert "decryption proof refused" in reports[0]["reason"]
    assert "protocol violation by S1: decryption proof refused" in grid.log("B1") + grid.log(
        "B2"
    ) + grid.log("B3")


@pytest.mark.slow  # a whole Paillier run in one process
def test_lying_decryptor_under_drop_pair_is_cut_out_and_the_rest_clears(bus_factory):
    grid = bus_factory(
        privacy={**TEST_KEYS, "on_violation": "drop_pair"},
        agents={
            "S1": {"behaviour": "lying-decryptor", "lie": 0.02, "lie_from_round": 4, "pmin": 0.0}
        },
    )
    assert grid.run(timeout=600) == 0, grid.log(MO_ID)[-3000:]
    results = grid.results()
    # Caught in the first round it lies, by the proof check, and only S1 is named: a drop
    # for any other reason, or a detection one round late, must fail here.
    reports = results["violations"]
    assert reports, "no violation was reported"
    assert {v["round"] for v in reports} == {4}
    assert {v["offender"] for v in reports} == {"S1"}
    assert {v["reporter"] for v in reports} == {"B1", "B2", "B3"}
    assert all("decryption proof refused" in v["reason"] for v in reports), reports
    assert sorted(map(tuple, results["dropped_pairs"])) == [
        ("B1", "S1"),
        ("B2", "S1"),
        ("B3", "S1"),
    ]
    assert all(t["power"] == 0 for t in results["trades"] if t["seller"] == "S1")
    assert results["converged"] and results["kkt"]["passed"]
    gap = abs(results["social_welfare"] - results["optimal_social_welfare"])
    assert gap <= 1e-4 * abs(results["optimal_social_welfare"])  # the optimum without S1's pairs


# --- key announcements ----------------------------------------------------------------------
def b1_announcement(identity: Identity, run: str, body: dict) -> bytes:
    """A key announcement in B1's name, signed with ``identity`` (B1's stolen key, or not)."""
    return seal_envelope(
        identity,
        kind="key",
        run=run,
        round=0,
        sender="B1",
        recipient="*",
        body=msgpack.packb(body),
    )


async def inject_bad_keys(grid) -> None:
    run = grid.run
    stolen = Identity.load(grid.folder / "secrets" / "B1.key")
    stranger = Identity.generate()
    small = pl.generate_keypair(512)
    right_size = pl.generate_keypair(1024)

    def announcement(identity, key, proof):
        body = {
            "x25519": b"\x07" * 32,
            "created": 0.0,
            "paillier_n": pl.public_key_to_bytes(key.public_key),
            "paillier_bits": key.bits,
            "key_proof": proof,
        }
        return b1_announcement(identity, run, body)

    bad = [
        announcement(
            stranger,
            right_size,
            key_proof_to_bytes(right_size.n, make_key_proof(right_size, run, "B1")),
        ),  # forged signature
        announcement(stolen, small, key_proof_to_bytes(small.n, make_key_proof(small, run, "B1"))),
        announcement(stolen, right_size, [b"\x01" * 128] * 8),  # key proof that fails
    ]
    async with grid.intruder_client() as c:
        for payload in bad:
            await c.publish(topics.keys(run, "B1"), payload, qos=1)
        await c.publish(topics.keys(run, "B1"), b"", qos=1, retain=True)


def test_bad_key_announcements_are_rejected_with_a_clear_log_line(grid_factory):
    grid = grid_factory(intruder=True, privacy=TEST_KEYS)
    grid.start_all(skip=("B1",))
    for pid in participants(grid.scenario):
        if pid != "B1":  # everyone else is subscribed before the intruder speaks
            grid.wait_log(pid, "connected to ")
    asyncio.run(inject_bad_keys(grid))
    grid.wait_log("S1", "/keys/B1: bad signature")
    grid.start("B1")
    assert finish(grid) == 0, grid.log(MO_ID)[-3000:]
    log = grid.log("S1")
    forged = f"dropped message from B1 on {topics.keys(grid.run, 'B1')}: bad signature: "
    assert forged + "signature does not verify under the given public key" in log
    # Each refusal with its own reason: a check that refused the wrong announcement (the
    # small key twice, say, with the proof check broken) must fail here.
    refused = "rejected the key announcement of B1: Paillier key refused: "
    assert refused + "announced key size 512 bits is below the minimum 1024" in log
    assert refused + "key proof root 1 does not verify: σ^N ≢ ρ (mod N)" in log
    assert log.count("rejected the key announcement of B1") == 2  # nothing else refused
    assert "accepted the key announcement of B1" in log


def announce_a_second_key(grid) -> None:
    """As B1 (with its stolen identity key), announce a second Paillier key mid-run.

    Everything about it is valid — signature, run, size, key proof — and the rest of B1's
    announcement is copied from the retained one, so the only fault is that it is a second,
    different key for the same (run, id) (protocol.md §2).
    """
    run = grid.run_id
    stolen = Identity.load(grid.folder / "secrets" / "B1.key")
    other = pl.generate_keypair(1024)
    first = msgpack.unpackb(grid.broker.retained[topics.keys(run, "B1")])
    body = msgpack.unpackb(first["body"])
    assert body["paillier_n"] != pl.public_key_to_bytes(other.public_key)
    body.update(
        paillier_n=pl.public_key_to_bytes(other.public_key),
        paillier_bits=other.bits,
        key_proof=key_proof_to_bytes(other.n, make_key_proof(other, run, "B1")),
    )
    grid.broker.publish(topics.keys(run, "B1"), b1_announcement(stolen, run, body))


def test_a_second_different_key_for_the_same_run_and_id_is_a_violation(bus_factory, reference):
    """B1 announces a second, valid Paillier key in round ≥ 3 (an intruder publishing into
    the bus once round 3 is done): everyone who reads it reports B1 with both announcements
    as evidence, and under ``on_violation = "abort"`` (the default) the run ends naming B1."""
    grid = bus_factory(privacy=TEST_KEYS)
    grid.after_round(3, lambda: announce_a_second_key(grid))
    assert grid.run(timeout=400) == 3, grid.log(MO_ID)[-3000:]
    results = grid.results()
    reason = f"announced a second, different key in run {grid.run_id}; the first is kept"
    assert not results["converged"]
    assert f"protocol violation by B1 in round 0: {reason}" in results["error"]
    reports = results["violations"]
    assert reports, "no violation was reported"
    assert {v["offender"] for v in reports} == {"B1"}
    assert {v["reason"] for v in reports} == {reason}
    # The evidence is both signed announcements, the first and the second; each process that
    # reads B1's announcements (every one but B1 with the masked LM leg) logs it.
    assert {v["evidence"] for v in reports} == {2}
    readers = [p for p in participants(grid.scenario) if p not in ("B1", MO_ID)]
    assert readers
    for pid in readers:
        assert f"protocol violation by B1: {reason}; signed evidence (2 messages" in grid.log(pid)
    assert 3 <= results["rounds"] < reference["rounds"]  # stopped early, not at convergence


async def announce_bad_rejoins(grid) -> None:
    """As B1 (stolen identity key), announce two restarts B1 never made: one with another
    X25519 key (a restart that lost its checkpoint), one with a new Paillier key whose key
    proof fails. Neither is retained, so B1's real announcement stays the broker's copy."""
    run = grid.run
    stolen = Identity.load(grid.folder / "secrets" / "B1.key")
    other = pl.generate_keypair(1024)
    async with grid.intruder_client() as c:
        await c.subscribe(topics.keys(run, "B1"), qos=1)
        async for message in c.messages:  # the retained announcement comes first
            body = msgpack.unpackb(msgpack.unpackb(bytes(message.payload))["body"])
            break
        lost = {**body, "incarnation": 1, "completed": 2, "x25519": b"\x07" * 32}
        bad_proof = {
            **body,
            "incarnation": 1,
            "completed": 2,
            "paillier_n": pl.public_key_to_bytes(other.public_key),
            "paillier_bits": other.bits,
            "key_proof": [b"\x01" * 128] * 8,
        }
        for forged in (lost, bad_proof):
            await c.publish(topics.keys(run, "B1"), b1_announcement(stolen, run, forged), qos=1)


def test_rejoins_without_the_checkpoint_or_with_a_bad_new_key_are_refused(grid_factory, reference):
    """A rejoin is accepted only from the checkpointed agreement key and with a new Paillier
    key only if it passes every announcement check; refused ones change nothing: the run
    converges to the undisturbed result."""
    grid = grid_factory(intruder=True, privacy=TEST_KEYS)
    grid.start_all()
    grid.wait_for_round(3, timeout=300)
    asyncio.run(announce_bad_rejoins(grid))
    assert finish(grid) == 0, grid.log(MO_ID)[-3000:]
    results = grid.results()
    assert results["converged"] and results["rounds"] == reference["rounds"]
    assert results["violations"] == []
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        for key in ("power", "price", "charge"):
            assert abs(ours[key] - theirs[key]) <= 1e-6
    log = grid.log("S1")  # a partner of B1
    assert "refused the rejoin of B1: it lost its checkpointed agreement key" in log
    assert "rejected the rejoin of B1: Paillier key refused: key proof root 1 does not" in log
    assert "B1 rejoined" not in log


@pytest.mark.grid
def test_crypto_threads_with_agents_sharing_a_process_give_the_same_result(tmp_path, reference):
    """``crypto_threads = 2`` and all seven agents in one process (one shared pool of worker
    threads): the heavy steps run on the workers, and the run equals the in-process one."""
    scenario = tmp_path / "paper-threads.toml"
    privacy = "".join(f"{k} = {str(v).lower()}\n" for k, v in TEST_KEYS.items() if k != "mode")
    scenario.write_text(
        (ROOT / "configs" / "paper.toml").read_text()
        + f'\n[privacy]\nmode = "paillier"\n{privacy}crypto_threads = 2\n'
    )
    run = [sys.executable, "-m", "privgrid.cli", "run", str(scenario), "--json"]
    proc = subprocess.run(
        [*run, "--agents-per-process", "7", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert results["converged"] and results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        for key in ("power", "price", "charge"):
            assert abs(ours[key] - theirs[key]) <= 1e-6
    proofs = results["proofs"]
    assert proofs["made"] == proofs["verified"] == 24 * results["rounds"]
    agents = [results["participants"][a] for a in ("S1", "S2", "S3", "S4", "B1", "B2", "B3")]
    assert len({a["pid"] for a in agents}) == 1
    # Per round and direction, two heavy steps (decrypt + prove, check); messages that come
    # before their round has begun are handled inline, the rest on the workers.
    jobs = sum(a.get("worker_jobs", 0) for a in agents)
    assert jobs >= 0.5 * 2 * 24 * results["rounds"], jobs
