"""Duplicated, delayed and reordered messages never change the result (``PRIVGRID_FAULTS``).

The grid test runs a real scenario with every participant's outgoing traffic going through
the fault injector of :mod:`privgrid.wire.faults` (a real Mosquitto, real processes), and
compares with the in-process reference. The other tests pin down the injector itself and how
a bad ``PRIVGRID_FAULTS`` is refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from privgrid.keys import participants
from privgrid.market.setup import build_setup
from privgrid.scenario import MO_ID, load_scenario
from privgrid.solve import solve
from privgrid.wire.faults import ENV_FAULTS, FaultConfigError, FaultInjector, FaultSpec

ROOT = Path(__file__).resolve().parent.parent
#: Fewer rounds than the paper defaults (95 instead of 195): every hop may be delayed.
SHORT_RUN = {"rho": 1.5, "epsilon_p": 1e-3, "epsilon_lambda": 1e-3}
FAULTS = {"duplicate": 0.1, "delay": 0.1, "reorder": 0.1, "max_delay": 0.1, "seed": 7}
COUNTS = re.compile(r"message faults injected: (\{.*\})")


@pytest.mark.timeout(400)
def test_duplicated_delayed_and_reordered_messages_do_not_change_the_result(
    grid_factory, monkeypatch
):
    monkeypatch.setenv(ENV_FAULTS, json.dumps(FAULTS))  # every process the harness starts
    grid = grid_factory(privacy={"mode": "plain"}, market=SHORT_RUN)
    grid.start_all()
    code = grid.wait(MO_ID, timeout=300)
    for pid in participants(grid.scenario):
        assert grid.wait(pid, timeout=60) == 0, grid.log(pid)[-2000:]
    assert code == 0, grid.log(MO_ID)[-3000:]

    injected: Counter = Counter()
    for pid in participants(grid.scenario):
        log = grid.log(pid)
        assert "injecting message faults" in log and "Traceback" not in log, pid
        (counts,) = COUNTS.findall(log)
        injected.update(json.loads(counts.replace("'", '"')))
    # The faults really happened, on every kind of fault, and duplicates were recognised.
    assert min(injected[k] for k in ("duplicated", "delayed", "reordered")) >= 20, injected
    assert any("ignored a duplicate" in grid.log(p) for p in participants(grid.scenario))

    results = grid.results()
    reference = solve(build_setup(load_scenario(grid.scenario_file)))
    assert results["converged"] and results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        for key in ("power", "price", "charge"):
            assert abs(ours[key] - theirs[key]) <= 1e-6, (ours, theirs)
    assert results["violations"] == [] and results["error"] is None
    assert results["ledger"]["committed"]
    print(json.dumps({"faults injected": dict(injected), "rounds": results["rounds"]}))


def test_the_injector_delivers_every_message_at_least_once_and_leaks_no_task():
    """Order changes and copies appear; nothing is lost; flush leaves no task behind."""
    sent: list[str] = []

    async def send(topic: str, payload: bytes) -> None:
        await asyncio.sleep(0)
        sent.append(payload.decode())

    async def main() -> FaultInjector:
        spec = FaultSpec(duplicate=0.3, delay=0.3, reorder=0.3, max_delay=0.02, seed=3)
        injector = FaultInjector(spec, "S1", send, logging.LoggerAdapter(logging.getLogger()))
        for i in range(300):
            await injector.publish("t", str(i).encode())
        await injector.flush(timeout=5)
        return injector

    injector = asyncio.run(main())
    assert not injector.tasks
    assert set(sent) == {str(i) for i in range(300)}  # nothing lost
    assert len(sent) == 300 + injector.counts["duplicated"]  # copies are exact duplicates
    assert sent != sorted(sent, key=int)  # the order did change
    assert min(injector.counts.values()) > 30, injector.counts


def test_without_the_variable_there_are_no_faults(monkeypatch):
    monkeypatch.delenv(ENV_FAULTS, raising=False)
    assert FaultSpec.from_env() is None
    monkeypatch.setenv(ENV_FAULTS, "")
    assert FaultSpec.from_env() is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{duplicate: 0.1}", "not valid JSON"),
        ("[0.1]", "must be a JSON object"),
        ('{"duplicates": 0.1}', "unknown key(s) ['duplicates']"),
        ('{"delay": 1.5}', "delay is a probability, must be in [0, 1] (got 1.5)"),
        ('{"reorder": -0.1}', "reorder is a probability"),
        ('{"duplicate": "often"}', "duplicate must be a number, got 'often'"),
        ('{"delay": true}', "delay must be a number, got True"),
        ('{"max_delay": 0}', "max_delay must be in (0, 60] seconds (got 0)"),
        ('{"max_delay": 600}', "max_delay must be in (0, 60] seconds"),
        ('{"seed": 1.5}', "seed must be an integer, got 1.5"),
    ],
)
def test_a_bad_PRIVGRID_FAULTS_is_a_clear_error(raw, reason):
    with pytest.raises(FaultConfigError) as info:
        FaultSpec.parse(raw)
    assert str(info.value).startswith(ENV_FAULTS) and reason in str(info.value)


def test_a_role_process_refuses_a_bad_PRIVGRID_FAULTS_at_start(tmp_path):
    from privgrid.keys import init_keys

    init_keys(load_scenario(ROOT / "configs" / "paper.toml"), tmp_path / "secrets")
    env = {
        **os.environ,
        ENV_FAULTS: '{"delay": 2}',
        "PRIVGRID_BROKER_URL": "mqtt://127.0.0.1:9",  # never reached
    }
    cmd = [sys.executable, "-m", "line_manager", "--scenario", str(ROOT / "configs/paper.toml")]
    cmd += ["--keys", str(tmp_path / "secrets")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "PRIVGRID_FAULTS: delay is a probability, must be in [0, 1] (got 2)" in done.stderr
