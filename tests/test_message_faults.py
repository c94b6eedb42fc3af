"""Duplicated, delayed and reordered messages never change the result (``PRIVGRID_FAULTS``).

The first test runs a real scenario with every participant's outgoing traffic going through
the fault injector of :mod:`privgrid.wire.faults` — the one ``PRIVGRID_FAULTS`` puts between a
session and the broker — on the in-process bus (tests/bus.py: the product's runtime and nodes,
every message through the real channel), and compares with the in-process reference. The
other tests pin down the injector itself, how a bad ``PRIVGRID_FAULTS`` is refused, and the
round rule of each role, message by message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tomllib
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

import pytest

from privgrid.keys import participants
from privgrid.logs import ParticipantLog
from privgrid.market.fixedpoint import encode_scalar
from privgrid.market.setup import build_setup, played_cost
from privgrid.privacy import PrivacyMode, make_mode
from privgrid.roles.agent.node import AgentNode
from privgrid.roles.line_manager.node import LineManagerNode
from privgrid.roles.market_operator.node import OperatorNode
from privgrid.runtime import CHECKPOINT, Action, Node
from privgrid.scenario import LM_ID, MO_ID, Scenario, load_scenario, parse_scenario
from privgrid.solve import solve
from privgrid.wire.channel import Message
from privgrid.wire.faults import ENV_FAULTS, FaultConfigError, FaultInjector, FaultSpec
from privgrid.wire.kinds import AgentResiduals, Share, Trades
from privgrid.wire.topics import BROADCAST
from tests.rounds import PAPER_SHORT

ROOT = Path(__file__).resolve().parent.parent
#: Fewer rounds than the paper defaults (PAPER_SHORT, tests/rounds.py): every hop may be delayed.
SHORT_RUN = {"rho": 1.5, "epsilon_p": 1e-3, "epsilon_lambda": 1e-3}
FAULTS = {"duplicate": 0.1, "delay": 0.1, "reorder": 0.1, "max_delay": 0.1, "seed": 7}


def test_duplicated_delayed_and_reordered_messages_do_not_change_the_result(bus_factory):
    # In one process a message is delivered at once, so a delay of 20 ms is already long
    # enough for later messages to overtake it (the real-time waits of the injector are the
    # test's only idle time).
    faults = FaultSpec(**{**FAULTS, "max_delay": 0.02})
    grid = bus_factory(privacy={"mode": "plain"}, market=SHORT_RUN, faults=faults)
    assert grid.run(timeout=300) == 0, grid.log(MO_ID)[-3000:]
    for pid in participants(grid.scenario):
        assert grid.codes[pid] == 0, grid.log(pid)[-2000:]
        assert "Traceback" not in grid.log(pid), pid

    injected: Counter = Counter()
    for pid in participants(grid.scenario):
        injected.update(grid.sessions[pid].faults.counts)
    # The faults really happened, on every kind of fault, and duplicates were recognised.
    assert min(injected[k] for k in ("duplicated", "delayed", "reordered")) >= 20, injected
    assert any("ignored a duplicate" in grid.log(p) for p in participants(grid.scenario))

    results = grid.results()
    reference = solve(build_setup(load_scenario(grid.scenario_file)))
    assert results["converged"] and results["rounds"] == reference["rounds"] == PAPER_SHORT
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


# --- the round rule, node by node (no broker: messages passed by hand) --------------------------
#: The scenario of the node-level tests: the grid test's short run, plain mode, and the sealed
#: LM leg (the masked leg needs the channel's pairwise mask keys, which need a broker).
NODE_SCENARIO = {
    "market": SHORT_RUN,
    "privacy": {"mode": "plain", "lm_leg": "sealed"},
}
#: The round around which messages are held back or injected.
R = 20


def node_scenario() -> Scenario:
    data = tomllib.loads((ROOT / "configs" / "paper.toml").read_text())
    for section, values in NODE_SCENARIO.items():
        data[section] = {**data.get(section, {}), **values}
    return parse_scenario(data, "paper-nodes.toml")


class Bus:
    """Every node of a run (7 agents, LM, MO) wired by hand: FIFO delivery, no broker, no
    channel — so a test decides exactly which message arrives when. Broadcasts reach everyone
    but the sender (the runtime drops its own echo); checkpoint markers are skipped."""

    def __init__(self, scenario: Scenario) -> None:
        setup = build_setup(scenario)

        def log(pid: str) -> ParticipantLog:
            return ParticipantLog(logging.getLogger(f"test.nodes.{pid}"), pid)

        def mode(pid: str) -> PrivacyMode:
            return make_mode(scenario, pid, "node-test", log(pid))

        self.agents = {
            a: AgentNode(a, scenario, played_cost(scenario, a), mode(a), log(a))
            for a in scenario.agent_ids
        }
        self.lm = LineManagerNode(setup, mode(LM_ID), log(LM_ID))
        self.mo = OperatorNode(scenario, mode(MO_ID), log(MO_ID))
        self.nodes: dict[str, Node] = {**self.agents, LM_ID: self.lm, MO_ID: self.mo}
        self.queue: deque[Message] = deque()
        self.count = 0
        for pid, node in self.nodes.items():  # the MO last: its start broadcasts round 1
            self.post(pid, node.start(0.0))

    def post(self, sender: str, outgoing: list[Action]) -> None:
        for out in outgoing:
            if out is CHECKPOINT:
                continue
            if out.recipient == BROADCAST:
                recipients = [p for p in self.nodes if p != sender]
            else:
                recipients = [out.recipient]
            for recipient in recipients:
                self.count += 1
                raw = f"{self.count}:{sender}>{recipient}:{out.kind}".encode()
                self.queue.append(Message(out.round, sender, recipient, out.body, raw))

    def deliver(self, message: Message) -> list[Action]:
        outgoing = self.nodes[message.recipient].handle(message, 1.0)
        self.post(message.recipient, outgoing)
        return outgoing

    def run(self, intercept: Callable[[Message], bool] | None = None) -> None:
        """Deliver until nothing is left; ``intercept`` returns True for a message it took."""
        while self.queue:
            message = self.queue.popleft()
            if intercept is None or not intercept(message):
                self.deliver(message)

    def result(self) -> dict[str, list[float]]:
        """Every agent's trades, prices, partner prices and charges, as floats."""
        assert self.mo.phase == "done" and self.mo.exit_code == 0, self.mo.outcome.error
        assert all(node.exit_code == 0 for node in self.nodes.values())
        return {
            f"{pid}.{name}": [float(x) for x in getattr(agent, name)]
            for pid, agent in self.agents.items()
            for name in ("trades", "prices", "partner_prices", "charges")
        }


