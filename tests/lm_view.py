"""The honest-but-curious LM (protocol.md §7.2, Theorem 2): every trade reveals everything.

An LM that receives every agent's trades each round (the published design) reconstructs every
price — with a common λ⁰ the pair price follows ``λ(k+1) = λ(k) − ρα(P̄_nm(k) + P̄_mn(k))`` —
and then every agent's a and b from its exact local step: for an unclipped trade,
``λ_nm(k) − c_nm(k) − (P̂_nm(k+1) − P_nm(k))/τ = a_n Ŝ_n(k+1) + b_n``, linear in (a, b, 1/τ).
The LM knows its own charges; everything else here is public (λ⁰, α, β, ρ, the trade graph,
and each round's step exponent, which the record keeps: with adaptive steps the round used
``τ₀·2^e`` and ``α₀·2^-e``, so the fit's third column is ``(P̂ − P)/2^e`` and its coefficient
is ``1/τ₀``).

:func:`reconstruct` uses only the LM's audit record (``python -m line_manager --record``) and
public data. With masked aggregation (I5) the record holds masked flow shares only and there is
nothing per agent to reconstruct from.

The evaluator of tests/test_collusion.py (docs/privacy.md, conclusion 2); nothing in the
product runs it, so it lives with the tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from privgrid.attack.estimators import Fit, consensus_fit, not_repeated
from privgrid.market.agent_step import extrapolate
from privgrid.market.line_step import LinePrices, charges_for, line_update
from privgrid.market.setup import MarketSetup
from privgrid.market.steps import StepSizes


def read_record(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trades_by_round(setup: MarketSetup, record: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """The record's trades as one row per round (canonical trade order)."""
    g = setup.graph
    rounds: dict[int, np.ndarray] = {}
    for entry in record:
        row = rounds.setdefault(entry["round"], np.full(g.n_trades, np.nan))
        row[g.slots[g.index(entry["from"])]] = entry["received"]
    ordered = [rounds[r] for r in sorted(rounds)]
    if any(np.isnan(row).any() for row in ordered):
        raise ValueError("the record does not hold every agent's trades every round")
    return np.array(ordered)


def steps_by_round(record: Iterable[Mapping[str, Any]]) -> list[int]:
    """Each round's step exponent (0 for records written before the LM kept it)."""
    exponents: dict[int, int] = {}
    for entry in record:
        exponents[entry["round"]] = int(entry.get("steps", 0))
    return [exponents[r] for r in sorted(exponents)]


def reconstruct(setup: MarketSetup, record: Iterable[Mapping[str, Any]]) -> dict[str, Fit]:
    """Every agent's (a, b) from the trades the LM received (and 1/τ as a check).

    An agent whose total was never strictly inside its bounds for three rounds (pinned at a
    bound from the start) reveals only that bound: its fit is ``None`` — not identifiable.
    """
    g, m = setup.graph, setup.scenario.market
    record = list(record)
    P = trades_by_round(setup, record)
    exponents = steps_by_round(record)
    rows: dict[int, list[list[float]]] = {i: [] for i in range(g.n_agents)}
    ys: dict[int, list[float]] = {i: [] for i in range(g.n_agents)}
    rounds: dict[int, list[int]] = {i: [] for i in range(g.n_agents)}
    price = np.full(g.n_trades, m.lambda0)
    charges = np.zeros(g.n_trades)
    eta = LinePrices.zero(len(setup.limited))
    old = np.zeros(g.n_trades)
    base = StepSizes(m.tau, m.alpha, setup.sigma)
    for k, new in enumerate(P):
        exponent = exponents[k]
        steps = base.scaled(exponent)
        bar = extrapolate(old, new, m.rho)
        target = old + (new - old) / m.rho  # P̂: the step before over-relaxation
        for i, s in enumerate(g.slots):
            total = float(target[s].sum())
            for t in s:
                if abs(target[t]) > 1e-6:  # a clipped trade says nothing about θ
                    rows[i].append([total, 1.0, math.ldexp(target[t] - old[t], -exponent)])
                    ys[i].append(price[t] - charges[t])
                    rounds[i].append(k)
        # The LM replays the price update and its own line prices from the same trades.
        price = price - m.rho * steps.alpha * (bar + bar[g.mirror])
        line = line_update(setup.G @ bar, setup.fmax, steps.sigma, m.rho, eta, setup.G @ new)
        eta, charges, old = line.prices, charges_for(setup.G, line.prices), new
    fits = {}
    for i, agent in enumerate(g.agent_ids):
        X, y = np.array(rows[i]), np.array(ys[i])
        if len(y) < 3:
            fits[agent] = Fit(None, None, len(y), float("nan"))
            continue
        moving = not_repeated(X[:, 0], np.array(rounds[i]))  # pinned totals repeat exactly
        if len(set(np.array(rounds[i])[moving].tolist())) < 3:
            # Never inside its bounds for three rounds: only inequalities, (a, b) unknowable.
            fits[agent] = Fit(None, None, int(moving.sum()), float("nan"))
            continue
        X, y = X[moving], y[moving]
        coef, keep = consensus_fit(X, y)
        residual = y[keep] - X[keep] @ coef
        fits[agent] = Fit(
            float(coef[0]),
            float(coef[1]),
            int(keep.sum()),
            float(np.sqrt(np.mean(residual**2))),
            float(coef[2]),
        )
    return fits
