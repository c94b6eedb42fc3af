"""Warm start: the next market begins where the previous one ended, party by party.

Every value carried over is one its holder already has at the end of the previous market —
nothing moves between parties, so a warm start leaks nothing new (docs/privacy.md):

- each agent keeps, per partner it still trades with, its own trade ``P_nm``, price ``λ_nm``
  and (masked LM leg) its derived view of the partner's trade; a new partner starts from
  round 0 (no trade, price λ⁰). Where the pair also traded in the market before the previous
  one, its trade (and the derived view) is *predicted* rather than copied (:func:`predicted`):
  the previous value plus :data:`PREDICT` times its change over the last interval — PV and
  load move smoothly through a day, so the next cleared trade lies, roughly, further along the
  same line. Both values are the holder's own, so this leaks nothing new either; both partners
  predict from the same numbers by the same formula, so their starting trades stay mirrored.
  Prices are carried, not predicted: predicted prices were measured to stall some intervals of
  day-semiurb4 for 5,000 rounds;
- the LM keeps its line prices η (the limited lines are the same on one feeder), and the
  congestion charges of the new market follow from them, ``c = Gᵀ(η⁺ − η⁻)``, as the LM
  computes them each round;
- the step exponent the MO announced last (public) is where the next market's steps begin —
  if the next market has the same agents (:func:`carried_exponent`): where agents joined or
  left, the previous market's balance of residuals says little about the new one, and a
  carried exponent was seen to stall the day (day-rural1: nine households join at 05:15,
  whose market, begun at the night's exponent −2, adapted to 8 in 719 rounds; 05:30 and 05:45,
  begun at 8, did not converge in 5,000 rounds each. With 05:15 begun at 0: 232, 191 and 217
  rounds);
- the LM keeps the flows ``F(P)`` it tracked (masked leg). They are not re-aggregated from the
  agents' starting trades: where pairs left, the difference between the two would tell the LM
  the flows of the departed pairs' last trades — on a radial feeder a single trade — which the
  masked leg never reveals (docs/privacy.md). Where pairs came or went the tracked flows are
  off by those pairs' flows at first; the relaxed-flow recursion forgets that error by the
  factor ``1 − ρ/2`` a round, and it enters only the overload part of ``r_L`` (the line prices
  follow the round's aggregate ``F̄``, which is exact).

On the wire (``privgrid run`` of a day, docs/feeder.md) each party carries these values in its
own process; the LM's one opening message per market gives every agent its starting charges
(an agent holds its kept pairs' charges already, but not a new pair's where the LM leg hides
the line prices from it).

A pair is identified by its two agent ids, so the trade graph may change between markets
(agents sitting an interval out, pairs whose roles cannot trade this time).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from privgrid.market.line_step import LinePrices, charges_for
from privgrid.market.negotiation import NegotiationState
from privgrid.market.setup import MarketSetup

#: How far along the last interval's change a warm start's trades begin (0: where the previous
#: market ended). Measured (docs/feeder.md "Warm start"): on day-rural1, 0.5–0.7 cut the warm
#: rounds' median by a quarter to a third; 1.0 (full linear extrapolation) overshoots where the
#: profiles jump between intervals and needs more rounds than no prediction.
PREDICT = 0.6


def predicted(last: float, before: float) -> float:
    """A warm start's value from its holder's last two cleared values (``last`` the newer):
    ``last + PREDICT·(last − before)``. The same arithmetic on floats and numpy arrays, so the
    in-process day and every participant process compute the same bits."""
    return last + PREDICT * (last - before)


def carried_exponent(previous: Iterable[str], agents: Iterable[str], exponent: int) -> int:
    """The step exponent a market of ``agents`` begins at after a market of ``previous``
    (agent ids) ended at ``exponent``: the same, if both have the same agents; else 0."""
    return exponent if set(previous) == set(agents) else 0


def carry_over(
    previous: MarketSetup,
    state: NegotiationState,
    setup: MarketSetup,
    before: tuple[MarketSetup, NegotiationState] | None = None,
) -> NegotiationState:
    """``setup``'s initial state from ``previous``'s final ``state`` (see the module doc).
    ``before``: the market before ``previous`` (its setup and final state), if it was the
    interval right before it; a pair that traded in both begins at its :func:`predicted`
    trade (and derived view); prices are carried.

    Raises ``ValueError`` if the two markets do not limit the same lines.
    """
    old_lines = [previous.line_names[b] for b in previous.limited]
    new_lines = [setup.line_names[b] for b in setup.limited]
    if old_lines != new_lines:
        raise ValueError("a warm start needs the same limited lines in both markets")
    start = NegotiationState.initial(setup)
    g = setup.graph
    derived = start.derived if start.derived is not None else np.zeros(g.n_trades)
    for t in range(g.n_trades):
        owner, partner = g.agent_ids[g.owner[t]], g.agent_ids[g.partner[t]]
        s = _slot(previous, owner, partner)
        if s is None:
            continue  # a new pair: round 0
        trade, price = state.trades[s], state.prices[s]
        view = None if state.derived is None else state.derived[s]
        e = None if before is None else _slot(before[0], owner, partner)
        if before is not None and e is not None:  # traded in both: predicted
            earlier = before[1]
            trade = predicted(trade, earlier.trades[e])
            if view is not None and earlier.derived is not None:
                view = predicted(view, earlier.derived[e])
        start.trades[t], start.prices[t] = trade, price
        if view is not None:
            derived[t] = view
    eta = LinePrices(state.line_prices.up.copy(), state.line_prices.down.copy())
    return NegotiationState(
        start.trades,
        start.prices,
        charges_for(setup.G, eta),
        eta,
        start.theta,
        start.flows if state.flows is None else np.array(state.flows, copy=True),
        derived,
        carried_exponent(previous.graph.agent_ids, g.agent_ids, state.exponent),
    )


def _slot(market: MarketSetup, owner: str, partner: str) -> int | None:
    """The trade slot of ``owner``'s pair with ``partner`` in ``market``, if it has one."""
    try:
        return market.graph.trade(owner, partner)
    except (KeyError, ValueError):
        return None