@pytest.fixture(scope="module")
def undisturbed() -> tuple[dict[str, list[float]], int]:
    """The node-level run without interference, checked against the in-process reference."""
    scenario = node_scenario()
    bus = Bus(scenario)
    bus.run()
    reference = solve(build_setup(scenario))
    assert bus.mo.outcome.converged and bus.mo.outcome.rounds == reference["rounds"] == PAPER_SHORT
    assert reference["rounds"] > R + 3  # the tests below act around round R
    for trade in reference["trades"]:
        seller = bus.agents[trade["seller"]]
        i = seller.partners.index(trade["buyer"])
        assert abs(seller.trades[i] - trade["power"]) <= 1e-6
        assert abs(seller.prices[i] - trade["price"]) <= 1e-6
    return bus.result(), bus.mo.outcome.rounds


def dropped(caplog: pytest.LogCaptureFixture, pid: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == f"test.nodes.{pid}" and r.getMessage().startswith("dropped")
    ]


def test_an_agent_holds_a_next_round_message_until_that_round_begins(undisturbed, caplog):
    """Rule (privgrid/roles/agent/node.py ``handle``): between rounds — round r committed, the MO's
    ``round r+1`` not yet in — a message of round r+1 is *held* (``early``) and handled right
    after that broadcast begins round r+1, in order. It can legitimately come first: a partner
    got the broadcast earlier and sent its share at once.

    Here B1's copy of the ``round R+1`` broadcast is held back until everyone else is stuck
    waiting for B1. By then each partner's round-R+1 share has reached B1: all wait in its
    buffer, none is applied to round R. When the broadcast comes, B1 sends its own round-R+1
    shares and applies every held one to round R+1 (both prices of every pair are in), and the
    run ends bit for bit as the undisturbed one (were the shares dropped instead, the run
    would stall; applied to round R, prices would differ).
    """
    bus = Bus(node_scenario())
    held: list[Message] = []

    def hold_b1_round(message: Message) -> bool:
        if (message.kind, message.round, message.recipient) == ("round", R + 1, "B1"):
            held.append(message)
            return True
        return False

    with caplog.at_level(logging.INFO):
        bus.run(hold_b1_round)  # returns when everyone waits for B1
        b1 = bus.agents["B1"]
        assert len(held) == 1 and b1.completed == R and b1.work is None
        early = sorted((m.kind, m.sender, m.round) for m in b1.early)
        assert early == sorted(("share", p, R + 1) for p in b1.partners) and early
        assert bus.mo.round == R + 1 and bus.mo.phase == "running"

        answers = bus.deliver(held[0])
        assert b1.early == [] and b1.work is not None and b1.work.round == R + 1
        shares = sorted((o.recipient, o.round) for o in answers if o.kind == "share")
        assert shares == sorted((p, R + 1) for p in b1.partners)
        assert b1.exchange.complete  # every held share applied, to round R+1
        bus.run()
    assert dropped(caplog, "B1") == []
    assert bus.result() == undisturbed[0] and bus.mo.outcome.rounds == undisturbed[1]


