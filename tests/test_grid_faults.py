"""Bad messages and failing participants during a run, on the in-process bus (tests/bus.py):
every participant the product's runtime and node, every message through the real channel.

The broker is untrusted: an intruder may write anywhere in the run (here it publishes straight
into the bus), and the participants must still drop everything that is not a correctly
signed, sealed, in-protocol message — with one log line naming the claimed sender and the
reason — and reach the same result as an undisturbed run. A participant that dies is killed
as by SIGKILL: it stops, and the broker publishes its last will. (The same failures through
``privgrid run``, real processes and SIGKILL: tests/test_run_failures.py.)
"""

import json
import os
import time
from datetime import datetime
from pathlib import Path

import msgpack

from privgrid.crypto.identity import Identity
from privgrid.keys import participants
from privgrid.ledger import Ledger
from privgrid.market.setup import build_setup
from privgrid.scenario import MO_ID, load_scenario
from privgrid.solve import solve
from privgrid.wire import topics
from privgrid.wire.envelope import seal_envelope
from privgrid.wire.session import WILL_HOLD
from tests.rounds import ROUNDS

ROOT = Path(__file__).resolve().parent.parent


class RecordThenInject:
    """The intruder, watching every publish: record the first share S1 receives, wait for the
    MO's broadcast of ``after_round``, then inject bad messages (once)."""

    def __init__(self, grid, after_round: int) -> None:
        self.grid = grid
        self.after_round = after_round
        self.recorded: tuple[str, bytes] | None = None
        self.injected = False

    def __call__(self, topic: str, payload: bytes) -> None:
        run = self.grid.run_id
        if self.recorded is None and topic == topics.direct(run, "S1", "B1", "share"):
            self.recorded = (topic, payload)
        if self.injected or topic != topics.broadcast(run, MO_ID, "round"):
            return
        now = msgpack.unpackb(payload)["round"]
        if now < self.after_round:
            return
        assert self.recorded is not None
        self.injected = True
        for topic_, payload_ in self.injections(now):
            self.grid.broker.publish(topic_, payload_)

    def injections(self, now: int) -> list[tuple[str, bytes]]:
        run = self.grid.run_id
        stranger = Identity.generate()
        b1 = Identity.load(self.grid.folder / "secrets" / "B1.key")  # stolen, garbage inside
        forged = seal_envelope(
            stranger,
            kind="share",
            run=run,
            round=now,
            sender="B1",
            recipient="S1",
            body=b"\x00" * 40,
        )
        outsider = seal_envelope(
            stranger,
            kind="share",
            run=run,
            round=now,
            sender="X9",
            recipient="S1",
            body=b"\x00" * 40,
        )
        # Validly signed (stolen key) but unopenable. For a round B1 has not reached yet: had
        # B1's own share of that round come first, this would be a conflicting second share
        # signed by B1 — a violation that rightly stops the run, and a race with B1 to lose.
        garbage_body = seal_envelope(
            b1,
            kind="share",
            run=run,
            round=now + 50,
            sender="B1",
            recipient="S1",
            body=os.urandom(60),
        )
        return [
            (topics.direct(run, "S1", "B1", "share"), forged),
            (topics.direct(run, "S1", "X9", "share"), outsider),
            self.recorded,  # a replay of round 1's share from B1
            (topics.direct(run, "S1", "B1", "share"), b"\x93not-msgpack\xc1"),
            (topics.direct(run, "S1", "B1", "share"), garbage_body),
        ]


