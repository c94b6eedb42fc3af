"""What the dashboard knows about a run: a pure model, fed by what a monitor may see.

Two kinds of input, and nothing else:

- **the broker's monitor view** (:mod:`.watch`): per message its kind, sender, recipient and
  round — the envelope, not the body — plus the few *public* body fields a monitor can read
  (a key announcement's ``incarnation``, a departure's ``incarnation``, the MO's ``stop`` and
  ``closed`` verdicts). Sealed bodies (residuals, violation reports, line prices) are never
  opened: a ``violation`` sent to the MO counts as "reported by its sender", not what it says;
- **the run folder** (:mod:`.files`): ``trace.csv`` (the MO's residuals per round),
  ``results.json`` (cleared trades, line flows and prices), ``logs/<id>.log`` (warnings and
  errors per participant), the public part of ``scenario.toml``, and for a day
  ``intervals/NNNN/results.json`` as each interval clears.

Every method takes the time ``now`` from its caller (no clock here), changes the state and
bumps :attr:`RunState.version`, which is all the server needs to know what to push.
:meth:`RunState.public` is what the page receives; it never holds an agent's cost
parameters or anything sealed (tests/test_dashboard_state.py checks this).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from privgrid.progress import distance, estimate_total_rounds

#: Participant states (the page words them: "not yet connected", "connected", …).
WAITING = "waiting"
CONNECTED = "connected"
MISSING = "missing"  # its last will came: the connection broke without a goodbye
FINISHED = "finished"  # connected when the MO closed the run
UNKNOWN = "unknown"  # no broker to watch: only the run folder is read

#: Run phases: before round 1, rounds going on, after the MO's ``stop``, after its ``closed``.
PHASE_WAITING, PHASE_RUNNING = "waiting", "running"
PHASE_STOPPING, PHASE_CLOSED = "stopping", "closed"

#: A line is shown as congested when its price is above this (the price is 0 on a free line)
#: or its flow is within this of its limit (kW).
CONGESTION_TOL = 1e-6
#: Events kept for the page's event list.
EVENTS_KEPT = 200
#: Rows of the trace kept for the ETA fit (the page gets every row).
FIT_ROWS = 400


@dataclass
class Participant:
    """One participant as a monitor sees it."""

    id: str
    role: str  # "agent", "LM" or "MO"
    bus: int | None = None
    state: str = WAITING
    incarnation: int = 0  # from its key announcements: > 0 after a restart
    gone_round: int | None = None  # the round it left in (while missing)
    last_round: int | None = None  # highest round of a message it sent that we saw
    last_seen: float | None = None  # ``now`` of that message
    messages: int = 0  # messages of its we saw (those to the MO, broadcasts, key)
    rejected: int = 0  # messages claiming to be its that failed the envelope check
    violations_reported: int = 0  # ``violation`` messages it sent to the MO (sealed)
    accused: int = 0  # violations naming it as offender (results.json, after the run)
    warnings: int = 0  # WARNING lines in logs/<id>.log
    errors: int = 0  # ERROR lines
    last_problem: str | None = None  # the last WARNING or ERROR message


@dataclass
class Interval:
    """One interval of a day, once its results.json is there."""

    index: int
    label: str
    start: str | None
    converged: bool
    rounds: int
    volume_kw: float  # Σ traded power of the bilateral trades (kW over the interval)
    price: float | None  # volume-weighted mean trade price (per kWh)
    congested: list[str]
    max_loading_pct: float | None


@dataclass
class RunState:
    """Everything the page shows, but the network geometry (:mod:`.network`)."""

    run: str
    kind: str = "run"  # "run" (one market) or "day" (intervals on a feeder)
    scenario: str | None = None
    mode: str | None = None
    epsilon_p: float | None = None
    epsilon_lambda: float | None = None
    max_rounds: int | None = None
    participants: dict[str, Participant] = field(default_factory=dict)
    round: int = 0
    phase: str = PHASE_WAITING
    stop: dict[str, Any] | None = None  # the MO's stop broadcast: converged, reason
    closed: dict[str, Any] | None = None  # the MO's closed broadcast: committed, reason
    #: Rows ``round, r_P, r_L, r_d, r_C, elapsed_s``; None for a value that is not finite.
    trace: list[list[float | None]] = field(default_factory=list)
    trace_epoch: int = 0  # +1 when the trace is replaced (not appended): pages start over
    estimated_rounds: int | None = None
    line_limits: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] | None = None  # summary of results.json
    lines: list[dict[str, Any]] = field(default_factory=list)  # cleared: flow, price, loading
    trades: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[list[str]] = field(default_factory=list)
    intervals: dict[int, Interval] = field(default_factory=dict)
    intervals_total: int | None = None
    broker: str = "connecting"  # how the monitor view stands, in words
    broker_connected: bool = False
    signatures: str = "not checked"
    events: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    stopping: bool = False  # the dashboard is shutting down (this is the last state)
    watching: bool = True  # False: no broker account, participants' connections are unknown
    version: int = 0

    # -- set-up ----------------------------------------------------------------------------
    def set_scenario(self, public: Mapping[str, Any]) -> None:
        """The public part of the scenario (:func:`.files.public_scenario`)."""
        self.scenario = public.get("name")
        self.mode = public.get("mode")
        self.epsilon_p = public.get("epsilon_p")
        self.epsilon_lambda = public.get("epsilon_lambda")
        self.max_rounds = public.get("max_rounds")
        self.line_limits = dict(public.get("line_limits", {}))
        self.pairs = [list(p) for p in public.get("pairs", [])]
        for agent in public.get("agents", []):
            self._participant(agent["id"], "agent").bus = agent.get("bus")
        for pid in public.get("others", []):
            self._participant(pid, pid)
        self._changed()

    def _participant(self, pid: str, role: str | None = None) -> Participant:
        known = self.participants.get(pid)
        if known is None:
            known = Participant(pid, role or "agent", state=WAITING if self.watching else UNKNOWN)
            self.participants[pid] = known
        return known

    def _changed(self) -> None:
        self.version += 1

    def _event(self, now: float, text: str, level: str = "info") -> None:
        self.events.append([now, level, text])

    # -- the broker's monitor view -------------------------------------------------------------
    def set_broker(self, text: str, connected: bool, now: float) -> None:
        if (text, connected) != (self.broker, self.broker_connected):
            if not connected and self.phase == PHASE_CLOSED:
                text = "the broker has stopped: the run is over"
            self.broker, self.broker_connected = text, connected
            calm = connected or self.phase == PHASE_CLOSED or text.startswith("connecting")
            self._event(now, f"broker: {text}", "info" if calm else "warning")
            self._changed()

    def observe(
        self,
        kind: str,
        sender: str,
        recipient: str,
        round_: int,
        public: Mapping[str, Any] | None,
        now: float,
    ) -> None:
        """A message a monitor saw: envelope fields and, for public kinds, the body's map.

        ``recipient`` is ``*`` for broadcasts and key announcements. Unknown senders are
        ignored (the roster, or the scenario, says who takes part)."""
        p = self.participants.get(sender)
        if p is None:
            return
        body = public or {}
        if kind == "key":
            self._announced(p, _count(body.get("incarnation")), now)
        elif kind == "gone":
            self._departed(p, _count(body.get("incarnation")), now)
            return  # a last will is the broker speaking for it, not a sign of life
        else:
            if p.state in (WAITING, MISSING) and self.phase != PHASE_CLOSED:
                self._set_state(p, CONNECTED, now)
            if kind == "violation" and recipient != "*":
                p.violations_reported += 1
                self._event(
                    now,
                    f"{sender} reported a violation to {recipient} in round "
                    f"{round_} (sealed: the accusation is in results.json at the end)",
                    "error",
                )
            elif kind == "round" and round_ > self.round:
                self.round = round_
                if self.phase == PHASE_WAITING:
                    self.phase = PHASE_RUNNING
                    self._event(now, "round 1 started: every participant has announced itself")
            elif kind == "stop":
                self.stop = {
                    "converged": bool(body.get("converged")),
                    "reason": str(body.get("reason", "")),
                }
                if self.phase in (PHASE_WAITING, PHASE_RUNNING):
                    self.phase = PHASE_STOPPING
                verdict = "converged" if self.stop["converged"] else "stopped"
                self._event(
                    now,
                    f"MO: {verdict} after round {round_}: {self.stop['reason']}",
                    "info" if self.stop["converged"] else "error",
                )
            elif kind == "closed":
                self.closed = {
                    "committed": bool(body.get("committed")),
                    "reason": str(body.get("reason", "")),
                }
                self.phase = PHASE_CLOSED
                committed = "block committed" if self.closed["committed"] else "no block"
                self._event(now, f"MO closed the run ({committed}): {self.closed['reason']}")
                for other in self.participants.values():
                    if other.state == CONNECTED:
                        other.state = FINISHED
        p.messages += 1
        p.last_seen = now
        if kind not in ("key", "gone") and (p.last_round is None or round_ > p.last_round):
            p.last_round = round_
        self._changed()

    def _announced(self, p: Participant, incarnation: int, now: float) -> None:
        if incarnation < p.incarnation:
            return  # an older announcement (retained copies may arrive late)
        restarted = incarnation > p.incarnation
        p.incarnation = incarnation
        if p.state == MISSING and not restarted:
            return  # the same incarnation that left: still gone
        p.gone_round = None
        if restarted:
            self._event(now, f"{p.id} restarted (restart {incarnation}) and rejoined", "warning")
        if self.phase != PHASE_CLOSED:
            self._set_state(p, CONNECTED, now)

    def _departed(self, p: Participant, incarnation: int, now: float) -> None:
        if incarnation < p.incarnation:
            return  # the last will of an incarnation that has been replaced already
        p.gone_round = self.round
        if self.phase == PHASE_CLOSED:
            return
        self._set_state(p, MISSING, now)
        self._event(
            now,
            f"{p.id} left the run during round {self.round} (its last will: the "
            "connection broke without a goodbye)",
            "error",
        )
        self._changed()

    def _set_state(self, p: Participant, state: str, now: float) -> None:
        if p.state != state:
            if state == CONNECTED and p.state == WAITING:
                self._event(now, f"{p.id} announced itself")
            p.state = state

    def rejected(self, sender: str | None, reason: str, now: float) -> None:
        """A message that failed the envelope check (bad signature, not in the roster …)."""
        p = self.participants.get(sender or "")
        if p is not None:
            p.rejected += 1
        self._event(
            now, f"a message claiming to be from {sender or '?'} was rejected: {reason}", "error"
        )
        self._changed()

    # -- the run folder --------------------------------------------------------------------
    def set_trace(self, rows: Sequence[Sequence[float]], replace: bool = False) -> None:
        """Rows ``round, r_P, r_L, r_d, r_C, elapsed_s`` of trace.csv: appended, or (the MO
        rewrote the file) replacing what was there."""
        if replace:
            self.trace = []
            self.trace_epoch += 1
        known = int(self.trace[-1][0] or 0) if self.trace else 0
        fresh = [[_finite(x) for x in r[:6]] for r in rows if int(r[0]) > known]
        if not fresh and not replace:
            return
        self.trace += fresh
        if self.trace:
            self.round = max(self.round, int(self.trace[-1][0] or 0))
            if self.phase == PHASE_WAITING:
                self.phase = PHASE_RUNNING
        self._estimate()
        self._changed()

    def _estimate(self) -> None:
        if self.epsilon_p is None or self.epsilon_lambda is None or not self.trace:
            return
        points = []
        for r in self.trace[-FIT_ROWS:]:
            pairs = zip(("r_P", "r_L", "r_d", "r_C"), r[1:5], strict=True)
            values = {key: v for key, v in pairs if v is not None}
            if r[0] is not None and len(values) == 4:  # the round is never None (update)
                points.append((int(r[0]), distance(values, self.epsilon_p, self.epsilon_lambda)))
        self.estimated_rounds = estimate_total_rounds(points, self.max_rounds or 5000)

    def set_results(self, results: Mapping[str, Any], now: float) -> None:
        """results.json of the run: how it ended, the cleared lines and trades."""
        self.results = {
            key: results.get(key)
            for key in (
                "status",
                "error",
                "reason",
                "converged",
                "rounds",
                "social_welfare",
                "optimal_social_welfare",
                "welfare_gap",
            )
        }
        self.lines = cleared_lines(results.get("lines") or [])
        self.trades = [
            {k: t.get(k) for k in ("seller", "buyer", "power", "price", "charge")}
            for t in results.get("trades") or []
        ]
        for p in self.participants.values():
            p.accused = 0
            counters = (results.get("participants") or {}).get(p.id) or {}
            p.incarnation = max(p.incarnation, _count(int(counters.get("restarts") or 0)))
        for v in results.get("violations") or []:
            offender = self.participants.get(str(v.get("offender")))
            if offender is not None:
                offender.accused += 1
        status = results.get("status")
        self._event(
            now,
            f"results.json: {status}"
            + (f" — {results.get('error')}" if results.get("error") else ""),
            "info" if status == "converged" else "error",
        )
        self._changed()

    def set_log_counts(self, pid: str, warnings: int, errors: int, last: str | None) -> None:
        p = self.participants.get(pid)
        if p is None or (p.warnings, p.errors, p.last_problem) == (warnings, errors, last):
            return
        p.warnings, p.errors, p.last_problem = warnings, errors, last
        self._changed()

    def set_interval(self, interval: Interval, now: float) -> None:
        """One interval of a day cleared (its results.json appeared)."""
        self.kind = "day"
        self.intervals[interval.index] = interval
        self.lines = []  # the network shows the last cleared interval's lines
        self._event(
            now,
            f"interval {interval.label} cleared in {interval.rounds} rounds"
            + ("" if interval.converged else " (NOT converged)"),
            "info" if interval.converged else "error",
        )
        self._changed()

    def set_day(self, total: int | None, starts: Mapping[int, str] | None = None) -> None:
        """A day's plan: how many intervals, and (once day.json is there) their start times."""
        self.kind = "day"
        changed = total != self.intervals_total
        self.intervals_total = total
        for index, start in (starts or {}).items():
            interval = self.intervals.get(index)
            if interval is not None and interval.start != start:
                interval.start, changed = start, True
        if changed:
            self._changed()

    def set_day_lines(self, lines: Iterable[Mapping[str, Any]]) -> None:
        """The line flows and prices of the latest cleared interval."""
        self.lines = cleared_lines(list(lines))
        self._changed()

    def set_stopping(self) -> None:
        self.stopping = True
        self._changed()

    # -- what the page gets ----------------------------------------------------------------
    def public(self) -> dict[str, Any]:
        """The page's state (JSON-able), without the trace rows (sent incrementally)."""
        return {
            "run": self.run,
            "kind": self.kind,
            "scenario": self.scenario,
            "mode": self.mode,
            "epsilon_p": self.epsilon_p,
            "epsilon_lambda": self.epsilon_lambda,
            "max_rounds": self.max_rounds,
            "round": self.round,
            "phase": self.phase,
            "stop": self.stop,
            "closed": self.closed,
            "estimated_rounds": self.estimated_rounds,
            "trace_rows": len(self.trace),
            "trace_epoch": self.trace_epoch,
            "participants": [asdict(p) for p in self.participants.values()],
            "line_limits": self.line_limits,
            "results": self.results,
            "lines": self.lines,
            "trades": self.trades,
            "pairs": self.pairs,
            "intervals": [asdict(i) for _, i in sorted(self.intervals.items())],
            "intervals_total": self.intervals_total,
            "broker": self.broker,
            "broker_connected": self.broker_connected,
            "signatures": self.signatures,
            "events": list(self.events)[-50:],
            "stopping": self.stopping,
            "version": self.version,
        }


