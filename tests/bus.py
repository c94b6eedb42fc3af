"""The in-process bus: a whole grid in one process, every message through the real channel.

Each participant is the product's own :class:`privgrid.runtime.Participant` around the node its
role process builds (the same constructors: :func:`privgrid.roles.agent.process.make_agent`,
the LM's and the MO's nodes with the MO's ledger proposal), so key announcements, signing,
sealing, checking, duplicate and replay detection, the drop and violation log lines and the
MO's block and votes all run as in a real run. Only the MQTT session is replaced:
:class:`BusSession` has :class:`~privgrid.wire.session.MqttSession`'s constructor and the
methods the runtime uses, and hands each publish to :class:`Broker`, an in-memory broker that
routes it to every session whose subscriptions match (MQTT wildcards), keeps retained messages
and publishes a killed participant's last will. One asyncio loop runs everyone; the MO's end of
run (ledger commit, ``protocol.json``) is the MO process's, and the report from its record
(``results.json``, ``attack.json``) ``privgrid run``'s.

What it does not exercise, and the real-broker grids (marker ``grid``) are kept for: the MQTT
client and broker (QoS, ACLs, client-id binding, reconnects, last-will timing), the processes
(command lines, signals, exit statuses, checkpoints across a SIGKILL), ``privgrid run``.

Message order: one FIFO per session, filled in publish order, and one event loop — the run is
the same every time for the same scenario (no real I/O, no thread), except for when the
runtime's idle ticks fall, which no converged run depends on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from unittest import mock

import aiomqtt

from privgrid import report, runtime
from privgrid.crypto.identity import Identity
from privgrid.keys import init_keys, participants
from privgrid.logs import ParticipantLog, TextFormatter
from privgrid.market.setup import build_setup
from privgrid.privacy import make_mode
from privgrid.process import Context, roles_of
from privgrid.roles.agent.process import make_agent
from privgrid.roles.line_manager.node import LineManagerNode
from privgrid.roles.market_operator.node import OperatorNode
from privgrid.roles.market_operator.process import end_of_run, make_proposal, open_ledger
from privgrid.runtime import Node, Participant, Settings
from privgrid.scenario import LM_ID, MO_ID, Scenario
from privgrid.wire.faults import FaultInjector, FaultSpec
from privgrid.wire.session import BrokerUrl

#: Exit code of a participant killed by :meth:`BusGrid.kill` (a process killed by SIGKILL: -9).
KILLED = -9
#: Never connected to: every participant's session is a :class:`BusSession`.
NO_BROKER = BrokerUrl.parse("mqtt://in-process-bus:1")

#: Called with (topic, payload) after every publish; may publish itself (an intruder).
Watcher = Callable[[str, bytes], None]


class Broker:
    """What the MQTT broker does for one run, in memory."""

    def __init__(self) -> None:
        self.sessions: dict[str, BusSession] = {}  # connected, by client id
        self.retained: dict[str, bytes] = {}
        #: Every publish in order, retained or not: what the broker sees of the run.
        self.published: list[tuple[str, bytes]] = []
        self.watchers: list[Watcher] = []

    def connect(self, session: BusSession) -> None:
        self.sessions[session.identifier] = session
        for topic, payload in self.retained.items():
            session.deliver(topic, payload)

    def disconnect(self, session: BusSession, *, will: bool) -> None:
        """A clean disconnect (``will`` False) or a lost connection: the last will goes out."""
        if self.sessions.get(session.identifier) is session:
            del self.sessions[session.identifier]
            if will and session.will is not None:
                self.publish(*session.will)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.published.append((topic, payload))
        if retain:  # an empty payload clears the retained message (and is delivered)
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        for session in list(self.sessions.values()):
            session.deliver(topic, payload)
        for watcher in list(self.watchers):
            watcher(topic, payload)


class BusSession:
    """:class:`~privgrid.wire.session.MqttSession` on a :class:`Broker`: the same constructor
    and the part of its interface the runtime uses (``start``, ``publish``, ``inbox``,
    ``close``), with ``PRIVGRID_FAULTS``-style faults through the same
    :class:`~privgrid.wire.faults.FaultInjector` when given."""

    def __init__(
        self,
        broker: Broker,
        url: BrokerUrl,
        identifier: str,
        subscriptions: list[str],
        log: logging.LoggerAdapter | logging.Logger,
        will: tuple[str, bytes] | None = None,
        max_backoff: float = 5.0,
        faults: FaultSpec | None = None,
    ) -> None:
        self.broker = broker
        self.url = url
        self.identifier = identifier
        self.subscriptions = list(subscriptions)
        self.log = log
        self.will = will
        self.inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.dead = False  # killed: nothing in, nothing out
        self._wanted: dict[str, bool] = {}
        self.faults = FaultInjector(faults, identifier, self._publish, log) if faults else None
        self._faulty: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self.broker.sessions.get(self.identifier) is self

    def deliver(self, topic: str, payload: bytes) -> None:
        """The broker's side: queue the message if one of our subscriptions matches."""
        wanted = self._wanted.get(topic)
        if wanted is None:
            parsed = aiomqtt.Topic(topic)
            wanted = self._wanted[topic] = any(parsed.matches(f) for f in self.subscriptions)
        if wanted and not self.dead:
            self.inbox.put_nowait((topic, payload))

    async def start(self, timeout: float) -> None:
        self.broker.connect(self)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if self.faults is not None and not retain:
            await self.faults.publish(topic, payload)
        else:
            await self._publish(topic, payload, retain=retain)

    def post(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if self.faults is not None and not retain:
            task = asyncio.ensure_future(self.faults.publish(topic, payload))
            self._faulty.add(task)
            task.add_done_callback(self._faulty.discard)
        elif not self.dead:
            self.broker.publish(topic, payload, retain)

    async def flush(self) -> None:
        while self._faulty:
            await asyncio.wait(set(self._faulty))

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if not self.dead:
            self.broker.publish(topic, payload, retain)

    async def close(self, flush_timeout: float = 10.0) -> None:
        if self.faults is not None and not self.dead:
            await self.faults.flush(flush_timeout)  # held and delayed messages go out first
        self.broker.disconnect(self, will=False)


class _Lines(logging.Handler):
    """A participant's log, as its process would write it (text format), kept in memory."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class BusGrid:
    """One run's participants on the in-process bus; :meth:`run` runs it to its end.

    Made by the ``bus_factory`` fixture (tests/conftest.py), with the same scenario overrides
    as ``grid_factory``. After :meth:`run`: :meth:`results` (the MO's results.json, also
    written to ``folder``), :meth:`log` (a participant's log lines), :attr:`codes` (exit codes).
    """

    def __init__(
        self,
        folder: Path,
        scenario_file: Path,
        scenario: Scenario,
        *,
        faults: FaultSpec | None = None,
        run: str | None = None,
    ) -> None:
        self.folder = folder
        self.scenario_file = scenario_file
        self.scenario = scenario
        self.run_id = run or f"bus-{scenario.name}"
        self.faults = faults
        self.broker = Broker()
        self.setup = build_setup(scenario)
        roster = init_keys(scenario, folder / "secrets")
        self.identities = {
            pid: Identity.load(folder / "secrets" / f"{pid}.key") for pid in participants(scenario)
        }
        self._logs: dict[str, _Lines] = {}
        self.contexts = {pid: self._context(pid, roster) for pid in participants(scenario)}
        mo = self.contexts[MO_ID]
        self.ledger = open_ledger(mo, folder / "ledger.sqlite")
        self.nodes: dict[str, Node] = {
            a: make_agent(self.contexts[a], folder) for a in scenario.agent_ids
        }
        lm = self.contexts[LM_ID]
        self.lm = LineManagerNode(self.setup, self._mode(LM_ID), lm.log, lm.identity)
        proposal = make_proposal(mo, self.setup, self.ledger)
        self.mo = OperatorNode(scenario, self._mode(MO_ID), mo.log, self._round_done, proposal)
        self.nodes.update({LM_ID: self.lm, MO_ID: self.mo})
        self.participants = {
            pid: Participant(
                node, self.contexts[pid].settings, self.identities[pid], roster, roles_of(scenario)
            )
            for pid, node in self.nodes.items()
        }
        self.codes: dict[str, int] = {}
        self.killed_at: dict[str, float] = {}  # time.time() of each kill
        self._after: list[tuple[int, Callable[[], None]]] = []
        self._files: list[IO[str]] = []
        self._tasks: dict[str, asyncio.Task[int]] = {}
        self.sessions: dict[str, BusSession] = {}  # each participant's, once it started
        self._results: dict[str, Any] | None = None

    def _context(self, pid: str, roster: Any) -> Context:
        handler = self._logs[pid] = _Lines()
        logger = logging.getLogger(f"privgrid.bus.{id(self)}.{pid}")
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        log = ParticipantLog(logger, pid)
        attack = self.scenario.attack
        log.adversarial = attack is not None and pid in attack.colluders  # as load_context does
        settings = Settings(self.run_id, NO_BROKER, self.scenario.timeouts.start)
        identity = self.identities[pid]
        return Context(self.scenario, pid, identity, roster, roles_of(self.scenario), settings, log)

    def _mode(self, pid: str) -> Any:
        return make_mode(self.scenario, pid, self.run_id, self.contexts[pid].log)

    # -- running ----------------------------------------------------------------------------
    def run(self, timeout: float = 300, skip: tuple[str, ...] = ()) -> int:
        """Run every participant but ``skip`` (never started) until each has ended; the MO's
        exit status, as its process would exit (a refused block turns 0 into 3)."""
        try:
            asyncio.run(self._main(timeout, skip))
        finally:
            for sink in self._files:
                sink.close()
            for pid, handler in self._logs.items():  # the lines stay readable: log()
                self.contexts[pid].log.logger.removeHandler(handler)
        return self._finish()

    def after_round(self, round_: int, action: Callable[[], None]) -> None:
        """Call ``action`` once, when the MO has completed round ``round_`` (its trace row:
        what ``Grid.wait_for_round`` waits for), e.g. ``lambda: grid.kill("S2")``."""
        self._after.append((round_, action))

    def record_lm(self, path: Path) -> None:
        """What ``python -m line_manager --record PATH`` does: append what the LM receives each
        round to ``path`` as JSON lines."""
        sink = path.open("a", encoding="utf-8")
        self._files.append(sink)
        self.lm.record = lambda entry: sink.write(json.dumps(entry) + "\n")

    def _round_done(self, row: Any) -> None:
        due = [entry for entry in self._after if row.round >= entry[0]]
        self._after = [entry for entry in self._after if row.round < entry[0]]
        for _, action in due:
            action()

    def _session(self, *args: Any, **kwargs: Any) -> BusSession:
        session = BusSession(self.broker, *args, faults=self.faults, **kwargs)
        self.sessions[session.log.participant] = session  # type: ignore[union-attr]
        return session

    async def _main(self, timeout: float, skip: tuple[str, ...]) -> None:
        with mock.patch.object(runtime, "MqttSession", self._session):
            self._tasks = {
                pid: asyncio.create_task(p.run(), name=pid)
                for pid, p in self.participants.items()
                if pid not in skip
            }
            everyone = asyncio.gather(*self._tasks.values(), return_exceptions=True)
            try:
                outcomes = await asyncio.wait_for(everyone, timeout)
            except TimeoutError:
                running = sorted(pid for pid, t in self._tasks.items() if not t.done())
                raise AssertionError(
                    f"the in-process run did not end within {timeout} s ({running} still "
                    f"running); MO log:\n{self.log(MO_ID)[-3000:]}"
                ) from None
        for pid, outcome in zip(self._tasks, outcomes, strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                self.codes[pid] = KILLED
            elif isinstance(outcome, BaseException):
                raise AssertionError(f"{pid} crashed: {outcome!r}") from outcome
            else:
                self.codes[pid] = outcome

    def kill(self, pid: str) -> None:
        """As SIGKILL: ``pid`` stops at once, sends nothing more, and the broker publishes its
        last will. Call it while the run goes on: from :meth:`after_round` or a watcher
        (:attr:`Broker.watchers`)."""
        self.killed_at[pid] = time.time()
        session = self.sessions[pid]
        session.dead = True
        self._tasks[pid].cancel()
        self.broker.disconnect(session, will=True)

    def _finish(self) -> int:
        """The MO process's end of run (privgrid/roles/market_operator/process.py
        ``end_of_run``: the commit and ``protocol.json``), then ``privgrid run``'s report of
        the record (results.json, attack.json)."""
        if self.codes[MO_ID] == KILLED:  # a killed MO writes nothing
            self.ledger.close()
            return KILLED
        ctx = self.contexts[MO_ID]
        code, record = end_of_run(ctx, self.ledger, self.mo, self.codes[MO_ID], None)
        record.write(self.folder)
        self.ledger.close()
        self._results = report.write_report(self.folder, self.setup, record)
        self.codes[MO_ID] = code
        return code

    # -- what a test reads ----------------------------------------------------------------------
    def results(self) -> dict[str, Any]:
        assert self._results is not None, "run() first"
        return self._results

    def log(self, pid: str) -> str:
        return "\n".join(self._logs[pid].lines)