def test_forged_foreign_replayed_and_malformed_messages_are_dropped(bus_factory):
    grid = bus_factory(privacy={"mode": "plain"})
    intruder = RecordThenInject(grid, after_round=5)
    grid.broker.watchers.append(intruder)
    assert grid.run() == 0, grid.log(MO_ID)[-2000:]
    assert intruder.injected
    log = grid.log("S1")
    assert "dropped message from B1 on privgrid/" in log and "bad signature" in log
    assert "dropped message from X9" in log and "sender is not in the roster" in log
    assert "dropped share from B1: round 1 is not the current round" in log
    assert "dropped message from B1 on privgrid/" in log and "not a msgpack envelope" in log
    assert "cannot open sealed share: authentication failed" in log
    reference = solve(build_setup(load_scenario(ROOT / "configs" / "paper.toml")))
    results = grid.results()
    assert results["converged"] and results["rounds"] == reference["rounds"] == ROUNDS["paper"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        assert ours["power"] == theirs["power"] and ours["price"] == theirs["price"]


def test_missing_participant_at_start_fails_naming_it(bus_factory):
    """B3 never starts: the MO gives up when ``timeouts.start`` (4 s: a real wait, it is the
    timeout under test) has run out on its own clock (from its connection, within 3 s of
    slack), at most 10 s after everyone else started, naming B3; times from the MO's log
    stamps, since writing the results after giving up is not part of the timeout."""
    timeout = 4.0
    grid = bus_factory(privacy={"mode": "plain"}, timeouts={"start": timeout})
    started = time.time()
    assert grid.run(timeout=timeout + 30, skip=("B3",)) == 3
    log = grid.log(MO_ID)
    assert "no key announcement from B3 within 4 s" in log
    connected = logged_at(log, "connected to mqtt://")
    gave_up = logged_at(log, "no key announcement from B3")
    assert timeout <= gave_up - connected < timeout + 3, gave_up - connected
    assert gave_up - started < timeout + 10, gave_up - started
    for pid in participants(grid.scenario):
        if pid != "B3":  # nobody hangs (run() returned: everyone ended)
            assert grid.codes[pid] != 0, pid


def test_participant_dying_mid_run_stops_the_run_naming_it(bus_factory):
    grid = bus_factory(privacy={"mode": "plain"})
    grid.after_round(10, lambda: grid.kill("S2"))
    assert grid.run(timeout=120) == 3  # returns once everyone has ended: nobody hangs
    assert "participant S2 left the run during round" in grid.log(MO_ID)
    results = grid.results()
    assert results["converged"] is False and "S2" in results["error"]


def logged_at(log: str, text: str) -> float:
    """The time stamp (Unix seconds) of the first log line containing ``text``."""
    line = next(line for line in log.splitlines() if text in line)
    return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()


def test_a_participant_that_never_rejoins_under_on_missing_wait_stops_the_run_naming_it(
    bus_factory,
):
    """``timeouts.on_missing = "wait"``, ``missing = 3``: S2 is killed mid-run and never
    restarted. The MO pauses the round clock when S2's last will arrives (a real broker's
    sessions hold it ``WILL_HOLD`` s; the bus delivers it at once), waits ``missing`` s (a real
    wait: the timeout under test), then stops the run naming S2; nobody hangs and no block is
    committed.

    Times come from the MO's log stamps, not from its exit. The pause must last at least
    ``missing`` (it did wait) and at most ``missing`` + 5 s (the clock is checked a few times a
    second; slack for load); the stop must come within ``WILL_HOLD + missing`` + 15 s of the
    kill."""
    missing = 3.0
    grid = bus_factory(
        privacy={"mode": "plain"}, timeouts={"on_missing": "wait", "missing": missing}
    )
    grid.after_round(10, lambda: grid.kill("S2"))
    assert grid.run(timeout=90) == 3, grid.log(MO_ID)[-2000:]  # everyone ended: nobody hangs
    killed = grid.killed_at["S2"]

    log = grid.log(MO_ID)
    error = "participant S2 left the run during round"
    rejoin = f"did not rejoin within {missing:g} s"
    paused = logged_at(log, "S2 left the run during round")
    stopped = logged_at(log, rejoin)
    assert "the round clock is paused for up to 3 s" in log and error in log
    assert missing <= stopped - paused < missing + 5, (paused, stopped)
    # Log stamps are cut to the millisecond: the pause may carry the kill's millisecond.
    assert killed < paused + 0.001, (killed, paused)
    assert stopped - killed < WILL_HOLD + missing + 15, (killed, stopped)
    results = grid.results()
    assert results["converged"] is False
    assert error in results["error"] and rejoin in results["error"]
    assert results["ledger"]["committed"] is False
    assert Ledger.open(grid.folder / "ledger.sqlite").height == 0
    figures = {"kill to stop (s)": stopped - killed, "pause (s)": stopped - paused}
    print(json.dumps({k: round(v, 2) for k, v in figures.items()} | {"round": results["rounds"]}))
