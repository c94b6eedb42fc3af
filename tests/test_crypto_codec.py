"""Fixed-point plaintext codec (protocol.md §3): bounds, signed residues, round trips."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privgrid.crypto import generate_keypair
from privgrid.crypto.codec import (
    MAX_ABS_PLAINTEXT,
    check_range,
    decode_real,
    decode_residue,
    encode_real,
    from_residue,
    to_residue,
)
from privgrid.crypto.errors import CryptoError, PlaintextError

LIMIT = 2.0**31


@pytest.fixture(scope="session")
def keypair():
    return generate_keypair(1024)


@pytest.mark.parametrize("bad", [LIMIT, -LIMIT, 2.0**40, math.nan, math.inf, -math.inf, 1e300])
def test_encode_rejects_out_of_range_inputs(bad):
    with pytest.raises(PlaintextError, match="2\\^31"):
        encode_real(bad)


def test_encode_accepts_just_below_the_bound():
    v = math.nextafter(LIMIT, 0.0)
    assert encode_real(v) == int(v * 2**32)
    assert encode_real(-v) == -int(v * 2**32)


def test_encode_is_exact_rounding_at_scale_2_32():
    assert encode_real(1.0) == 2**32
    assert encode_real(-0.5) == -(2**31)
    assert encode_real(2.0**-33 * 3) == 2  # 1.5 ulp of the grid rounds to even: 2
    assert encode_real(2.0**-32) == 1


def test_negative_values_wrap_to_n_minus_abs(keypair):
    n = keypair.n
    assert to_residue(-5, n) == n - 5
    assert from_residue(n - 5, n) == -5
    assert to_residue(7, n) == 7


def test_decoding_threshold_is_half_n(keypair):
    n = keypair.n
    assert from_residue(n // 2, n) == n // 2
    assert from_residue(n // 2 + 1, n) == n // 2 + 1 - n
    with pytest.raises(PlaintextError):
        from_residue(n, n)
    with pytest.raises(PlaintextError):
        from_residue(-1, n)
    with pytest.raises(PlaintextError):
        to_residue(n // 2 + 1, n)


def test_range_check_after_decryption_is_2_128():
    assert check_range(MAX_ABS_PLAINTEXT - 1) == MAX_ABS_PLAINTEXT - 1
    assert check_range(-(MAX_ABS_PLAINTEXT - 1)) == -(MAX_ABS_PLAINTEXT - 1)
    for bad in (MAX_ABS_PLAINTEXT, -MAX_ABS_PLAINTEXT, 2**200):
        with pytest.raises(PlaintextError, match="out of range"):
            check_range(bad)


def test_decode_residue_rejects_large_values_of_either_sign(keypair):
    n = keypair.n
    assert decode_residue((-(2**128) + 1) % n, n) == -(2**128) + 1
    with pytest.raises(PlaintextError):
        decode_residue((-(2**128)) % n, n)
    with pytest.raises(PlaintextError):
        decode_residue(2**128, n)


def test_errors_carry_a_reason():
    with pytest.raises(CryptoError) as info:
        encode_real(math.nan)
    assert "2^31" in info.value.reason


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-(LIMIT - 1), max_value=LIMIT - 1, allow_nan=False))
def test_codec_round_trip_property(value):
    n = (1 << 1023) + 1155  # any odd modulus works for the residue mapping
    fixed = encode_real(value)
    assert abs(decode_real(fixed) - value) <= 2.0**-33
    assert from_residue(to_residue(fixed, n), n) == fixed
    assert decode_residue(to_residue(fixed, n), n) == fixed


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=-(2**128) + 1, max_value=2**128 - 1))
def test_encrypted_round_trip_property(keypair, fixed):
    assert keypair.decrypt_int(keypair.encrypt_int(fixed)) == fixed
