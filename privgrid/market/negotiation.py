"""The whole negotiation in one process: every role's pure function, in the order of a round.

This is the reference the multi-process run must reproduce bit for bit: agents step one at a
time with exactly the arrays their processes would hold, price shares cross in fixed point,
the LM and the MO run their steps on the quantised values they would receive, and the MO's
step controller (:mod:`privgrid.market.steps`) takes the same decisions from the same
residuals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from privgrid.market.agent_step import AgentCost, local_step
from privgrid.market.derive import derive_partner
from privgrid.market.fixedpoint import decode, quantise_scalar
from privgrid.market.line_step import (
    LinePrices,
    aggregate_flows,
    charges_for,
    flow_contribution,
    line_update,
    lm_step,
    reciprocity_residual,
    relaxed_flows,
)
from privgrid.market.price import combine_fixed, price_shares, share_to_fixed
from privgrid.market.setup import MarketSetup
from privgrid.market.steps import StepController, StepSizes
from privgrid.market.stopping import AgentReport, Residuals, converged, round_residuals


@dataclass(frozen=True)
class RoundRecord:
    """One row of the trace: residuals and welfare after round ``round``, and the step
    exponent the round used (:mod:`privgrid.market.steps`)."""

    round: int
    residuals: Residuals
    welfare: float
    exponent: int = 0


@dataclass
class NegotiationState:
    """The state of every party, indexed by the canonical trade order."""

    trades: np.ndarray
    prices: np.ndarray
    charges: np.ndarray
    line_prices: LinePrices
    theta: np.ndarray  # per agent, private to each agent
    flows: np.ndarray | None = None  # masked leg: the LM's F(P^k) on the limited lines
    derived: np.ndarray | None = None  # masked leg: at t, the owner's view of trade mirror[t]
    #: The step exponent of the last round (public: the MO announced it to everyone); a warm
    #: start begins there instead of at 0, so a later market need not adapt again.
    exponent: int = 0

    @classmethod
    def initial(cls, setup: MarketSetup) -> NegotiationState:
        """Round 0 (algorithm.md §5.2): no trades, every price at λ⁰, no line prices."""
        t = setup.graph.n_trades
        return cls(
            np.zeros(t),
            np.full(t, setup.scenario.market.lambda0),
            np.zeros(t),
            LinePrices.zero(len(setup.limited)),
            np.full(setup.graph.n_agents, np.nan),
            np.zeros(len(setup.limited)),
            np.zeros(t),
        )


@dataclass
class NegotiationResult:
    converged: bool
    rounds: int
    state: NegotiationState
    trace: list[RoundRecord] = field(default_factory=list)
    wall_time: float = 0.0


def welfare(setup: MarketSetup, costs: Mapping[str, AgentCost], trades: np.ndarray) -> float:
    """``SW = −Σ_n C_n(S_n)``."""
    g = setup.graph
    return -sum(costs[a].cost(float(trades[g.slots[i]].sum())) for i, a in enumerate(g.agent_ids))


def negotiate(
    setup: MarketSetup,
    costs: Mapping[str, AgentCost],
    *,
    max_rounds: int | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    observe: Callable[[int, NegotiationState, np.ndarray], None] | None = None,
    welfare_costs: Mapping[str, AgentCost] | None = None,
    initial: NegotiationState | None = None,
    controller: StepController | None = None,
) -> NegotiationResult:
    """Run rounds until the MO's stopping test holds or the round limit is reached.

    ``costs`` are what the agents play (:func:`~privgrid.market.setup.played_costs`: true, or
    I6-perturbed); the trace's welfare uses ``welfare_costs`` (default: ``costs``). The LM leg
    of ``privacy.lm_leg`` is replicated exactly: with ``"masked"`` the LM works from the sum
    of per-agent fixed-point flow contributions and the reciprocity residual comes from each
    agent's derived view of its partners' trades, as in the processes.
    ``observe(k, state, P̄)`` sees every round's complete state (for analyses and tests that
    need what each party held in each round; the role processes never call it).
    ``initial``: the state to start from instead of round 0 (a warm start: each party's own
    values from an earlier market, :func:`privgrid.market.warm.carry_over`); its arrays must
    have this market's shapes.

    ``controller`` decides each round's step exponent from the previous round's residuals, as
    the MO does (default: a fresh :class:`~privgrid.market.steps.StepController` for the
    scenario's ``market.steps``); pass one to read its decisions afterwards. Each trace row
    records the exponent its round used.
    """
    g = setup.graph
    market = setup.scenario.market
    masked = setup.scenario.privacy.lm_leg == "masked"
    welfare_costs = welfare_costs or costs
    limit = max_rounds if max_rounds is not None else market.max_rounds
    G = setup.G
    state = NegotiationState.initial(setup) if initial is None else initial
    if state.trades.shape != (g.n_trades,) or state.line_prices.up.shape != (len(setup.limited),):
        raise ValueError("the initial state does not fit this market (trades or lines differ)")
    trace: list[RoundRecord] = []
    controller = controller or StepController.for_market(market, exponent=state.exponent)
    base = StepSizes(market.tau, market.alpha, setup.sigma)
    started = time.perf_counter()
    for k in range(1, limit + 1):
        exponent = controller.exponent
        steps = base.scaled(exponent)
        new = np.empty(g.n_trades)
        bar = np.empty(g.n_trades)
        theta = np.empty(g.n_agents)
        duals = np.empty(g.n_agents)
        for i, agent in enumerate(g.agent_ids):  # Step 1: each agent alone
            s = g.slots[i]
            step = local_step(
                costs[agent],
                state.trades[s],
                state.prices[s],
                state.charges[s],
                g.lo[s],
                g.hi[s],
                steps.tau,
                market.rho,
            )
            new[s], bar[s], theta[i] = step.trades, step.extrapolated, step.theta
            duals[i] = step.residual
        # Step 2: λ_nm = A_nm + B_mn, shares crossing in fixed point.
        own, peer = price_shares(state.prices, bar, steps.alpha, market.beta, market.rho)
        peer_fixed = share_to_fixed(peer)
        prices = combine_fixed(share_to_fixed(own), peer_fixed[g.mirror])
        # Step 3: the LM, on the trades it received or on masked flow contributions.
        flows, derived = state.flows, state.derived
        mismatch: np.ndarray | None = None  # masked leg: the agents report r_P, not the LM
        reciprocity: float | None = None
        if masked:
            if state.flows is None or state.derived is None:
                raise ValueError("the masked LM leg needs the state's flows and derived trades")
            contributions = [flow_contribution(G[:, s], bar[s]) for s in g.slots]
            flows_bar = aggregate_flows(contributions)
            flows = relaxed_flows(state.flows, flows_bar, market.rho)
            line = line_update(
                flows_bar, setup.fmax, steps.sigma, market.rho, state.line_prices, flows
            )
            view = derive_partner(
                decode(peer_fixed[g.mirror]),
                state.prices[g.mirror],
                state.derived,
                steps.alpha,
                market.beta,
                market.rho,
            )
            derived = view.trades
            mismatch = np.abs(new + derived)  # each agent's view of its own pairs
        else:
            line = lm_step(
                G, setup.fmax, steps.sigma, market.rho, state.line_prices, state.trades, new
            )
            reciprocity = reciprocity_residual(new, g.mirror)
        charges = charges_for(G, line.prices)
        # Step 4: the MO, from what each agent and the LM would report.
        gaps = np.abs(prices - prices[g.mirror])
        reports = [
            AgentReport(
                float(duals[i]),
                float(np.max(gaps[s], initial=0.0)),
                None
                if mismatch is None
                else quantise_scalar(float(np.max(mismatch[s], initial=0.0))),
            )
            for i, s in enumerate(g.slots)
        ]
        residuals = round_residuals(reports, line.line_residual, reciprocity)
        state = NegotiationState(
            new, prices, charges, line.prices, theta, flows, derived, exponent
        )
        if observe is not None:
            observe(k, state, bar)
        record = RoundRecord(k, residuals, welfare(setup, welfare_costs, new), exponent)
        trace.append(record)
        if on_round is not None:
            on_round(record)
        if converged(residuals, market.epsilon_p, market.epsilon_lambda):
            return NegotiationResult(True, k, state, trace, time.perf_counter() - started)
        controller.observe(k, residuals)
    return NegotiationResult(False, limit, state, trace, time.perf_counter() - started)
