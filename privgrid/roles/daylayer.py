"""A participant for a whole day: one market node per interval, one session (docs/feeder.md).

A day over the wire keeps every participant a long-lived process: one MQTT session, one
identity, one X25519 key, one Paillier key pair for the day. What changes from interval to
interval — the market (who takes part, which pairs trade) — lives in an ordinary role node
built from the interval's scenario when the MO announces the interval (``interval``,
:class:`~privgrid.wire.kinds.IntervalStart`). A :class:`DayLayer` is the node the runtime runs:
it owns the sequence (which interval, its opening round, what the party carries into the next
one) and hands every message of the interval to the interval's node. Like every node it does
no I/O.

Round numbers continue across the day: interval ``i`` opens at the round after interval
``i − 1``'s stop and its rounds follow, so the channel's duplicate and replay keys (run, round,
kind, sender, recipient) stay unique in the day's one session. Messages therefore say by their
round which interval they belong to; the layer

- drops a message of an earlier interval (a late repeat), quietly;
- keeps a message of a later interval until that interval begins (a partner may begin the
  next interval's first round before our ``interval`` broadcast has arrived: broadcasts of
  different kinds travel on different topics, and MQTT orders messages per topic only);
- hands everything else to the interval's node.

Restarts (docs/reliability.md): the checkpoint holds the interval, its opening round and the
interval node's own checkpoint; a restarted participant rebuilds that node from the interval's
scenario and restores it. A peer that restarted from an earlier interval (it had finished its
part of that interval and crashed before the next one began) catches up through the MO, which
sends it the current ``interval`` broadcast again; the layer tells the interval's node what
the peer will need (:meth:`DayLayer.behind`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from privgrid.logs import ParticipantLog
from privgrid.privacy import PrivacyMode
from privgrid.roles.dayplan import DayPlan
from privgrid.runtime import EXIT_FAILURE, EXIT_OK, Action, Node
from privgrid.scenario import MO_ID
from privgrid.scenario.schema import TimeoutsSection
from privgrid.wire.channel import Channel, Message
from privgrid.wire.kinds import Closed, Gone, IntervalStart, Stop

#: Counters of :meth:`Node.counters` that describe the present, not a running total.
_NOT_SUMMED = frozenset({"pool_left"})
#: Figures of the runtime's stats that are not differences over an interval.
_NOT_PER_INTERVAL = frozenset({"pid", "pool_left", "restarts"})


class DayLayer(Node):
    """The day's sequence of interval nodes behind one participant (module docstring)."""

    mode: PrivacyMode  # one for the day, handed to every interval node (Node's may be None)

    def __init__(
        self,
        me: str,
        log: ParticipantLog,
        plan: DayPlan,
        mode: PrivacyMode,
        timeouts: TimeoutsSection,
    ) -> None:
        """``timeouts``: the day's (every interval has the same): between two intervals,
        silence longer than a round's and a finish's timeout (plus ``missing`` under
        ``on_missing = "wait"``) ends the day for this participant."""
        super().__init__(me, log)
        self.plan = plan
        self.mode = mode
        self.crypto_threads = mode.crypto_threads
        self.inner: Node | None = None  # the interval's node
        self.index = 0  # the interval in progress (0: none yet)
        self.opening = 0  # its opening round
        self.stopped_at: int | None = None  # the round of its ``stop``, once seen
        self.later: list[Message] = []  # messages of an interval that has not begun
        #: The participant's stats where the interval's figures begin: the interval node
        #: reports the difference (its final report's counters are the interval's, not the
        #: day's). The first interval's begin where the process began (as a single run's);
        #: each next one's where the last interval's report left off (:attr:`reported`), so
        #: the work between two intervals — pools filled ahead, the next exchange's pool fill
        #: — counts in the interval it serves, and nothing in none.
        self.baseline: dict[str, float] = {}
        #: The stats of the last interval report (:meth:`interval_stats`); None: none yet.
        self.reported: dict[str, float] | None = None
        self._done_counters: dict[str, float] = {}  # the interval nodes' own, done ones
        #: The mode's figures (:meth:`PrivacyMode.stats`) that our interval nodes report.
        self._shared_keys: set[str] = set()
        self._done_compute = 0.0
        self.last_heard = 0.0
        self.silence = timeouts.round + timeouts.finish
        if timeouts.on_missing == "wait":
            self.silence += timeouts.missing

    # -- what the runtime asks of a node -----------------------------------------------------
    @property
    def compute_seconds(self) -> float:
        inner = 0.0 if self.inner is None else self.inner.compute_seconds
        return self._done_compute + inner

    @compute_seconds.setter
    def compute_seconds(self, value: float) -> None:
        self._done_compute = value

    def counters(self) -> dict[str, float]:
        """The participant's figures over the day: those of the privacy mode (crypto time per
        phase, proofs, pool entries: running totals of the session, which every interval's
        exchange shares and reports as they stand) read once from the mode; each interval
        node's own figures added up. Adding up what every interval's exchange reported of
        the mode's totals counted interval 1's crypto time once per interval that followed."""
        shared = self.mode.stats()
        totals = dict(self._done_counters)
        if self.inner is not None:
            for key, value in self.inner.counters().items():
                if key in shared:
                    self._shared_keys.add(key)
                else:
                    totals[key] = value if key in _NOT_SUMMED else totals.get(key, 0.0) + value
        totals.update({key: shared[key] for key in self._shared_keys})
        return totals

    def bind(self, channel: Channel) -> None:
        super().bind(channel)
        if self.inner is not None:
            self.inner.bind(channel)

    def resume_point(self) -> int:
        return 0 if self.inner is None else self.inner.resume_point()

    def precompute(self, message: Message) -> Callable[[], None] | None:
        if self.inner is None or message.round < self.opening or self._is_later(message):
            return None
        return self.inner.precompute(message)

    def peer_resynced(self, peer: str) -> list[Action]:
        return [] if self.inner is None else self.inner.peer_resynced(peer)

    def peer_restarted(self, peer: str, completed: int, new_keys: bool, now: float) -> list[Action]:
        self.last_heard = now
        if self.inner is None:
            return []
        if completed < self.opening:
            completed = self.behind(peer)
        return self._after(self.inner.peer_restarted(peer, completed, new_keys, now), now)

    def behind(self, peer: str) -> int:
        """The round to tell the interval's node a peer completed when it restarted from an
        earlier interval: it will catch up through the MO's ``interval`` broadcast, and then
        stand where a peer that completed the opening stands (the LM overrides: such a peer
        still needs the LM's opening message)."""
        return self.opening

    # -- messages ----------------------------------------------------------------------------
    def handle(self, message: Message, now: float) -> list[Action]:
        self.last_heard = now
        body = message.body
        from_mo = message.sender == MO_ID
        if isinstance(body, IntervalStart):
            if not from_mo:
                self.log.warning("dropped an interval broadcast from %s", message.sender)
                return []
            if body.index <= self.index:
                return []  # a repeat: the MO sends it again to a peer that restarted
            return self.begin_interval(message.round, body, now)
        if isinstance(body, Closed) and from_mo:
            return self.closed(body)
        if self.inner is None:
            self.later.append(message)  # before the first interval
            return []
        if isinstance(body, Gone):
            return self._after(self.inner.handle(message, now), now)
        if message.round < self.opening:
            self.log.debug(
                "ignored %s of round %d from %s: an earlier interval's",
                message.kind,
                message.round,
                message.sender,
            )
            return self.earlier(message)
        if self._is_later(message):
            self.later.append(message)
            return []
        if isinstance(body, Stop) and from_mo:
            self.stopped_at = message.round
        return self._after(self.inner.handle(message, now), now)

    def _is_later(self, message: Message) -> bool:
        """Whether ``message`` belongs to an interval that has not begun here yet."""
        return self.stopped_at is not None and message.round > self.stopped_at

    def earlier(self, message: Message) -> list[Action]:
        """A message of an earlier interval: nothing to do (the MO overrides)."""
        return []

    def tick(self, now: float) -> list[Action]:
        inner = self.inner
        if inner is not None and inner.exit_code is None and self.in_interval():
            return self._after(inner.tick(now), now)
        if now - self.last_heard > self.silence:
            self.log.error("nothing heard for %.0f s between intervals; giving up", self.silence)
            self.finish(EXIT_FAILURE)
            return []
        return self.between_intervals(now)

    def in_interval(self) -> bool:
        """Whether the interval's node still runs its clocks (not once its part is done)."""
        return True

    def between_intervals(self, now: float) -> list[Action]:
        """Spare time after our part of an interval (agents top up Paillier pools here)."""
        return []

    def _after(self, actions: list[Action], now: float) -> list[Action]:
        """``actions`` of the interval's node, then whatever its ending means for the day."""
        inner = self.inner
        if inner is None or inner.exit_code is None:
            return actions
        return actions + self.interval_ended(inner.exit_code, now)

    # -- the sequence ------------------------------------------------------------------------
    def switch(self, index: int, opening: int, inner: Node) -> None:
        """Make ``inner`` the node of interval ``index`` (opening at round ``opening``)."""
        old = self.inner
        if old is not None:
            self._done_compute += old.compute_seconds
            shared = self.mode.stats()
            for key, value in old.counters().items():
                if key in shared:
                    self._shared_keys.add(key)
                elif key not in _NOT_SUMMED:
                    self._done_counters[key] = self._done_counters.get(key, 0.0) + value
        self.inner, self.index, self.opening, self.stopped_at = inner, index, opening, None
        inner.stats = self.interval_stats
        if self.channel is not None:
            inner.bind(self.channel)
        self.baseline = dict(self.reported or {})

    def replay(self, now: float) -> list[Action]:
        """The messages kept for later, now that an interval began: those of this interval
        (or a later one, kept again) go through :meth:`handle`; earlier ones are dropped."""
        kept, self.later = self.later, []
        actions: list[Action] = []
        for message in kept:
            if message.round >= self.opening or isinstance(message.body, Gone):
                actions += self.handle(message, now)
        return actions

    def interval_stats(self) -> dict[str, float]:
        """The participant's figures over the present interval (for its final report)."""
        totals = self.stats()
        self.reported = {k: v for k, v in totals.items() if k not in _NOT_PER_INTERVAL}
        figures = {
            key: value if key in _NOT_PER_INTERVAL else value - self.baseline.get(key, 0.0)
            for key, value in totals.items()
        }
        if "wall_s" in figures:
            busy = figures.get("crypto_s", 0.0) + figures.get("compute_s", 0.0)
            figures["wait_s"] = max(0.0, figures["wall_s"] - busy)
        return figures

    @abstractmethod
    def begin_interval(self, opening: int, body: IntervalStart, now: float) -> list[Action]:
        """The MO announced interval ``body.index``, opening at round ``opening``."""

    def interval_ended(self, code: int, now: float) -> list[Action]:
        """The interval's node finished: our part is done (an agent or the LM: its vote is
        cast, or the interval did not converge) — or it failed, and the day with it."""
        if code != EXIT_OK:
            self.log.error("interval %d failed here; leaving the day", self.index)
            self.finish(code)
        return []

    def closed(self, body: Closed) -> list[Action]:
        """The MO closed the day."""
        self.log.info("the MO closed the day: %s", body.reason)
        self.finish(EXIT_OK)
        return []

    # -- restarts ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any] | None:
        inner = None if self.inner is None else self.inner.snapshot()
        return {
            "index": self.index,
            "opening": self.opening,
            "stopped_at": self.stopped_at,
            "baseline": dict(self.baseline),
            "reported": self.reported,
            "inner": inner,
            **self.day_snapshot(),
        }

    def day_snapshot(self) -> dict[str, Any]:
        """The role's own day state for the checkpoint."""
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        index, opening = int(state["index"]), int(state["opening"])
        if index:
            inner = self.rebuild(index, opening, state)
            inner.restore(state["inner"])
            inner.restored = True
            self.switch(index, opening, inner)
            stopped = state["stopped_at"]
            self.stopped_at = None if stopped is None else int(stopped)
            self.baseline = {k: float(v) for k, v in state["baseline"].items()}
        reported = state.get("reported")  # absent from an older checkpoint
        self.reported = None if reported is None else {k: float(v) for k, v in reported.items()}

    @abstractmethod
    def rebuild(self, index: int, opening: int, state: Mapping[str, Any]) -> Node:
        """Interval ``index``'s node, as it was built (before its state is restored)."""