def cleared_lines(lines: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """results.json's lines with their loading (|flow| / limit) and whether congested."""
    out = []
    for ln in lines:
        flow, limit = ln.get("flow"), ln.get("limit")
        up, down = ln.get("price_up") or 0.0, ln.get("price_down") or 0.0
        loading = abs(flow) / limit if flow is not None and limit else None
        congested = limit is not None and (
            max(up, down) > CONGESTION_TOL
            or (flow is not None and abs(flow) >= limit - CONGESTION_TOL)
        )
        out.append(
            {
                "id": ln.get("id"),
                "flow": flow,
                "limit": limit,
                "loading": loading,
                "price": max(up, down),
                "price_up": up,
                "price_down": down,
                "congested": bool(congested),
            }
        )
    return out


def interval_from_results(index: int, label: str, results: Mapping[str, Any]) -> Interval:
    """A day's interval row from its results.json (the ordinary results schema)."""
    volume = value = 0.0
    for t in results.get("trades") or []:
        power = max(0.0, float(t.get("power") or 0.0))
        volume += power
        value += power * float(t.get("price") or 0.0)
    lines = cleared_lines(results.get("lines") or [])
    loadings = [ln["loading"] for ln in lines if ln["loading"] is not None]
    return Interval(
        index=index,
        label=label,
        start=None,
        converged=bool(results.get("converged")),
        rounds=int(results.get("rounds") or 0),
        volume_kw=volume,
        price=value / volume if volume > 1e-12 else None,
        congested=[ln["id"] for ln in lines if ln["congested"]],
        max_loading_pct=100 * max(loadings) if loadings else None,
    )


def _finite(value: float) -> float | None:
    x = float(value)
    return x if math.isfinite(x) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
