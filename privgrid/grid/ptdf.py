"""Injection shift factors (ISF) and bilateral power-transfer distribution factors (PTDF).

Exactly algorithm.md §3: reduced nodal susceptance without the slack column, ``ISF_r =
diag(b) A_r Y⁻¹``, a zero column re-inserted at the slack. The bilateral PTDF of a trade n→m is
the difference of two ISF columns and does not depend on the slack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privgrid.grid.network import Network


def incidence(network: Network) -> np.ndarray:
    """Branch–bus incidence ``A`` (L×B): +1 at the from-bus, −1 at the to-bus."""
    A = np.zeros((len(network.branches), len(network.buses)))
    for row, br in enumerate(network.branches):
        A[row, network.bus_index(br.from_bus)] = 1.0
        A[row, network.bus_index(br.to_bus)] = -1.0
    return A


@dataclass(frozen=True)
class ReducedSusceptance:
    """The DC model with the slack bus grounded: what the ISF and the Thevenin reactance
    (:mod:`privgrid.grid.distance`) are both computed from."""

    name: str  # the network's, for the error message
    keep: np.ndarray  # indices of every bus but the slack (the reduced columns)
    Y: np.ndarray  # reduced nodal susceptance ``A_rᵀ diag(b) A_r``
    branch_flows: np.ndarray  # ``diag(b) A_r``: branch flow per unit of voltage angle at each bus

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``Y⁻¹ rhs``. Raises ``ValueError`` when the network is not connected (``Y`` is then
        singular)."""
        try:
            return np.linalg.solve(self.Y, rhs)
        except np.linalg.LinAlgError as exc:
            raise ValueError(f"network {self.name!r} is not connected: {exc}") from exc


def reduced_susceptance(network: Network) -> ReducedSusceptance:
    """The reduced nodal susceptance of ``network``: its slack row and column removed."""
    A = incidence(network)
    b = np.array([br.susceptance for br in network.branches])
    slack = network.bus_index(network.slack)
    keep = np.array([i for i in range(len(network.buses)) if i != slack], dtype=int)
    A_r = A[:, keep]
    flows = b[:, None] * A_r
    return ReducedSusceptance(network.name, keep, A_r.T @ flows, flows)


def injection_shift_factors(network: Network) -> np.ndarray:
    """``ISF`` (L×B): flow on each branch per unit injected at a bus and withdrawn at the slack.

    Columns follow ``network.buses``; rows follow ``network.branches``. Raises ``ValueError``
    when the network is not connected (the reduced susceptance matrix is then singular).
    """
    reduced = reduced_susceptance(network)
    # ISF_r = diag(b) A_r Y⁻¹  ⇔  ISF_rᵀ = Y⁻¹ (diag(b) A_r)ᵀ since Y is symmetric.
    isf_r = reduced.solve(reduced.branch_flows.T).T
    isf = np.zeros((len(network.branches), len(network.buses)))
    isf[:, reduced.keep] = isf_r
    return isf


def bilateral_ptdf(isf: np.ndarray, from_cols: np.ndarray, to_cols: np.ndarray) -> np.ndarray:
    """PTDF ``φ_l,nm = ISF[l, bus(n)] − ISF[l, bus(m)]`` for many trades at once.

    ``from_cols``/``to_cols`` are ISF column indices of the selling and receiving end of each
    trade; the result has one row per branch and one column per trade.
    """
    return isf[:, from_cols] - isf[:, to_cols]
