"""Electrical distance between buses: the DC model's Thevenin (effective) reactance.

``d(i, j) = Z_ii + Z_jj − 2 Z_ij`` with ``Z = Y⁻¹`` the inverse of the reduced nodal
susceptance matrix (slack bus grounded, its row and column of ``Z`` zero). In the DC model,
``d(i, j)`` is the voltage-angle difference between buses i and j per unit of power injected
at i and withdrawn at j: the reactance a bilateral trade i→j "sees". It is

- a metric: zero only on the same bus (or buses joined by reactance-free paths, which the
  loader rejects), symmetric, and obeying the triangle inequality (it is the effective
  resistance of the network with branch weights ``b_l``);
- independent of which bus is the slack, like the bilateral PTDF;
- the PTDF-weighted sum ``d(i, j) = Σ_l φ_l,ij² / b_l`` over branches: a trade between
  electrically close buses moves little power over few, strong lines.

``scenario.market.pairs = {nearest = k}`` uses it to give each buyer its k nearest sellers.
"""

from __future__ import annotations

import functools

import numpy as np

from privgrid.grid.network import Network
from privgrid.grid.ptdf import reduced_susceptance

#: Distances are rounded to this many decimals (p.u.) before ranking, so that ties which are
#: exact in the maths but differ in the last bits of floating point are ties everywhere: every
#: process resolves the pairs on its own and all must agree.
DECIMALS = 10


def thevenin_reactance(network: Network) -> np.ndarray:
    """``Z`` (B×B, p.u.): the inverse reduced susceptance matrix, zero row/column at the slack.

    Rows and columns follow ``network.buses``. Raises ``ValueError`` when the network is not
    connected (the reduced matrix is then singular).
    """
    reduced = reduced_susceptance(network)
    keep = reduced.keep
    z_r = reduced.solve(np.eye(len(keep)))
    Z = np.zeros((len(network.buses), len(network.buses)))
    Z[np.ix_(keep, keep)] = 0.5 * (z_r + z_r.T)  # exactly symmetric
    return Z


def electrical_distances(network: Network) -> np.ndarray:
    """``D[i, j] = Z_ii + Z_jj − 2 Z_ij`` for every pair of buses (B×B, p.u., symmetric).

    Rounded to :data:`DECIMALS` decimals; the diagonal is exactly zero.
    """
    return _distances(network).copy()


@functools.cache
def _distances(network: Network) -> np.ndarray:
    Z = thevenin_reactance(network)
    diag = np.diag(Z)
    D = diag[:, None] + diag[None, :] - 2.0 * Z
    D = np.round(0.5 * (D + D.T), DECIMALS)
    np.fill_diagonal(D, 0.0)
    D[D < 0] = 0.0  # −0.0 and rounding noise
    D.setflags(write=False)
    return D


def bus_distance(network: Network, bus_i: int, bus_j: int) -> float:
    """The electrical distance between two buses, by their case numbers."""
    D = _distances(network)
    return float(D[network.bus_index(bus_i), network.bus_index(bus_j)])
