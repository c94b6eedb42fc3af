"""Step 1 of a round: the agent's exact local (proximal) step (algorithm.md §5.3).

Inputs are only what agent n may hold: its own trades, prices and charges, its private cost
and bounds, and the public step sizes. Output trades are quantised to the wire resolution
because they are sent to the LM; the agent keeps the same quantised values, so every party
works with identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privgrid.market.fixedpoint import quantise, quantise_scalar


@dataclass(frozen=True)
class AgentCost:
    """An agent's private data: ``C(S) = ½ a S² + b S`` with ``pmin ≤ S ≤ pmax``."""

    a: float
    b: float
    pmin: float
    pmax: float

    def cost(self, total: float) -> float:
        return 0.5 * self.a * total * total + self.b * total

    def best_total(self, theta: float) -> float:
        """The total that marginal value ``theta`` supports: ``clip((θ − b)/a, pmin, pmax)``
        (an agent's settled response to a price; the perturbation experiment's estimators
        work from it)."""
        return min(max((theta - self.b) / self.a, self.pmin), self.pmax)


@dataclass(frozen=True)
class LocalStep:
    """Result of one local step for one agent (arrays in the agent's partner order)."""

    trades: np.ndarray  # P^{k+1}, quantised: sent to the LM, kept as new state
    extrapolated: np.ndarray  # P̄ = P^k + (2/ρ)(P^{k+1} − P^k): enters the price update
    theta: float  # private marginal value θ_n^{k+1}; never sent
    residual: float  # r_d,n = max |P̂ − P^k| / τ, quantised: sent to the MO


def extrapolate(old: np.ndarray, new: np.ndarray, rho: float) -> np.ndarray:
    """``P̄ = P^k + (2/ρ)(P^{k+1} − P^k)``, shared by agents and the LM so both get the same P̄."""
    extrapolated: np.ndarray = old + (2.0 / rho) * (new - old)
    return extrapolated


def solve_theta(
    cost: AgentCost, v: np.ndarray, lo: np.ndarray, hi: np.ndarray, tau: float
) -> float:
    """Root of ``ψ(θ) = Σ clip(v − τθ, lo, hi) − clip((θ − b)/a, pmin, pmax)``.

    ψ is continuous, piecewise linear and non-increasing, so evaluating it at all breakpoints
    (inside the always-valid bracket of §5.3) and interpolating on the piece where it changes
    sign gives the exact root — no iteration. If ψ vanishes on a whole interval (every term
    clipped), the midpoint is returned; any point of it is a valid θ.
    """
    reach = max(abs(cost.pmin), abs(cost.pmax))
    lower = min(cost.a * cost.pmin + cost.b, (float(v.min()) - reach) / tau)
    upper = max(cost.a * cost.pmax + cost.b, (float(v.max()) + reach) / tau)
    kinks = [(v - hi) / tau, (v - lo) / tau]
    points = np.concatenate(
        [
            *(k[np.isfinite(k)] for k in kinks),
            [cost.a * cost.pmin + cost.b, cost.a * cost.pmax + cost.b, lower, upper],
        ]
    )
    points = np.unique(points[(points >= lower) & (points <= upper)])
    supplied = np.clip(v[None, :] - tau * points[:, None], lo, hi).sum(axis=1)
    wanted = np.clip((points - cost.b) / cost.a, cost.pmin, cost.pmax)
    psi = supplied - wanted
    positive = np.flatnonzero(psi > 0)
    i = int(positive[-1]) if positive.size else -1
    negative = np.flatnonzero(psi[i + 1 :] < 0)
    j = i + 1 + int(negative[0]) if negative.size else len(points)
    if j == i + 1:  # sign change inside one linear piece
        return float(points[i] + psi[i] * (points[j] - points[i]) / (psi[i] - psi[j]))
    return float(0.5 * (points[i + 1] + points[j - 1]))  # ψ = 0 on [points[i+1], points[j-1]]


def local_step(
    cost: AgentCost,
    trades: np.ndarray,
    prices: np.ndarray,
    charges: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    tau: float,
    rho: float,
) -> LocalStep:
    """The exact minimiser of ``C(ΣP) + (1/2τ) Σ (P − v)²`` over n's bounds, then relaxation.

    ``v = P^k + τ(λ − c)``; ``P̂ = clip(v − τθ, lo, hi)``; ``P^{k+1} = P^k + ρ(P̂ − P^k)``.
    """
    v = trades + tau * (prices - charges)
    theta = solve_theta(cost, v, lo, hi, tau)
    target = np.clip(v - tau * theta, lo, hi)  # P̂
    new = quantise(trades + rho * (target - trades))
    residual = quantise_scalar(float(np.max(np.abs(target - trades))) / tau)
    return LocalStep(new, extrapolate(trades, new, rho), theta, residual)
