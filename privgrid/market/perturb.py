"""I6, objective perturbation (protocol.md §8): an agent hides its data by playing a perturbed
problem, drawn once per market session.

``ã = a(1 + U[−r, r])``, ``b̃ = b + Laplace(σ_b)``, ``P̃max = Pmax − U[0, w]``,
``P̃min = Pmin + U[0, w]``. Colluders who invert the agent's behaviour then recover the
perturbed data, not the true data; it costs welfare because the agent trades at the wrong
point. The draw is seeded by the scenario's seed and the agent's id, so a run and its
in-process replay play the same perturbed problem (and a new seed gives a new session).
"""

from __future__ import annotations

import hashlib

import numpy as np

from privgrid.market.agent_step import AgentCost
from privgrid.scenario import PrivacyNoise


def session_seed(scenario_seed: int, agent: str) -> int:
    digest = hashlib.sha256(f"privgrid/i6/{scenario_seed}/{agent}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def perturb(cost: AgentCost, noise: PrivacyNoise, seed: int) -> AgentCost:
    """The perturbed cost and bounds the agent plays this session."""
    rng = np.random.default_rng(seed)
    a = cost.a * (1.0 + rng.uniform(-noise.r, noise.r))
    b = cost.b + (rng.laplace(0.0, noise.sigma_b) if noise.sigma_b > 0 else 0.0)
    pmax = cost.pmax - rng.uniform(0.0, noise.w)
    pmin = cost.pmin + rng.uniform(0.0, noise.w)
    if pmin > pmax:  # withheld from both sides past each other: settle in the middle
        pmin = pmax = 0.5 * (pmin + pmax)
    return AgentCost(float(a), float(b), float(pmin), float(pmax))
