"""The household model (privgrid/feeder/household.py): pure, one interval at a time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privgrid.feeder.household import (
    HouseholdParams,
    PreferredOutsideBoundsError,
    offer,
)


def best_total(o, theta: float) -> float:
    """The net injection that marginal value θ supports: ``clip((θ − b)/a, pmin, pmax)``."""
    return min(max((theta - o.b) / o.a, o.pmin), o.pmax)


power = st.floats(min_value=0.0, max_value=500.0, allow_nan=False)
params = st.builds(
    HouseholdParams,
    flexible_share=st.floats(min_value=0.0, max_value=0.9),
    flex_price=st.floats(min_value=0.01, max_value=1.0),
    reference_price=st.floats(min_value=-0.5, max_value=1.0),
)


@given(load=power, pv=power, storage=power, p=params)
def test_the_preferred_point_lies_within_the_bounds_and_is_optimal_at_the_reference_price(
    load, pv, storage, p
):
    o = offer(load, pv, storage, p)
    assert o.pmin <= o.preferred <= o.pmax
    if not o.idle:
        # C(S) = ½ a S² + b S: at θ = the reference price the household keeps p₀.
        assert best_total(o, p.reference_price) == pytest.approx(o.preferred, abs=1e-6)


def test_bounds_come_from_the_flexible_load_the_battery_and_pv_curtailment():
    o = offer(load_kw=10.0, pv_kw=4.0, storage_kw=3.0, params=HouseholdParams(0.2, 0.2, 0.19))
    assert o.preferred == pytest.approx(-6.0)  # PV − load, kW
    assert o.pmin == pytest.approx(-(1.2 * 10.0) - 3.0)  # all load up, charge, curtail all PV
    assert o.pmax == pytest.approx(4.0 - 0.8 * 10.0 + 3.0)  # shed 20 %, discharge
    # a = κ / (f L + S): using all shiftable power moves the marginal value by κ (per kWh).
    assert o.a == pytest.approx(0.2 / (0.2 * 10.0 + 3.0))
    assert best_total(o, 0.19 + 0.2) == pytest.approx(-6.0 + 5.0)


def test_a_household_with_nothing_to_trade_sits_the_interval_out():
    assert offer(0.0, 0.0, 0.0, HouseholdParams()).idle
    assert not offer(0.0, 2.0, 0.0, HouseholdParams()).idle  # PV only: a seller


def test_a_connection_limit_below_the_preferred_point_is_an_error():
    with pytest.raises(PreferredOutsideBoundsError, match=r"preferred net injection 19 kW"):
        offer(1.0, 20.0, 0.0, HouseholdParams(connection_kw=10.0))
    inside = offer(1.0, 5.0, 0.0, HouseholdParams(connection_kw=10.0))
    assert inside.pmax == 5.0 - 0.8 and inside.pmin == -1.2


def test_negative_profile_data_is_an_error():
    with pytest.raises(PreferredOutsideBoundsError):
        offer(-1.0, 0.0, 0.0, HouseholdParams())
