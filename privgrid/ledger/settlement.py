"""Who pays whom for a cleared market: per trade, per agent, and the LM's congestion rent.

The market (algorithm.md §4): agent n receives ``(λ_nm − c_nm)·P_nm`` for each of its trades,
and at the optimum the LM keeps ``Σ c_nm P_nm`` over all trades — the congestion rent
``Σ_l Fmax_l (η⁺_l + η⁻_l)``. Because ``c_mn = −c_nm``, each side of a pair pays half of the
pair's congestion charge.

Money must balance exactly, but the two sides of a cleared pair agree only within the
negotiation's tolerance (``|P_nm + P_mn| ≤ tol_P``, ``|λ_nm − λ_mn| ≤ tol_λ``). Settling each
side on its own numbers would leave an imbalance of order ``λ·tol_P`` (≈ 1e-3 $ on the paper
case). So a pair is settled on **one** power and **one** price — the seller side's ``P`` and
``λ`` (the block stores both sides for Proof of Solution) — and each side's own charge:

=====================  =========================================  ===================
``payment``            ``P·λ``                                    buyer → seller
``seller_receives``    ``P·λ − P·c_seller``                       = (λ − c_nm)·P_nm
``buyer_pays``         ``P·λ − P·c_buyer``                        = −(λ − c_mn)·P_mn
``congestion``         ``buyer_pays − seller_receives``           = (c_seller − c_buyer)·P → LM
=====================  =========================================  ===================

All amounts are int64 at the fixed-point scale 2^32 ($). Each product of two fixed-point
numbers is rounded once (half up, :func:`fixed_mul`); every other amount is an exact integer
sum or difference, so ``Σ buyer_pays = Σ seller_receives + congestion_rent`` holds exactly, by
construction. :func:`imbalance` still measures it, so a tampered or hand-made block shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from privgrid.ledger.encoding import from_fixed
from privgrid.market.fixedpoint import SCALE_BITS

#: Acceptance bound of ``|Σ pays − Σ receives − rent|`` in $ (exact integers give 0).
BALANCE_TOLERANCE = 1e-6
_HALF = 1 << (SCALE_BITS - 1)


def fixed_mul(a: int, b: int) -> int:
    """Product of two fixed-point numbers, rounded half up to the 2^-32 grid."""
    return (a * b + _HALF) >> SCALE_BITS


def settle(trades: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The settlement section of a market block from its (fixed-point) trade records."""
    rows = []
    receives: dict[str, int] = {}
    pays: dict[str, int] = {}
    for t in trades:
        payment = fixed_mul(t["power"], t["price"])
        seller_receives = payment - fixed_mul(t["power"], t["seller_charge"])
        buyer_pays = payment - fixed_mul(t["power"], t["buyer_charge"])
        rows.append(
            {
                "seller": t["seller"],
                "buyer": t["buyer"],
                "payment": payment,
                "seller_receives": seller_receives,
                "buyer_pays": buyer_pays,
                "congestion": buyer_pays - seller_receives,
            }
        )
        for agent in (t["seller"], t["buyer"]):
            receives.setdefault(agent, 0)
            pays.setdefault(agent, 0)
        receives[t["seller"]] += seller_receives
        pays[t["buyer"]] += buyer_pays
    agents = [
        {"id": a, "receives": receives[a], "pays": pays[a], "net": receives[a] - pays[a]}
        for a in sorted(receives)
    ]
    return {
        "trades": rows,
        "agents": agents,
        "congestion_rent": sum(r["congestion"] for r in rows),
    }


def imbalance_fixed(settlement: Mapping[str, Any]) -> int:
    """``Σ pays − Σ receives − congestion_rent`` over the agents, in fixed point."""
    agents = settlement["agents"]
    paid = sum(a["pays"] for a in agents)
    received = sum(a["receives"] for a in agents)
    imbalance: int = paid - received - settlement["congestion_rent"]
    return imbalance


def imbalance(settlement: Mapping[str, Any]) -> float:
    """The money that appears or vanishes in a settlement, in $ (0 for a built block)."""
    return from_fixed(imbalance_fixed(settlement))
