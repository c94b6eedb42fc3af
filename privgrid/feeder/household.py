"""The household model: one interval's preferred point, bounds and cost (pure).

A household's net injection ``p`` (kW of average power over the interval; positive = it
exports) is ``p = g − l + s`` with

- PV ``g ∈ [0, G]``: it may curtail down to nothing (``G`` = the interval's PV power);
- load ``l ∈ [(1 − f)L, (1 + f)L]``: the flexible share ``f`` of its load ``L`` can be
  shed or added in the interval (appliances moved in time, heating held back or run early);
- storage ``s ∈ [−S, S]``: its battery may charge or discharge at up to its rated power.

So its bounds are ``pmin = −(1 + f)L − S`` and ``pmax = G − (1 − f)L + S``, each also
clipped to the house connection ``±connection_kw`` when one is given. The **preferred point**
is ``p₀ = G − L``: PV and load as the profiles have them, the battery idle. It lies within the
bounds for any ``G, L, f, S ≥ 0`` — unless a connection limit cuts it off, which is an error
(:class:`PreferredOutsideBoundsError`): the model has no meaning for such a household.

Its cost per hour (money/h; × the interval's hours for money per interval) prices deviation::

    C(p) = ½ a (p − p₀)² + r (p − p₀),    a = κ / max(w, w_min),   w = f L + S

``r``, the reference price, is the local price at which the household keeps its preferred
point: above it, it exports more (sheds load, discharges); below it, it takes more. ``κ``
(``flex_price``) is how far the price must move from ``r`` before the household has used all of
its shiftable power ``w`` (the flexible load and the battery; curtailing PV is the same
quadratic, and at positive prices never the cheaper choice). In the market's form
``C(p) = ½ a p² + b p`` (a constant dropped) this is ``b = r − a p₀``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: w's floor (kW): a household with (almost) no shiftable power is stiff, not infinitely so.
MIN_FLEX_KW = 0.01


class PreferredOutsideBoundsError(ValueError):
    """A household's preferred point lies outside its bounds (say which and by how much)."""


@dataclass(frozen=True)
class HouseholdParams:
    """The model's parameters (docs/scenarios.md, ``[households]``, gives their defaults)."""

    flexible_share: float = 0.2
    flex_price: float = 0.2
    reference_price: float = 0.19
    connection_kw: float | None = None


@dataclass(frozen=True)
class Offer:
    """What the household brings to one interval's market."""

    preferred: float  # p₀, kW
    pmin: float
    pmax: float
    a: float  # money per kW² per hour
    b: float  # money per kWh

    @property
    def idle(self) -> bool:
        """Nothing to trade (no load, PV or storage this interval): it sits the interval out."""
        return self.pmin == 0.0 and self.pmax == 0.0


def offer(load_kw: float, pv_kw: float, storage_kw: float, params: HouseholdParams) -> Offer:
    """The household's offer for one interval.

    Args:
        load_kw: its load L this interval (average kW, ≥ 0).
        pv_kw: its PV power G this interval (average kW, ≥ 0).
        storage_kw: its battery's rated power S (kW, ≥ 0).
        params: the model's parameters.

    Raises:
        PreferredOutsideBoundsError: the preferred point G − L is outside [pmin, pmax] (a
            connection limit below it, or negative profile data).
    """
    f = params.flexible_share
    preferred = pv_kw - load_kw
    pmin = -(1.0 + f) * load_kw - storage_kw
    pmax = pv_kw - (1.0 - f) * load_kw + storage_kw
    limit = params.connection_kw
    if limit is not None:
        pmin, pmax = max(pmin, -limit), min(pmax, limit)
    pmin, pmax = pmin + 0.0, pmax + 0.0  # no −0.0 in messages and files
    if min(load_kw, pv_kw, storage_kw) < 0 or not pmin <= preferred <= pmax:
        raise PreferredOutsideBoundsError(
            f"preferred net injection {preferred:.4g} kW (PV {pv_kw:.4g} − load {load_kw:.4g})"
            f" lies outside its bounds [{pmin:.4g}, {pmax:.4g}] kW"
            + (f" (connection_kw = {limit:g})" if limit is not None else "")
        )
    if abs(pmin) < 1e-9 and abs(pmax) < 1e-9:
        return Offer(0.0, 0.0, 0.0, 1.0, 0.0)
    a = params.flex_price / max(f * load_kw + storage_kw, MIN_FLEX_KW)
    return Offer(preferred, pmin, pmax, a, params.reference_price - a * preferred)
