"""Fuzzed envelopes over a real Mosquitto into a live run: rejected, logged, and harmless.

An ``intruder`` broker account (tests/grid_harness.py) may publish anywhere in the run. During
a real run — every role a separate process, real keys — it records genuine traffic for a few
rounds, then sends thousands of malformed envelopes to an agent (S1), the LM and the MO, plus
broadcasts every participant receives (see :mod:`tests.test_fuzz_support` for the mix). Then:

- every message is rejected with one log line in each receiver's log: tagged messages are
  matched one by one, the rest counted per receiver; the channels' ``rejected`` counters in
  the results agree with the logs;
- no process crashes (every exit status 0), nobody is reported for a violation;
- the resident memory of S1, the LM and the MO grows by less than :data:`RSS_BOUND_KIB`;
- the run converges to the in-process reference of the same scenario (within 1e-6).

Plain mode takes the bulk (≥ 10,000 messages); one secure run (1024-bit test keys, the Paillier
LM leg) adds ciphertext cases: wrong lengths, zero, N, N², all-ones, above N², and proofs.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from privgrid.crypto.identity import Identity
from privgrid.keys import participants
from privgrid.market.setup import build_setup
from privgrid.scenario import LM_ID, MO_ID, load_scenario
from privgrid.solve import solve
from privgrid.wire.kinds import AGENT, LM, MO
from tests.grid_harness import Grid
from tests.test_fuzz_support import (
    Case,
    Delivery,
    Fuzzer,
    LogCounter,
    publish_all,
    read_envelope,
    rss_kib,
)

pytestmark = pytest.mark.timeout(600)

TARGETS = ("S1", LM_ID, MO_ID)
RSS_BOUND_KIB = 30 * 1024
#: Genuine messages of rounds before this are replayed; fuzzing starts REPLAY_BEFORE + 6 rounds
#: later, when every receiver has long forgotten them (duplicate detection keeps two rounds).
REPLAY_BEFORE = 6
#: The fuzzer keeps at most this many messages per receiver unprocessed (back-pressure).
WINDOW = 400
BATCH = 250


@dataclass
class FuzzReport:
    delivery: Delivery
    logs: LogCounter
    rss_before: dict[str, int]
    rss_after: dict[str, int]
    seconds: float

    def summary(self) -> dict[str, object]:
        growth = {p: self.rss_after[p] - self.rss_before[p] for p in self.rss_before}
        return {
            "messages": len(self.delivery.cases),
            "deliveries": sum(self.delivery.expected_wire.values())
            + sum(self.delivery.expected_round.values()),
            "rejected_by_the_wire": dict(self.logs.wire),
            "dropped_by_the_round_rule": dict(self.logs.round),
            "rss_growth_kib": growth,
            "seconds": round(self.seconds, 1),
            "categories": dict(self.delivery.categories),
        }


def current_round(grid: Grid) -> int:
    lines = grid.progress_file.read_text().splitlines() if grid.progress_file.exists() else []
    return json.loads(lines[-1])["round"] if lines else 0


async def wait_for_round(grid: Grid, round_: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while current_round(grid) < round_:
        if grid.processes[MO_ID].poll() is not None:
            raise AssertionError(f"the MO stopped before round {round_}")
        if time.monotonic() > deadline:
            raise AssertionError(f"round {round_} not reached within {timeout} s")
        await asyncio.sleep(0.05)


async def record(client: aiomqtt.Client, fuzzer: Fuzzer) -> None:
    """Keep genuine direct messages of the first rounds; learn Paillier moduli from the keys."""
    import msgpack

    async for message in client.messages:
        topic, payload = str(message.topic), bytes(message.payload)
        if "/keys/" in topic and payload:
            body = msgpack.unpackb(msgpack.unpackb(payload)["body"])
            if "paillier_n" in body:
                fuzzer.moduli[topic.rsplit("/", 1)[1]] = int.from_bytes(body["paillier_n"], "big")
            continue
        seen = read_envelope(topic, payload)
        if seen is not None and 1 <= seen.round < REPLAY_BEFORE:
            fuzzer.recorded.append(seen)


def mix(fuzzer: Fuzzer, plan: dict[str, int], broadcasts: int, secure: bool) -> list[Case]:
    """The cases of ``plan`` (per target) and the broadcasts, shuffled together."""
    cases: list[Case] = []
    for target, count in plan.items():
        cases += list(fuzzer.cases(target, count, before=REPLAY_BEFORE, secure=secure))
        cases += [fuzzer.oversized(target) for _ in range(2)]
    cases += [fuzzer.broadcast() for _ in range(broadcasts)]
    fuzzer.rng.shuffle(cases)
    return cases


async def fuzz_live(
    grid: Grid, plan: dict[str, int], broadcasts: int, *, secure: bool, seed: int
) -> FuzzReport:
    everyone = participants(grid.scenario)
    roles = {p: LM if p == LM_ID else MO if p == MO_ID else AGENT for p in everyone}
    keys = {p: Identity.load(grid.folder / "secrets" / f"{p}.key") for p in everyone}
    fuzzer = Fuzzer(grid.run, roles, keys, seed=seed)
    logs = LogCounter({p: grid.folder / "logs" / f"{p}.log" for p in everyone})
    async with grid.intruder_client(f"intruder-{grid.run}", max_inflight_messages=1000) as client:
        filters = [f"privgrid/{grid.run}/to/#", f"privgrid/{grid.run}/keys/+"]
        for topic in filters:
            await client.subscribe(topic, qos=0)
        recorder = asyncio.create_task(record(client, fuzzer))
        await wait_for_round(grid, REPLAY_BEFORE + 6)
        for topic in filters:
            await client.unsubscribe(topic)
        recorder.cancel()
        assert fuzzer.recorded, "no genuine traffic recorded"
        if secure:
            assert set(fuzzer.moduli) == set(everyone), "Paillier keys not announced"
        cases = mix(fuzzer, plan, broadcasts, secure)
        logs.baseline()
        pids = {p: grid.processes[p].pid for p in TARGETS}
        rss_before = {p: rss_kib(pid) for p, pid in pids.items()}
        started = time.monotonic()
        delivery = Delivery()
        for start in range(0, len(cases), BATCH):
            batch = cases[start : start + BATCH]
            for case in batch:
                delivery.add(case)
            await publish_all(client, batch)
            await catch_up(grid, delivery, logs, WINDOW)
        await catch_up(grid, delivery, logs, 0, timeout=120)
        seconds = time.monotonic() - started
        rss_after = {p: rss_kib(pid) for p, pid in pids.items()}
    return FuzzReport(delivery, logs, rss_before, rss_after, seconds)


async def catch_up(
    grid: Grid, delivery: Delivery, logs: LogCounter, window: int, timeout: float = 60
) -> None:
    """Wait until every receiver has logged all but ``window`` of what it was sent."""
    deadline = time.monotonic() + timeout
    while True:
        logs.poll()
        behind = {
            p: delivery.expected_wire[p] + delivery.expected_round[p] - logs.wire[p] - logs.round[p]
            for p in logs.logs
        }
        if max(behind.values()) <= window:
            return
        if grid.processes[MO_ID].poll() is not None:
            raise AssertionError(f"the run ended before the fuzz was processed: {behind}")
        if time.monotonic() > deadline:
            raise AssertionError(f"receivers did not catch up within {timeout} s: {behind}")
        await asyncio.sleep(0.05)


def finish(grid: Grid, timeout: float = 300) -> dict[str, int]:
    codes = {MO_ID: grid.wait(MO_ID, timeout=timeout)}
    for pid in participants(grid.scenario):
        codes[pid] = grid.wait(pid, timeout=60)
    return codes


def assert_all_rejected_and_converged(grid: Grid, report: FuzzReport) -> dict:
    codes = finish(grid)
    assert set(codes.values()) == {0}, (codes, grid.log(MO_ID)[-3000:])
    delivery, logs = report.delivery, report.logs
    logs.poll()  # anything logged after the fuzz (there must be nothing more)
    everyone = participants(grid.scenario)
    for pid in everyone:
        text = grid.log(pid)
        assert "Traceback" not in text, f"{pid} logged a traceback"
        indictments = VIOLATION_REPORT.findall(text)
        assert not indictments, f"{pid}: the fuzz must not indict anyone: {indictments[:3]}"
        assert logs.wire[pid] == delivery.expected_wire[pid], pid
        assert logs.round[pid] == delivery.expected_round[pid], pid
        assert logs.tags[pid] == delivery.expected_tags.get(pid, Counter()), pid
    results = grid.results()
    for pid in everyone:  # the channels' own counters agree with the log lines
        assert results["participants"][pid]["rejected"] == logs.wire[pid], pid
    assert results["violations"] == [] and results["error"] is None
    for pid in TARGETS:
        growth = report.rss_after[pid] - report.rss_before[pid]
        assert growth < RSS_BOUND_KIB, f"{pid} grew by {growth} KiB"
    reference = solve(build_setup(load_scenario(grid.scenario_file)))
    assert results["converged"] and results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        for key in ("power", "price", "charge"):
            assert abs(ours[key] - theirs[key]) <= 1e-6, (ours, theirs)
    assert results["ledger"]["committed"]
    return results


#: The lines a real indictment writes: an agent's or the LM's report (``Node.report_violation``)
#: and the MO's record of it. The bare word is no evidence: the fuzzer itself sends messages of
#: kind ``violation`` to S1 and the LM, which they drop as "violation may not be sent to S1".
VIOLATION_REPORT = re.compile(r"protocol violation by \S+|violation reported by \S+")


#: The fuzz is paced by messages, not rounds: its runs keep the published constant steps
#: (algorithm.md §5.1), whose run lengths it was sized for.
PUBLISHED_STEPS = {"steps": "fixed", "tau": 1.0, "alpha": 0.2}
# The run must outlast the fuzz: ε = 1e-6 gives about 300 rounds on the paper case.
LONG_RUN = {**PUBLISHED_STEPS, "rho": 1.0, "epsilon_p": 1e-6, "epsilon_lambda": 1e-6}
#: The secure fuzz is over by round ~25; ρ = 1.5 and ε = 1e-3 end the run sooner (tests/rounds.py).
SHORT_RUN = {**PUBLISHED_STEPS, "rho": 1.5, "epsilon_p": 1e-3, "epsilon_lambda": 1e-3}


def test_fuzzed_envelopes_are_rejected_and_the_run_still_converges(grid_factory):
    grid = grid_factory(intruder=True, privacy={"mode": "plain"}, market=LONG_RUN)
    grid.start_all()
    plan = {"S1": 3600, LM_ID: 2900, MO_ID: 2900}
    report = asyncio.run(fuzz_live(grid, plan, broadcasts=700, secure=False, seed=9))
    print(json.dumps({"plain": report.summary()}, indent=1))
    assert len(report.delivery.cases) >= 10_000
    assert_all_rejected_and_converged(grid, report)


def test_fuzzed_ciphertexts_and_proofs_are_rejected_in_a_secure_run(grid_factory):
    secure = {"mode": "paillier", "key_bits": 1024, "insecure_test_keys": True}
    grid = grid_factory(intruder=True, privacy={**secure, "lm_leg": "paillier"}, market=SHORT_RUN)
    grid.start_all()
    plan = {"S1": 700, LM_ID: 500, MO_ID: 300}
    report = asyncio.run(fuzz_live(grid, plan, broadcasts=150, secure=True, seed=10))
    print(json.dumps({"secure": report.summary()}, indent=1))
    assert report.delivery.categories["bad ciphertext outside the round"] >= 150
    results = assert_all_rejected_and_converged(grid, report)
    assert results["proofs"]["failed"] == 0


ROOT = Path(__file__).resolve().parent.parent
