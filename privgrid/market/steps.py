"""Step sizes of a round, and the Market Operator's rule that adapts them (docs/market.md).

Every round uses ``τ_k = τ·2^e``, ``α_k = α·2^-e`` and ``σ_k = σ₀·2^-e`` for one integer
exponent ``e`` that the MO announces in its ``round`` message. Scaling by a power of two is
exact in binary floating point, so every participant turns the announced integer into the same
bits, and the products ``τα`` and ``τσ`` — hence the step condition of the Chambolle–Pock
method — are the same in every round, bit for bit.

:class:`StepController` is the MO's rule (residual balancing): pure, deterministic, no I/O and
no transcendental functions (only comparisons and correctly rounded ``×``, ``/``), so the
in-process negotiation, which feeds it the same quantised residuals the MO receives, takes the
same decisions on any platform. It changes the exponent at most :attr:`StepRule.max_changes`
times; after the last change the steps are constant, which is what the convergence argument of
docs/market.md needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from privgrid.market.stopping import Residuals

FIXED, ADAPTIVE = "fixed", "adaptive"


@dataclass(frozen=True)
class StepSizes:
    """The steps of one round: τ (agents' proximal step), α (prices), σ (line prices)."""

    tau: float
    alpha: float
    sigma: float

    def scaled(self, exponent: int) -> StepSizes:
        """``(τ·2^e, α·2^-e, σ·2^-e)``: exact, so ``τα`` and ``τσ`` keep their bits."""
        return StepSizes(
            math.ldexp(self.tau, exponent),
            math.ldexp(self.alpha, -exponent),
            math.ldexp(self.sigma, -exponent),
        )


@dataclass(frozen=True)
class StepRule:
    """The constants of the residual-balancing rule (measured: docs/performance.md).

    The balance of a round is ``b = τ_k · r_d / r_P``: the agents' primal residual (how far
    prices are from supporting the new trades, $/kW) over the reciprocity residual (kW),
    made dimensionless by the round's τ. Each ``window`` of rounds gives a vote, from its
    median balance: above ``high`` the primal side lags (τ should double, α and σ halve);
    below ``low`` the prices lag (τ should halve, α and σ double); in between, none.
    ``confirm`` consecutive windows voting the same way make the change. The ``settle``
    rounds after a change are not counted (the iteration needs them to respond).
    """

    window: int = 5
    confirm: int = 2
    low: float = 0.1
    high: float = 1.0
    settle: int = 7
    max_changes: int = 10
    max_exponent: int = 16


DEFAULT_RULE = StepRule()


class MarketSteps(Protocol):
    """What the controller needs of ``[market]``."""

    # Read-only members: the scenario's frozen section (steps a Literal) fits.
    @property
    def tau(self) -> float: ...
    @property
    def steps(self) -> str: ...


@dataclass
class StepController:
    """The MO's step exponent: ``observe`` each round's residuals, announce ``exponent``.

    With ``adaptive = False`` the exponent stays 0 (the published constant steps).
    """

    tau: float
    adaptive: bool = True
    rule: StepRule = DEFAULT_RULE
    exponent: int = 0
    changes: int = 0
    since: int = 0  # rounds observed since the last change
    balances: list[float] = field(default_factory=list)  # this window's, in round order
    votes: list[int] = field(default_factory=list)  # the consecutive equal votes so far
    history: list[tuple[int, int]] = field(default_factory=list)  # (first round, exponent)

    @classmethod
    def for_market(
        cls, market: MarketSteps, rule: StepRule = DEFAULT_RULE, exponent: int = 0
    ) -> StepController:
        """A fresh controller (every change still allowed) starting at ``exponent``: 0 for a
        new market, the previous market's last exponent for a warm start. Fixed steps
        ignore ``exponent``."""
        adaptive = market.steps == ADAPTIVE
        start = max(-rule.max_exponent, min(rule.max_exponent, exponent)) if adaptive else 0
        return cls(market.tau, adaptive, rule, exponent=start)

    @property
    def settled(self) -> bool:
        """True once no further change can happen (fixed steps, or every change used)."""
        return not self.adaptive or self.changes >= self.rule.max_changes

    def balance(self, residuals: Residuals) -> float | None:
        """``τ_k · r_d / r_P`` for this round, or ``None`` when it says nothing."""
        dual, reciprocity = residuals.dual, residuals.reciprocity
        if not (math.isfinite(dual) and math.isfinite(reciprocity)):
            return None
        if reciprocity == 0.0:
            return None if dual == 0.0 else math.inf
        return math.ldexp(self.tau, self.exponent) * dual / reciprocity

    def observe(self, round_: int, residuals: Residuals) -> int:
        """Take round ``round_``'s residuals; return the exponent of round ``round_ + 1``."""
        if self.settled:
            return self.exponent
        rule = self.rule
        self.since += 1
        if self.changes and self.since <= rule.settle:
            return self.exponent
        value = self.balance(residuals)
        if value is None:
            return self.exponent
        self.balances.append(value)
        if len(self.balances) < rule.window:
            return self.exponent
        median = sorted(self.balances)[len(self.balances) // 2]
        self.balances = []
        vote = 1 if median > rule.high else -1 if median < rule.low else 0
        self.votes = [*self.votes, vote] if self.votes[-1:] == [vote] else [vote]
        if vote == 0 or len(self.votes) < rule.confirm:
            return self.exponent
        self.votes = []
        target = max(-rule.max_exponent, min(rule.max_exponent, self.exponent + vote))
        if target != self.exponent:
            self.exponent = target
            self.changes += 1
            self.since = 0
            self.history.append((round_ + 1, target))
        return self.exponent

    def snapshot(self) -> dict[str, Any]:
        """The controller's state for the MO's checkpoint (floats travel exactly in msgpack)."""
        return {
            "exponent": self.exponent,
            "changes": self.changes,
            "since": self.since,
            "balances": list(self.balances),
            "votes": list(self.votes),
            "history": [list(h) for h in self.history],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.exponent = int(state["exponent"])
        self.changes = int(state["changes"])
        self.since = int(state["since"])
        self.balances = [float(b) for b in state["balances"]]
        self.votes = [int(v) for v in state["votes"]]
        self.history = [(int(r), int(e)) for r, e in state["history"]]
