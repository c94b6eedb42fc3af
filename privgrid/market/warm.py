"""Warm start: the next market begins where the previous one ended, party by party.

Every value carried over is one its holder already has at the end of the previous market —
nothing moves between parties, so a warm start leaks nothing new (docs/privacy.md):

- each agent keeps, per partner it still trades with, its own trade ``P_nm``, price ``λ_nm``
  and (masked LM leg) its derived view of the partner's trade; a new partner starts from
  round 0 (no trade, price λ⁰);
- the LM keeps its line prices η (the limited lines are the same on one feeder), and the
  congestion charges of the new market follow from them, ``c = Gᵀ(η⁺ − η⁻)``, as the LM
  computes them each round;
- the step exponent the MO announced last (public) is where the next market's steps begin;
- the LM's tracked flows ``F(P)`` are re-aggregated from the agents' starting trades (on the
  wire: one masked aggregation at the start of the interval), so the relaxed-flow recursion
  starts exact even where pairs came or went.

A pair is identified by its two agent ids, so the trade graph may change between markets
(agents sitting an interval out, pairs whose roles cannot trade this time).
"""

from __future__ import annotations

import numpy as np

from privgrid.market.line_step import (
    LinePrices,
    aggregate_flows,
    charges_for,
    flow_contribution,
)
from privgrid.market.negotiation import NegotiationState
from privgrid.market.setup import MarketSetup


def carry_over(
    previous: MarketSetup, state: NegotiationState, setup: MarketSetup
) -> NegotiationState:
    """``setup``'s initial state from ``previous``'s final ``state`` (see the module doc).

    Raises ``ValueError`` if the two markets do not limit the same lines.
    """
    old_lines = [previous.line_names[b] for b in previous.limited]
    new_lines = [setup.line_names[b] for b in setup.limited]
    if old_lines != new_lines:
        raise ValueError("a warm start needs the same limited lines in both markets")
    start = NegotiationState.initial(setup)
    g, old = setup.graph, previous.graph
    derived = start.derived if start.derived is not None else np.zeros(g.n_trades)
    for t in range(g.n_trades):
        owner, partner = g.agent_ids[g.owner[t]], g.agent_ids[g.partner[t]]
        try:
            s = old.trade(owner, partner)
        except (KeyError, ValueError):
            continue  # a new pair: round 0
        start.trades[t] = state.trades[s]
        start.prices[t] = state.prices[s]
        if state.derived is not None:
            derived[t] = state.derived[s]
    eta = LinePrices(state.line_prices.up.copy(), state.line_prices.down.copy())
    return NegotiationState(
        start.trades,
        start.prices,
        charges_for(setup.G, eta),
        eta,
        start.theta,
        aggregate_flows([flow_contribution(setup.G[:, s], start.trades[s]) for s in g.slots]),
        derived,
        state.exponent,
    )
