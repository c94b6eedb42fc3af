"""The coalition's coordinator (protocol.md §9.2): pooled data in, a target price out.

The lowest colluder id coordinates. After every round it pools the colluders' views of their
pairs with the target and publishes the price ``L`` the coalition steers every colluding pair
to in the next round. Phases:

``warmup`` (honest play until ``start_round``) → ``up`` (L rises by ``ramp_step`` a round
until the target's pooled output stays unchanged for ``plateau_window`` rounds: Pmax^) →
``down`` (L falls until the next plateau: Pmin^) → ``probe`` (L held at each probe level for
``hold_rounds``; the settled (output, price) points give the active fit) → ``release`` (back
to honest play, so the market converges) — or ``passive``: no deviation at all.

Pure: no I/O, no clock; the colluder behaviour (:mod:`privgrid.attack.colluder`) drives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privgrid.attack.estimators import PairRecord, active_fit, passive_fit
from privgrid.scenario import AttackSection

WARMUP, UP, DOWN, PROBE, RELEASE, PASSIVE = "warmup", "up", "down", "probe", "release", "passive"
#: Give up a ramp that never plateaus (e.g. a target that always follows), then release.
MAX_RAMP_ROUNDS = 2000


@dataclass(frozen=True)
class Order:
    """What the colluders do in a round: honest play (``price`` None) or steer to ``price``."""

    round: int
    phase: str
    price: float | None


@dataclass
class Coordinator:
    attack: AttackSection
    colluders: Sequence[str]
    records: list[PairRecord] = field(default_factory=list)
    phase: str = WARMUP
    price: float | None = None
    history: list[tuple[int, str]] = field(default_factory=list)  # (first round, phase)
    window: list[float] = field(default_factory=list)  # pooled outputs since the last change
    pmax: float | None = None
    pmin: float | None = None
    price_high: float | None = None
    price_low: float | None = None
    levels: list[float] = field(default_factory=list)
    held: int = 0
    points: list[tuple[float, float]] = field(default_factory=list)  # (output, price − charge)
    ramp_rounds: int = 0
    start_output: float | None = None
    moving: bool = False

    def __post_init__(self) -> None:
        if self.attack.strategy == "passive":
            self.phase = PASSIVE
        self.history.append((1, self.phase))

    # -- pooling ---------------------------------------------------------------------------------
    def add(self, record: PairRecord) -> None:
        self.records.append(record)

    def complete(self, round_: int) -> bool:
        """Every colluder has reported round ``round_``."""
        return {r.colluder for r in self.records if r.round == round_} >= set(self.colluders)

    def _round(self, round_: int) -> tuple[float, float]:
        """(pooled output Ŝ, mean target price − charge) after round ``round_``."""
        recs = [r for r in self.records if r.round == round_]
        return sum(r.target for r in recs), float(np.mean([r.new_price for r in recs]))

    @property
    def _level(self) -> float:
        """The price being steered (set from the round's price when the attack starts)."""
        if self.price is None:
            raise RuntimeError("the colluders have no price to steer before the attack starts")
        return self.price

    def _set(self, phase: str, round_: int) -> None:
        self.phase, self.window, self.ramp_rounds = phase, [], 0
        self.start_output, self.moving = None, False
        self.history.append((round_, phase))

    def _plateau(self, output: float) -> bool:
        """Saturation: the output has moved since the ramp began and now stays put for
        ``plateau_window`` rounds (a ramp starting at a bound counts once it never moves)."""
        window = self.attack.plateau_window
        if self.start_output is None:
            self.start_output = output
        if not self.moving and abs(output - self.start_output) > 1e3 * self.attack.plateau_tol:
            self.moving, self.window = True, []
        self.window.append(output)
        self.window = self.window[-window:]
        flat = len(self.window) == window and max(self.window) - min(self.window) <= (
            self.attack.plateau_tol
        )
        return flat and (self.moving or self.ramp_rounds >= 4 * window)

    # -- deciding --------------------------------------------------------------------------------
    def next_order(self, done: int) -> Order:
        """The order for round ``done + 1``, once round ``done`` is complete."""
        attack, nxt = self.attack, done + 1
        output, price = self._round(done)
        if self.phase == WARMUP and nxt >= attack.start_round:
            self._set(UP, nxt)
            self.price = price
        elif self.phase in (UP, DOWN):
            self.ramp_rounds += 1
            if self._plateau(output):
                if self.phase == UP:
                    self.pmax, self.price_high = float(np.mean(self.window)), price
                    self._set(DOWN, nxt)
                    self.price = price
                else:
                    self.pmin, self.price_low = float(np.mean(self.window)), price
                    self._start_probe(nxt)
            elif self.ramp_rounds > MAX_RAMP_ROUNDS:
                self._set(RELEASE, nxt)
        elif self.phase == PROBE:
            self.held += 1
            if self.held >= attack.hold_rounds:
                self.points.append((output, price - self._charge(done)))
                self.levels.pop(0)
                self.held = 0
                if not self.levels:
                    self._set(RELEASE if attack.release else PROBE, nxt)
                    if not attack.release:
                        self.levels = [self._level]  # keep holding the last level
        if self.phase == UP:
            self.price = self._level + attack.ramp_step
        elif self.phase == DOWN:
            self.price = self._level - attack.ramp_step
        elif self.phase == PROBE and self.levels:
            self.price = self.levels[0]
        steering = self.phase in (UP, DOWN, PROBE)
        return Order(nxt, self.phase, self.price if steering else None)

    def _charge(self, round_: int) -> float:
        """The target's congestion charge on the colluding pairs (``c_tc = −c_ct``)."""
        return float(np.mean([r.charge for r in self.records if r.round == round_]))

    def _start_probe(self, round_: int) -> None:
        attack = self.attack
        if attack.probe_prices:
            self.levels = list(attack.probe_prices)
        else:
            low, high = sorted((self.price_low or 0.0, self.price_high or 0.0))
            self.levels = list(np.linspace(low, high, attack.probe_levels + 2)[1:-1])
        self.held = 0
        self._set(PROBE, round_)

    # -- what the coalition learnt ---------------------------------------------------------------
    def estimates(self) -> dict[str, Any]:
        interior = None
        if self.pmin is not None and self.pmax is not None:
            interior = (self.pmin, self.pmax)
        inside = [
            p
            for p in self.points
            if interior is None or interior[0] + 1e-6 < p[0] < interior[1] - 1e-6
        ]
        active = active_fit(inside)
        passive = passive_fit(self.records, interior)
        return {
            "strategy": self.attack.strategy,
            "pmax": self.pmax,
            "pmin": self.pmin,
            "active": {"a": active.a, "b": active.b, "points": active.points},
            "passive": {
                "a": passive.a,
                "b": passive.b,
                "inverse_tau": passive.extra,
                "points": passive.points,
                "rms": passive.residual,
            },
            "phases": [{"from_round": r, "phase": p} for r, p in self.history],
            "probe_points": [{"output": s, "price": p} for s, p in self.points],
            "rounds_recorded": len({r.round for r in self.records}),
        }
