"""Injection shift factors (ISF) and bilateral power-transfer distribution factors (PTDF).

Exactly algorithm.md §3: reduced nodal susceptance without the slack column, ``ISF_r =
diag(b) A_r Y⁻¹``, a zero column re-inserted at the slack. The bilateral PTDF of a trade n→m is
the difference of two ISF columns and does not depend on the slack.
"""

from __future__ import annotations

import numpy as np

from privgrid.grid.network import Network


def incidence(network: Network) -> np.ndarray:
    """Branch–bus incidence ``A`` (L×B): +1 at the from-bus, −1 at the to-bus."""
    A = np.zeros((len(network.branches), len(network.buses)))
    for row, br in enumerate(network.branches):
        A[row, network.bus_index(br.from_bus)] = 1.0
        A[row, network.bus_index(br.to_bus)] = -1.0
    return A


def injection_shift_factors(network: Network) -> np.ndarray:
    """``ISF`` (L×B): flow on each branch per unit injected at a bus and withdrawn at the slack.

    Columns follow ``network.buses``; rows follow ``network.branches``. Raises ``ValueError``
    when the network is not connected (the reduced susceptance matrix is then singular).
    """
    A = incidence(network)
    b = np.array([br.susceptance for br in network.branches])
    slack = network.bus_index(network.slack)
    keep = np.array([i for i in range(len(network.buses)) if i != slack], dtype=int)
    A_r = A[:, keep]
    Y = A_r.T @ (b[:, None] * A_r)
    try:
        # ISF_r = diag(b) A_r Y⁻¹  ⇔  ISF_rᵀ = Y⁻¹ (diag(b) A_r)ᵀ since Y is symmetric.
        isf_r = np.linalg.solve(Y, (b[:, None] * A_r).T).T
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"network {network.name!r} is not connected: {exc}") from exc
    isf = np.zeros_like(A)
    isf[:, keep] = isf_r
    return isf


def bilateral_ptdf(isf: np.ndarray, from_cols: np.ndarray, to_cols: np.ndarray) -> np.ndarray:
    """PTDF ``φ_l,nm = ISF[l, bus(n)] − ISF[l, bus(m)]`` for many trades at once.

    ``from_cols``/``to_cols`` are ISF column indices of the selling and receiving end of each
    trade; the result has one row per branch and one column per trade.
    """
    return isf[:, from_cols] - isf[:, to_cols]