def test_an_agent_drops_a_message_two_rounds_ahead_or_from_a_past_round(undisturbed, caplog):
    """Rule: only the current round's messages are handled and only the next round's (between
    rounds) are held; a message of any other round is dropped with ``dropped <kind> from
    <sender>: round <r> is not the current round <c>`` — never applied to the wrong round,
    never kept. (One exception, not exercised here: a restarted partner redoing the round we
    completed is answered, docs/reliability.md.)

    Injected into B1, as shares signed by S1 with a value that would shift B1's price: round
    R+2 and round R−1 while B1 waits for round R+1 (nothing joins the buffer), and round R+2
    again while B1 is in round R+1. The run ends bit for bit as the undisturbed one.
    """
    bus = Bus(node_scenario())
    b1 = bus.agents["B1"]
    injected: list[tuple[int, int]] = []  # (round of the fake share, B1's round then)

    def fake(round_: int) -> Message:
        return Message(round_, "S1", "B1", Share(10**15, 0), f"fake {round_}".encode())

    def inject(message: Message) -> bool:
        if message.recipient != "B1" or injected:
            return False
        if (message.kind, message.round) == ("round", R + 1):
            assert b1.completed == R and b1.work is None
            for round_ in (R + 2, R - 1):
                bus.deliver(fake(round_))
                injected.append((round_, R))
            assert b1.early == []
            bus.deliver(message)
            assert b1.work is not None and b1.work.round == R + 1
            bus.deliver(fake(R + 2))
            injected.append((R + 2, R + 1))
            return True
        return False

    with caplog.at_level(logging.INFO):
        bus.run(inject)
    assert injected == [(R + 2, R), (R - 1, R), (R + 2, R + 1)]
    assert dropped(caplog, "B1") == [
        f"dropped share from S1: round {r} is not the current round {c}" for r, c in injected
    ]
    assert bus.result() == undisturbed[0] and bus.mo.outcome.rounds == undisturbed[1]


