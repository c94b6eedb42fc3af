"""The MO of a day restarted from its checkpoint (issue #17, docs/reliability.md): every
participant of a short plain day wired by hand (tests/day_bus.py: the product's day layers,
real channels, the MO's real recorder and ledger, no broker), the MO crashed at chosen points
of interval 1 and restarted from the last checkpoint it saved — points a SIGKILL over the wire
hits only by chance (tests/test_grid_day.py kills it for real).

Each crashed day must record every interval as the uninterrupted day does: the same rounds,
the same final reports, one block per interval (never twice), and a ``protocol.json`` whose
clocks are the interval's own.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import tomli_w

from privgrid.feeder.day import prepare_day, prepare_folder
from privgrid.feeder.wire import write_plan
from privgrid.ledger.verify import verify_ledger
from privgrid.protocol_record import ProtocolRecord
from privgrid.roles.market_operator.node import OperatorNode, Phase
from privgrid.runtime import EXIT_OK
from privgrid.scenario import MO_ID
from privgrid.wire.channel import Message
from privgrid.wire.kinds import AgentFinal, AgentResiduals, BlockVote, Closed
from tests.day_bus import DayBus

ROOT = Path(__file__).resolve().parent.parent
INTERVALS = 2


def _night(folder: Path) -> Path:
    """The run folder of two night intervals of day-rural1 in plain mode, ready to run."""
    data = tomllib.loads((ROOT / "configs" / "day-rural1.toml").read_text())
    data["day"].update(start="2016-06-21T02:00", intervals=INTERVALS)
    data["privacy"] = {"mode": "plain"}
    data["timeouts"] = {"on_missing": "wait"}
    folder.mkdir(parents=True)
    scenario = folder / "day.toml"
    scenario.write_text(tomli_w.dumps(data))
    prepared = prepare_day(scenario)
    run = folder / "run"
    write_plan(prepared, run, prepare_folder(prepared, run))
    return run


def _records(run: Path) -> list[ProtocolRecord]:
    return [ProtocolRecord.read(run / "intervals" / f"{i:04d}") for i in range(1, INTERVALS + 1)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[ProtocolRecord]:
    """The uninterrupted day's records."""
    run = _night(tmp_path_factory.mktemp("mo-restart") / "reference")
    bus = DayBus(run)
    bus.run()
    assert bus.mo.exit_code == EXIT_OK
    return _records(run)


#: Where the MO crashes: given the bus and the message about to reach the MO, whether now.
Crash = Callable[[DayBus, Message], bool]


def _interval_1(bus: DayBus) -> OperatorNode | None:
    node = bus.mo.node
    return node if node is not None and bus.mo.index == 1 else None


def _in_round_5(bus: DayBus, message: Message) -> bool:
    node = _interval_1(bus)
    return node is not None and node.rounds == 5 and isinstance(message.body, AgentResiduals)


def _at_the_third_final_report(bus: DayBus, message: Message) -> bool:
    node = _interval_1(bus)
    finals = 0 if node is None else len(node.outcome.finals)
    return finals == 2 and isinstance(message.body, AgentFinal)


def _as_the_fifth_vote_arrives(bus: DayBus, message: Message) -> bool:
    node = _interval_1(bus)
    votes = 0 if node is None else len(node.outcome.votes)
    return votes == 5 and isinstance(message.body, BlockVote)


@pytest.mark.parametrize(
    "crash",
    [_in_round_5, _at_the_third_final_report, _as_the_fifth_vote_arrives],
    ids=["running", "finishing", "voting"],
)
def test_an_mo_restarted_within_an_interval_records_the_day_unchanged(
    reference, tmp_path, crash: Crash
):
    """The MO dies as a message reaches it (the message is lost with it) and restarts from
    its last checkpoint in the same interval: the parties send again what it lost."""
    run = _night(tmp_path / "day")
    bus = DayBus(run)
    crashes: list[Phase] = []

    def intercept(message: Message) -> bool:
        if bus.recipient != MO_ID or crashes or not crash(bus, message):
            return False
        node = bus.mo.node
        assert node is not None
        crashes.append(node.phase)
        bus.restart_mo()
        return True

    bus.run(intercept)
    assert len(crashes) == 1
    _assert_the_same_day(bus, run, reference)


