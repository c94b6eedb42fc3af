"""Every participant of a day over the wire, wired by hand: the product's day layers and
interval nodes, real channels (every message sealed, signed and checked, with the channel's
duplicate and replay keys), no broker and no processes.

Delivery keeps MQTT's one promise — messages of one sender on one topic arrive in order — and
with a seed interleaves the topics at random, so a broadcast of one kind can overtake one of
another kind, and a partner's message can come before the broadcast that explains it.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from privgrid.crypto.identity import Identity, Roster
from privgrid.logs import ParticipantLog
from privgrid.privacy import make_mode
from privgrid.process import Context, roles_of
from privgrid.roles.agent.day import DayAgent
from privgrid.roles.dayplan import DayPlan
from privgrid.roles.line_manager.day import DayLineManager
from privgrid.roles.market_operator.day import DayOperator
from privgrid.roles.market_operator.dayrun import DayRecorder, open_day_ledger
from privgrid.runtime import Checkpoint, Node, Settings
from privgrid.scenario import LM_ID, MO_ID
from privgrid.wire import topics
from privgrid.wire.channel import Channel, Duplicate, Message
from privgrid.wire.kinds import KeyAnnouncement
from privgrid.wire.session import BrokerUrl

RUN = "day-bus"
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def night_run_folder(
    tmp: Path, intervals: int = 1, privacy: dict[str, Any] | None = None, **market: Any
) -> tuple[Any, Path, list[Any]]:
    """A run folder as ``privgrid run`` prepares it (every interval's scenario, keys and
    plan.json) for the first ``intervals`` night intervals of day-rural1 from 02:00, in plain
    mode unless ``privacy`` says otherwise, with ``market`` keys set: (prepared day, folder,
    intervals)."""
    import tomllib

    import tomli_w

    from privgrid.feeder.day import prepare_day, prepare_folder
    from privgrid.feeder.wire import write_plan

    data = tomllib.loads((CONFIGS / "day-rural1.toml").read_text())
    data["day"].update(start="2016-06-21T02:00", intervals=intervals)
    data["market"].update(market)
    data["privacy"] = privacy or {"mode": "plain"}
    scenario = tmp / "day.toml"
    scenario.write_text(tomli_w.dumps(data))
    prepared = prepare_day(scenario)
    folder = tmp / "run"
    built = prepare_folder(prepared, folder)
    write_plan(prepared, folder, built)
    return prepared, folder, built


class DayBus:
    """The day of ``folder`` (a run folder with ``plan.json`` and ``keys/``)."""

    def __init__(self, folder: Path, seed: int | None = None) -> None:
        self.folder = folder
        self.plan = DayPlan.read(folder / "plan.json")
        first = self.plan.load(1)
        keys = folder / "keys"
        roster = Roster.load(keys / "roster.json")
        ids = [*self.plan.agent_ids, LM_ID, MO_ID]
        roles = {**roles_of(first), **{a: "agent" for a in self.plan.agent_ids}}
        self.identities = {pid: Identity.load(keys / f"{pid}.key") for pid in ids}

        def log(pid: str) -> ParticipantLog:
            return ParticipantLog(logging.getLogger(f"test.day.{pid}"), pid)

        def mode(pid: str) -> Any:
            return make_mode(first, pid, RUN, log(pid))

        self.channels = {pid: Channel(pid, RUN, self.identities[pid], roster, roles) for pid in ids}
        for channel in self.channels.values():
            for pid, other in self.channels.items():
                channel.learn_agreement_key(pid, other.x25519_public)
        ctx = Context(
            first,
            MO_ID,
            self.identities[MO_ID],
            roster,
            roles,
            Settings(RUN, BrokerUrl("localhost", 1883)),
            log(MO_ID),
        )
        self.ctx = ctx
        self.roster, self.roles = roster, roles
        self.ledger = open_day_ledger(ctx, self.plan, folder / "ledger.sqlite")
        self.recorder = DayRecorder(ctx, self.plan, self.ledger, folder, progress=False)
        self.agents = {
            a: DayAgent(a, self.plan, first, mode(a), log(a), self.identities[a])
            for a in self.plan.agent_ids
        }
        self.lm = DayLineManager(self.plan, first, mode(LM_ID), log(LM_ID), self.identities[LM_ID])
        self.first, self.mode = first, mode
        self.mo = self._operator()
        self.nodes: dict[str, Node] = {**self.agents, LM_ID: self.lm, MO_ID: self.mo}
        for pid, node in self.nodes.items():
            node.bind(self.channels[pid])
        # The key announcements' privacy-mode part (Paillier keys), as the membership would.
        for pid, node in self.nodes.items():
            body = node.announcement(KeyAnnouncement(self.channels[pid].x25519_public, 0.0))
            for other, peer in self.nodes.items():
                if other != pid:
                    peer.accept_announcement(pid, body)
        self.random = random.Random(seed) if seed is not None else None
        self.streams: dict[tuple[str, str, str], deque[tuple[str, bytes]]] = {}
        self.order: deque[tuple[str, str, str]] = deque()  # FIFO over all streams
        self.snapshots: dict[str, bytes] = {}
        self.delivered = 0
        self.recipient = ""  # of the message being delivered (a broadcast has many)
        for pid, node in self.nodes.items():  # the MO last: its start announces interval 1
            self.post(pid, node.start(0.0))

    def _operator(self) -> DayOperator:
        return DayOperator(
            self.plan,
            self.first,
            self.mode(MO_ID),
            self.ctx.log,
            proposal_for=self.recorder.proposal_for,
            on_done=self.recorder.on_done,
            progress_for=self.recorder.progress_for,
        )

    def restart_mo(self, now: float = 1.0) -> DayOperator:
        """The MO crashed (SIGKILL) and is restarted from its last checkpoint, as the runtime
        restarts it: a new process (recorder, ledger connection, channel with the same keys)
        whose node is restored from the checkpoint; what was on its way to the dead MO is
        lost (the runtime ignores messages queued before its restart); every peer forgets its
        duplicate keys and is told of the restart (``peer_restarted``)."""
        state = msgpack.unpackb(self.snapshots[MO_ID], raw=False)
        self.ledger = open_day_ledger(self.ctx, self.plan, self.folder / "ledger.sqlite")
        self.recorder = DayRecorder(self.ctx, self.plan, self.ledger, self.folder, False)
        mo = self._operator()
        mo.restore(state)
        mo.restored = True
        agreement = self.channels[MO_ID].agreement  # the checkpoint's key
        channel = Channel(MO_ID, RUN, self.identities[MO_ID], self.roster, self.roles, agreement)
        for pid, other in self.channels.items():
            channel.learn_agreement_key(pid, other.x25519_public)
        self.channels[MO_ID] = channel
        mo.bind(channel)
        self.mo = self.nodes[MO_ID] = mo
        for key, queue in self.streams.items():
            if key[1] == MO_ID:
                queue.clear()
        self.order = deque(k for k in self.order if k[1] != MO_ID)
        self.post(MO_ID, mo.start(now))
        completed = mo.resume_point()
        for pid, node in self.nodes.items():
            if pid != MO_ID:
                self.channels[pid].forget_sender(MO_ID)
                self.post(pid, node.peer_restarted(MO_ID, completed, False, now))
        return mo

    def post(self, sender: str, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Checkpoint):  # what the runtime would save, packed as it would
                snapshot = self.nodes[sender].snapshot()
                if snapshot is not None:
                    self.snapshots[sender] = msgpack.packb(snapshot, use_bin_type=True)
                continue
            topic, payload = self.channels[sender].encode(action)
            recipients = (
                [p for p in self.nodes if p != sender]
                if action.recipient == topics.BROADCAST
                else [action.recipient]
            )
            for recipient in recipients:
                key = (sender, recipient, topic)
                self.streams.setdefault(key, deque()).append((topic, payload))
                self.order.append(key)

    def _next(self) -> tuple[str, str, bytes] | None:
        if self.random is None:
            if not self.order:
                return None
            key = self.order.popleft()
        else:
            live = [k for k, q in self.streams.items() if q]
            if not live:
                return None
            key = self.random.choice(live)
        topic, payload = self.streams[key].popleft()
        return key[1], topic, payload

    def run(self, intercept: Callable[[Message], bool] | None = None, now: float = 1.0) -> None:
        """Deliver until nothing is left (``intercept`` returns True for a message it took);
        every node is handed ``now`` as the time of each delivery."""
        while (item := self._next()) is not None:
            recipient, topic, payload = item
            node = self.nodes[recipient]
            if node.exit_code is not None:
                continue
            try:
                message = self.channels[recipient].decode(topic, payload)
            except Duplicate:
                continue
            self.recipient = recipient
            if intercept is not None and intercept(message):
                continue
            self.delivered += 1
            self.post(recipient, node.handle(message, now))