def test_the_lm_collects_the_next_round_before_its_broadcast_and_prices_it_with_its_steps(
    undisturbed, caplog
):
    """Rule (privgrid/roles/line_manager/node.py ``handle``): the LM's round is its last priced
    round + 1, so contributions of that round are taken as they come, even before the MO's
    broadcast of it; but the round is priced only once that broadcast is in too, because it
    carries the round's step exponent (σ of the round, privgrid/market/steps.py). A
    contribution of the round it already priced is ignored silently (a restarted agent
    redoing it); any other round is dropped with ``dropped <kind> of round <r> from <sender>
    (expected round <e>)``.

    The LM's copy of the ``round R+1`` broadcast is held back. Meanwhile, after S1's real
    round-R+1 trades, the LM gets S1 trades of round R+3, R−1 and R — absurd values that
    would change the line prices if taken. Every agent's round-R+1 trades arrive and the run
    stalls with the LM unpriced; the broadcast then lets it price. The run ends bit for bit as
    the undisturbed one.
    """
    bus = Bus(node_scenario())
    lm = bus.lm
    held: list[Message] = []
    size = len(bus.agents["S1"].partners)

    def fake(round_: int) -> Message:
        body = Trades((10**12,) * size)
        return Message(round_, "S1", LM_ID, body, f"fake {round_}".encode())

    def intercept(message: Message) -> bool:
        if message.recipient != LM_ID:
            return False
        if (message.kind, message.round) == ("round", R + 1):
            assert lm.completed == R
            held.append(message)
            return True
        if (message.kind, message.round, message.sender) == ("trades", R + 1, "S1"):
            assert held and lm.completed == R  # before the broadcast, taken at once
            bus.deliver(message)
            for round_ in (R + 3, R - 1, R):
                bus.deliver(fake(round_))
            return True
        return False

    with caplog.at_level(logging.INFO):
        bus.run(intercept)  # returns when everyone waits for the LM
        assert len(held) == 1 and lm.completed == R
        assert lm.leg.lm_ready(len(bus.agents))  # every contribution is in, unpriced
        priced = bus.deliver(held.pop())
        assert lm.completed == R + 1
        assert any(o is not CHECKPOINT and o.kind == "lm_residuals" for o in priced)
        bus.run()
    assert dropped(caplog, LM_ID) == [
        f"dropped trades of round {r} from S1 (expected round {R + 1})" for r in (R + 3, R - 1)
    ]
    assert bus.result() == undisturbed[0] and bus.mo.outcome.rounds == undisturbed[1]


def test_the_mo_drops_residuals_of_a_future_or_past_round(undisturbed, caplog):
    """Rule (privgrid/roles/market_operator/node.py ``_handle``): the MO takes residuals of its
    current round
    only; those of the round just before are ignored silently (re-sent after the MO's own
    restart); any other round is dropped with ``dropped <kind> from <sender> for round <r>
    (current round <c>)``. Residuals of a later round cannot be legitimate — nobody begins a
    round before the MO's broadcast — so there is nothing to hold.

    During round R+1, after S1's real residuals, the MO gets S1 residuals of rounds R+2, R−1
    and R, all claiming convergence (zero residuals): taken for round R+1, they would end the
    run early. The run ends bit for bit as the undisturbed one.
    """
    bus = Bus(node_scenario())
    zero = AgentResiduals(r_d=encode_scalar(0.0), r_C=encode_scalar(0.0), r_P=encode_scalar(0.0))

    def fake(round_: int) -> Message:
        return Message(round_, "S1", MO_ID, zero, f"fake {round_}".encode())

    def intercept(message: Message) -> bool:
        if (message.kind, message.round, message.sender) != ("residuals", R + 1, "S1"):
            return False
        assert bus.mo.round == R + 1
        bus.deliver(message)
        kept = bus.mo.agent_residuals["S1"]
        for round_ in (R + 2, R - 1, R):
            bus.deliver(fake(round_))
        assert bus.mo.agent_residuals["S1"] == kept and bus.mo.round == R + 1
        return True

    with caplog.at_level(logging.INFO):
        bus.run(intercept)
    assert dropped(caplog, MO_ID) == [
        f"dropped residuals from S1 for round {r} (current round {R + 1})" for r in (R + 2, R - 1)
    ]
    assert bus.result() == undisturbed[0] and bus.mo.outcome.rounds == undisturbed[1]
