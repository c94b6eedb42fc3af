"""What colluding neighbours estimate about a target (protocol.md §9.2). Pure numpy.

Input: per round r and per colluding pair, the target's side as the colluder derived it
(:mod:`privgrid.market.derive`): the target's price and charge before the round
(``λ_tc(r−1)``, ``c_tc(r−1) = −c_ct(r−1)``), its trade before the round ``P_tc(r−1)`` and its
unrelaxed new trade ``P̂_tc(r)``. Pooled over the coalition, ``Ŝ(r) = Σ_c P̂_tc(r)`` is the
target's output if every partner colludes.

- **passive (a, b)**: the target's exact local step gives, for an unclipped trade,
  ``λ_tc − c_tc − (P̂_tc − P_tc)/τ = θ = a·Ŝ + b`` while its total is inside its bounds — linear
  in (a, b, 1/τ). Least squares over every usable (round, pair), then again without the points
  that do not fit (rounds where the total sat at a bound); no deviation needed.
- **Pmax, Pmin**: the mean pooled output over the plateau the coalition drove it to.
- **active (a, b)**: least squares of ``price = a·s + b`` over the settled probe points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairRecord:
    """One colluder's view of its pair with the target in round r."""

    round: int
    colluder: str
    price: float  # λ_tc(r−1): the target's price the round started from
    charge: float  # c_tc(r−1) = −c_ct(r−1)
    previous: float  # P_tc(r−1), derived
    target: float  # P̂_tc(r), derived: the target's unrelaxed new trade
    extrapolated: float  # P̄_tc(r)
    own: float  # P_ct(r), the colluder's own trade
    new_price: float  # λ_tc(r): the target's price after the round

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def pooled_output(records: Sequence[PairRecord]) -> dict[int, float]:
    """Ŝ(r) = Σ_c P̂_tc(r) per round (only rounds every colluder reported)."""
    by_round: dict[int, list[PairRecord]] = {}
    for rec in records:
        by_round.setdefault(rec.round, []).append(rec)
    colluders = {rec.colluder for rec in records}
    return {
        r: sum(x.target for x in recs)
        for r, recs in sorted(by_round.items())
        if {x.colluder for x in recs} == colluders
    }


def _least_squares(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return coef, y - X @ coef


def not_repeated(
    values: np.ndarray, rounds: np.ndarray, tolerance: float = 1e-7, count: int = 2
) -> np.ndarray:
    """Mask of values that do not recur over rounds: a total pinned at a bound takes the same
    value round after round (the exact local step meets bounds exactly), while an interior
    total keeps moving. ``rounds`` says which round each value belongs to (a round may give
    several rows, one per trade, all with the same total)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    keep = np.ones(len(values), dtype=bool)
    start = 0
    for end in range(1, len(ordered) + 1):
        if end == len(ordered) or ordered[end] - ordered[end - 1] > tolerance:
            if len(set(rounds[order[start:end]].tolist())) >= count:
                keep[order[start:end]] = False
            start = end
    return keep


def consensus_fit(
    X: np.ndarray, y: np.ndarray, tolerance: float = 1e-6, trials: int = 300, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Least squares on the points an exact identity holds for, found by consensus.

    The identities here hold exactly (up to fixed-point rounding) on the rounds where the
    target's total was inside its bounds, and not at all on the others — which can be most of
    them (an agent pinned at a bound). Trimming outliers from a fit to everything then fails;
    instead (RANSAC) fit exactly through random minimal subsets, keep the fit the most points
    agree with (within ``tolerance`` × scale), and refit on those. Returns (coef, kept mask).
    """
    n, k = X.shape
    scale = max(1.0, float(np.max(np.abs(y))))
    rng = np.random.default_rng(seed)
    best = np.zeros(n, dtype=bool)
    for _ in range(trials):
        pick = rng.choice(n, size=k, replace=False)
        try:
            coef = np.linalg.solve(X[pick], y[pick])
        except np.linalg.LinAlgError:
            continue
        agree = np.abs(y - X @ coef) <= tolerance * scale
        if agree.sum() > best.sum():
            best = agree
    if best.sum() < k:
        best = np.ones(n, dtype=bool)
    coef, _ = _least_squares(X[best], y[best])
    return coef, best


@dataclass(frozen=True)
class Fit:
    a: float | None
    b: float | None
    points: int
    residual: float  # RMS of the kept points
    extra: float | None = None  # passive fit: 1/τ


def passive_fit(
    records: Sequence[PairRecord],
    interior: tuple[float, float] | None = None,
    trade_floor: float = 1e-6,
) -> Fit:
    """(a, b, 1/τ) from the primal-step identity (protocol.md §7.2), no deviation needed.

    ``interior``: keep only rounds with the pooled output strictly inside (Pmin^, Pmax^) when
    the coalition has estimated them; in any case the consensus fit ignores rounds whose total
    sat at a bound (the identity does not hold there).
    """
    totals = pooled_output(records)
    rows, ys, rounds = [], [], []
    for rec in records:
        s = totals.get(rec.round)
        if s is None or abs(rec.target) <= trade_floor:
            continue  # a clipped trade carries no θ
        if interior is not None and not interior[0] + trade_floor < s < interior[1] - trade_floor:
            continue
        rows.append([s, 1.0, rec.target - rec.previous])
        ys.append(rec.price - rec.charge)
        rounds.append(rec.round)
    if len(rows) < 3:
        return Fit(None, None, len(rows), float("nan"))
    X, y = np.array(rows), np.array(ys)
    moving = not_repeated(X[:, 0], np.array(rounds))  # a total pinned at a bound goes
    if len(set(np.array(rounds)[moving].tolist())) < 3:
        return Fit(None, None, int(moving.sum()), float("nan"))  # not identifiable
    X, y = X[moving], y[moving]
    coef, keep = consensus_fit(X, y)
    residual = y[keep] - X[keep] @ coef
    # λ − c = a·Ŝ + b + (1/τ)(P̂ − P): the third coefficient is 1/τ.
    return Fit(
        float(coef[0]),
        float(coef[1]),
        int(keep.sum()),
        float(np.sqrt(np.mean(residual**2))),
        float(coef[2]),
    )


def active_fit(points: Sequence[tuple[float, float]]) -> Fit:
    """(a, b) from settled probe points ``(output s, price − charge)``: price = a·s + b."""
    if len(points) < 2:
        return Fit(None, None, len(points), float("nan"))
    s = np.array([p[0] for p in points])
    price = np.array([p[1] for p in points])
    coef, residual = _least_squares(np.column_stack([s, np.ones_like(s)]), price)
    return Fit(float(coef[0]), float(coef[1]), len(points), float(np.sqrt(np.mean(residual**2))))


def relative_error(estimate: float | None, truth: float) -> float | None:
    if estimate is None or truth == 0:
        return None
    return abs(estimate - truth) / abs(truth)
