"""What objective perturbation (I6) buys and costs, over many sessions, in one process.

``privgrid experiment collusion`` measures I6 with real processes on a real broker over a few
sessions (five by default, each a full run of a few hundred rounds). One session's noise is
one draw of ``ã = a(1 + U[−r, r])``, ``b̃ = b + Laplace(σ_b)``, …
(:mod:`privgrid.market.perturb`), so a median of five is itself noisy. This module computes,
per session, the same two quantities the wire experiment reports — the coalition's estimate
error of the target's data and the welfare loss against the unperturbed optimum — cheaply
enough for thousands of sessions:

- **Welfare loss**: exactly the wire experiment's column. There it is already computed in one
  process — the evaluator's honest baseline (:func:`privgrid.attack.evaluate.honest_baseline`:
  the in-process negotiation of the session with the costs the agents play, which a run
  reproduces bit for bit), valued at the true costs, against the centralised optimum of the true
  costs (what ``results.json`` calls ``optimal_social_welfare``). Here the same functions run
  per session.
- **Estimates**: the coalition's coordinator (:class:`privgrid.attack.coordinator.Coordinator`,
  the colluders' own code) walks its phases — ramp up to the Pmax plateau, down to the Pmin
  plateau, hold each probe price — against the target's *settled* response to the price it is
  steered to, ``S(L) = clip((L − b̃)/ã, P̃min, P̃max)`` (:meth:`AgentCost.best_total` of the
  cost the target plays), and its own estimators produce the estimates. This is exact, not an
  approximation of the wire run: the estimators use only settled points — the mean output
  over a plateau (the target pinned at a played bound) and the output after ``hold_rounds`` at
  a probe price (the target's exact local step at rest, θ = ã·S + b̃ = price − charge) — and on
  the wire those points are the played problem's to ~1e-10 (the unperturbed rows of the
  collusion table). The transient between points changes which probe prices the coordinator
  picks, not the line they lie on, so the fit returns the played (ã, b̃) and the plateaus the
  played (P̃max, P̃min). The walk's ramp starts from the wire's own price (the honest
  negotiation's after round ``start_round − 1``, :class:`WarmupPrice`), so it meets the bounds
  as the wire run does. That matters when the coordinator's plateau rule misfires: a target
  sitting at one played bound for more than ``4 × plateau_window`` rounds of a ramp looks
  saturated (a total at a bound is exact and constant on the wire too), so both plateaus land
  on the same bound, no probe point is inside and there is no (a, b) — on the wire as here.
  ``tests/test_perturbation.py`` checks a session of each kind against a real run of it.

Sessions are numbered as in the wire experiment: session i uses scenario seed ``seed + i``
(:func:`privgrid.market.perturb.session_seed`), so sessions 0–4 are exactly the five sessions
of ``privgrid experiment collusion``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from privgrid.attack.coordinator import RELEASE, Coordinator
from privgrid.attack.estimators import PairRecord, relative_error
from privgrid.attack.evaluate import honest_baseline, welfare_loss_vs_optimum
from privgrid.market.agent_step import AgentCost
from privgrid.market.central import solve_central
from privgrid.market.negotiation import NegotiationState
from privgrid.market.setup import MarketSetup, agent_costs, build_setup, played_cost
from privgrid.scenario import AttackSection, Scenario

#: The estimated quantities, as ``attack.json`` names their errors.
QUANTITIES = ("a", "b", "pmax", "pmin")
#: A walk that has not released after this many rounds is a bug (the wire run caps rounds too).
MAX_WALK_ROUNDS = 20_000


class WarmupPrice:
    """The price the coordinator's ramp starts from, taken from the session's honest
    negotiation: the mean of the target's prices with the colluders after the last honest round
    (``start_round − 1``) — what the colluders hold at that point on the wire, bit for bit (an
    attacked run is the honest run until then). Pass it as ``observe``."""

    def __init__(self, setup: MarketSetup) -> None:
        attack = setup.scenario.attack
        assert attack is not None
        g = setup.graph
        self.round = attack.start_round - 1
        self.trades = [g.trade(attack.target, c) for c in attack.colluders]
        self.price = setup.scenario.market.lambda0  # start_round 1: no honest round at all

    def __call__(self, round_: int, state: NegotiationState, _bar: np.ndarray) -> None:
        if round_ == self.round:
            self.price = float(np.mean(state.prices[self.trades]))


def coalition_estimates(
    attack: AttackSection, played: AgentCost, start_price: float
) -> dict[str, float | None]:
    """The coordinator's estimates of a target that plays ``played`` and settles at once.

    Every colluding pair is held at the coordinator's price ``L`` (no congestion charge: the
    coordinator fits ``price − charge``, so a charge only shifts L); the target's total is its
    settled response, split evenly over the colluding pairs (the estimators use the pooled
    total only). The walk follows the ``probe`` strategy whatever ``attack.strategy`` says: on
    the wire the passive fit agrees with the probe to ~1e-10 (the collusion table), and only
    the probe also estimates Pmax and Pmin.

    Returns:
        ``{"a", "b", "pmax", "pmin"}``: the active fit and the plateaus (None where the walk
        found none, as ``attack.json`` would show).
    """
    attack = attack.model_copy(update={"strategy": "probe"})
    colluders = list(attack.colluders)
    share = 1.0 / len(colluders)
    coordinator = Coordinator(attack, colluders)
    price = start_price
    for round_ in range(1, MAX_WALK_ROUNDS + 1):
        total = played.best_total(price)
        part = total * share
        for colluder in colluders:
            coordinator.add(
                PairRecord(round_, colluder, price, 0.0, part, part, part, -part, price)
            )
        order = coordinator.next_order(round_)
        if order.price is not None:
            price = order.price
        if order.phase == RELEASE:
            break
    else:
        raise RuntimeError(f"the coordinator did not release within {MAX_WALK_ROUNDS} rounds")
    found = coordinator.estimates()
    return {
        "a": found["active"]["a"],
        "b": found["active"]["b"],
        "pmax": found["pmax"],
        "pmin": found["pmin"],
    }


@dataclass(frozen=True)
class Session:
    """One I6 session of the target: what it played, what the coalition found, what it cost."""

    index: int
    seed: int  # the scenario seed of the session
    played: dict[str, float]  # ã, b̃, P̃min, P̃max
    estimates: dict[str, float | None]
    errors: dict[str, float | None]  # relative to the truth, as attack.json
    played_errors: dict[str, float | None]  # of the played values (None: the truth is 0)
    welfare_loss: float | None  # (optimum − welfare) / |optimum|, as attack.json's honest run
    rounds: int  # of the honest negotiation
    converged: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def with_seed(scenario: Scenario, seed: int) -> Scenario:
    """The scenario of one session: the same market with another seed (fresh I6 noise)."""
    return scenario.model_copy(
        update={"scenario": scenario.scenario.model_copy(update={"seed": seed})}
    )


def sessions(scenario: Scenario, count: int) -> list[Session]:
    """``count`` sessions of ``scenario`` (its target's ``privacy_noise`` set), seeds
    ``seed, seed + 1, …`` — the wire experiment's numbering.

    Raises:
        ValueError: the scenario has no ``[attack]`` or its target plays no noise.
    """
    attack = scenario.attack
    if attack is None:
        raise ValueError(f"{scenario.source}: the scenario has no [attack] table")
    target = scenario.agent(attack.target)
    if target.privacy_noise is None:
        raise ValueError(f"{scenario.source}: the target {attack.target} has no privacy_noise")
    truth = agent_costs(scenario)
    true_target = truth[attack.target]
    optimum = solve_central(build_setup(scenario), truth).welfare
    out = []
    for i in range(count):
        seed = scenario.scenario.seed + i
        session = with_seed(scenario, seed)
        played = played_cost(session, attack.target)
        setup = build_setup(session)
        warmup = WarmupPrice(setup)
        honest = honest_baseline(setup, observe=warmup)
        estimates = coalition_estimates(attack, played, warmup.price)
        out.append(
            Session(
                index=i,
                seed=seed,
                played={"a": played.a, "b": played.b, "pmin": played.pmin, "pmax": played.pmax},
                estimates=estimates,
                errors={
                    q: relative_error(estimates[q], getattr(true_target, q)) for q in QUANTITIES
                },
                played_errors={
                    q: relative_error(getattr(played, q), getattr(true_target, q))
                    for q in QUANTITIES
                },
                welfare_loss=welfare_loss_vs_optimum(optimum, honest["welfare"]),
                rounds=int(honest["rounds"]),
                converged=bool(honest["converged"]),
            )
        )
    return out


@dataclass(frozen=True)
class Spread:
    """Median, interquartile range and 5–95 % range of a sample (linear interpolation between
    order statistics, numpy's default), and the sample size."""

    n: int
    median: float
    q25: float
    q75: float
    p5: float
    p95: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def spread(values: Sequence[float | None]) -> Spread | None:
    """The :class:`Spread` of the values that exist (None — no estimate — is left out)."""
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return None
    p5, q25, median, q75, p95 = np.percentile(present, [5, 25, 50, 75, 95])
    return Spread(int(present.size), float(median), float(q25), float(q75), float(p5), float(p95))


def group_medians(values: Sequence[float | None], size: int) -> list[float]:
    """The median of each consecutive, disjoint group of ``size`` sessions (values that exist;
    a group with none is skipped, an incomplete last group dropped): what ``size``-session
    experiments would report, one per group."""
    out = []
    for start in range(0, len(values) - size + 1, size):
        present = [v for v in values[start : start + size] if v is not None]
        if present:
            out.append(float(np.median(present)))
    return out


def summary(drawn: Sequence[Session], first: int = 5) -> dict[str, dict[str, Any]]:
    """Per column: ``all``, the spread over every session; ``first``, over the first ``first``
    sessions alone — the sessions a ``first``-session wire experiment runs, hence the figures
    it reports; ``medians_of_first``, the spread of the medians of disjoint groups of ``first``
    sessions — how far such a small sample's median may fall from the median of all.

    Columns: ``<q>_error`` for a, b, Pmax, Pmin — the coalition's estimate errors as
    ``attack.json`` has them, sessions without an estimate left out (as the wire experiment's
    medians leave them out; ``n`` says how many had one); ``played_<q>_error`` — the error of the
    played value, in every session (what a coalition learns whenever it recovers the played
    problem); ``welfare_loss``.
    """
    columns: dict[str, list[float | None]] = {}
    for q in QUANTITIES:
        columns[f"{q}_error"] = [s.errors[q] for s in drawn]
        columns[f"played_{q}_error"] = [s.played_errors[q] for s in drawn]
    columns["welfare_loss"] = [s.welfare_loss for s in drawn]
    out: dict[str, dict[str, Any]] = {}
    for name, values in columns.items():
        every, few = spread(values), spread(values[:first])
        groups = spread(group_medians(values, first))
        out[name] = {
            "all": None if every is None else every.as_dict(),
            "first": None if few is None else few.as_dict(),
            "medians_of_first": None if groups is None else groups.as_dict(),
        }
    return out