def test_an_mo_crashed_after_an_intervals_commit_records_it_once_and_goes_on(reference, tmp_path):
    """The MO handles interval 1's last vote — commits block 1, writes the interval's
    protocol.json, begins interval 2 — and dies before the checkpoint that would announce
    interval 2 (nothing it made after the last vote left the process). Restarted from the
    checkpoint before the last vote, it is back in interval 1's vote: the votes come again,
    the block is not appended twice, the record is written again, and the day goes on."""
    run = _night(tmp_path / "day")
    bus = DayBus(run)
    crashed: list[int] = []

    def intercept(message: Message) -> bool:
        node = _interval_1(bus)
        if bus.recipient != MO_ID or crashed or node is None or node.proposal is None:
            return False
        if not isinstance(message.body, BlockVote) or node.phase != Phase.VOTING:
            return False
        if set(node.proposal.voters) - set(node.outcome.votes) != {message.sender}:
            return False
        lost = bus.mo.handle(message, 1.0)  # the last vote: the commit and the record
        assert bus.mo.index == 2 and lost  # interval 2 begun, its broadcasts not yet sent
        assert bus.ledger.height == 1
        assert (run / "intervals" / "0001" / "protocol.json").is_file()
        crashed.append(bus.ledger.height)
        restarted = bus.restart_mo()
        assert restarted.index == 1 and restarted.node is not None
        assert restarted.node.phase == Phase.VOTING
        return True

    bus.run(intercept)
    assert crashed == [1]
    _assert_the_same_day(bus, run, reference)


def test_an_mo_restarted_after_closing_the_day_says_closed_again_and_nothing_more(
    reference, tmp_path
):
    """Regression (issue #17): the MO checkpoints right before its ``closed`` broadcast. An
    MO killed after it, restarted, resumed the last interval and waited for the participants'
    announcements — but they had heard ``closed`` and left: no announcement within the start
    timeout, exit 3, the cleared day reported failed. Restored from that checkpoint it now
    is already finished with the day's status, and its last words (sent without waiting for
    anyone) are the same ``closed`` again; no block or record is touched."""
    run = _night(tmp_path / "day")
    bus = DayBus(run)
    bus.run()
    closing = bus.mo.closed_message
    assert bus.mo.exit_code == EXIT_OK and closing is not None
    height, records = bus.ledger.height, _records(run)
    restarted = bus._operator()  # a new process's node, restored from the last checkpoint
    restarted.restore(msgpack.unpackb(bus.snapshots[MO_ID], raw=False))
    assert restarted.exit_code == EXIT_OK and restarted.error is None
    words = restarted.last_words()
    assert [w.to_state() for w in words] == [closing.to_state()]
    assert isinstance(words[0].body, Closed) and words[0].body.committed
    assert bus.ledger.height == height == INTERVALS and _records(run) == records
    _assert_the_same_day(bus, run, reference)


def _assert_the_same_day(bus: DayBus, run: Path, reference: list[ProtocolRecord]) -> None:
    assert bus.mo.exit_code == EXIT_OK, bus.mo.error
    records = _records(run)
    for ours, theirs in zip(records, reference, strict=True):
        assert ours.error is None and ours.converged
        assert ours.rounds == theirs.rounds
        assert [r.round for r in ours.trace] == [r.round for r in theirs.trace]
        assert ours.finals == theirs.finals
        assert ours.lm_final == theirs.lm_final
        assert ours.ledger is not None and ours.ledger["committed"]
        clocks = ours.clocks
        assert clocks is not None
        assert 0.0 < clocks.negotiation_s <= clocks.total_s
        assert 0.0 <= clocks.finish_s <= clocks.total_s
    assert [r.ledger["height"] for r in records if r.ledger] == list(range(1, INTERVALS + 1))
    report = verify_ledger(run / "ledger.sqlite")
    assert report.ok and report.blocks == INTERVALS + 1, report.summary()


def _with_pause(run: Path, seconds: float) -> None:
    plan = json.loads((run / "plan.json").read_text())
    plan["pause_s"] = seconds
    (run / "plan.json").write_text(json.dumps(plan))


@pytest.mark.parametrize("restart", [False, True], ids=["paused", "restarted-in-the-pause"])
def test_a_pause_opens_the_next_interval_only_when_it_is_over(reference, tmp_path, restart):
    """``[day] pause_s``: after interval 1's block the MO waits, ticking, until the pause is
    over before it opens interval 2 (idle time for the participants' pools); an MO restarted
    during the pause resumes interval 1's vote (its last checkpoint), ends it again and
    pauses afresh. The day is the back-to-back
    day either way."""
    run = _night(tmp_path / "day")
    _with_pause(run, 5.0)
    bus = DayBus(run)
    bus.run(now=1.0)
    assert bus.mo.index == 1 and bus.mo.pending is not None and bus.mo.exit_code is None
    assert bus.ledger.height == 1
    start = 1.0
    if restart:
        start = 3.0
        bus.restart_mo(now=start)  # back in interval 1's vote (its last checkpoint)
        bus.run(now=start)
        assert bus.mo.index == 1 and bus.mo.pending is not None
        assert bus.ledger.height == 1  # the block is not appended again
    assert bus.mo.tick(start + 4.9) == []  # not yet
    bus.post(MO_ID, bus.mo.tick(start + 5.0))
    assert bus.mo.index == 2 and bus.mo.pending is None
    bus.run(now=start + 5.0)
    _assert_the_same_day(bus, run, reference)
