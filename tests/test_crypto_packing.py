"""Packing of fixed-point values into one plaintext (protocol.md §3)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privgrid.crypto import generate_keypair
from privgrid.crypto.codec import encode_real
from privgrid.crypto.errors import PackingError
from privgrid.crypto.packing import (
    MAX_ABS_VALUE,
    MAX_TERMS,
    OFFSET,
    SLOT_BITS,
    decrypt_packed,
    encrypt_packed,
    pack,
    slots_per_ciphertext,
    unpack,
)
from privgrid.crypto.paillier import ObfuscatorPool, add

TOP = MAX_ABS_VALUE - 1  # largest accepted |X| = 2^87 - 1


@pytest.fixture(scope="session")
def keypair():
    return generate_keypair(1024)


def test_constants_follow_the_spec():
    assert SLOT_BITS == 96 and OFFSET == 2**87 and MAX_ABS_VALUE == 2**87 and MAX_TERMS == 256


@pytest.mark.parametrize("bits,slots", [(1024, 10), (2048, 21), (3072, 31)])
def test_slots_per_ciphertext_match_the_spec(bits, slots):
    assert slots_per_ciphertext(bits) == slots
    full = pack([TOP] * slots, bits)  # the largest packed plaintext stays below 2^(|N|-1)
    assert full.bit_length() <= bits - 1


def test_tiny_modulus_has_no_slot():
    with pytest.raises(PackingError):
        slots_per_ciphertext(96)


def test_round_trip_with_negative_and_extreme_values():
    values = [0, 1, -1, TOP, -TOP, encode_real(-25.18), encode_real(1234.5), -(2**64), 2**63]
    packed = pack(values, 1024)
    assert unpack(packed, len(values)) == values


def test_layout_is_offset_slots_in_base_2_96():
    assert pack([5, -3], 1024) == (5 + OFFSET) + ((-3 + OFFSET) << 96)


@pytest.mark.parametrize("bad", [[MAX_ABS_VALUE], [-MAX_ABS_VALUE], [1.0], [True], []])
def test_pack_rejects_bad_values(bad):
    with pytest.raises(PackingError):
        pack(bad, 1024)


def test_pack_rejects_too_many_values():
    with pytest.raises(PackingError, match=r"1\.\.10"):
        pack([0] * 11, 1024)


def test_homomorphic_sums_unpack_with_the_number_of_terms(keypair):
    pk = keypair.public_key
    rows = [[3, -7, TOP // 4, 0], [-5, 2, TOP // 4, -TOP], [1, 1, -(TOP // 2), TOP]]
    cts = [encrypt_packed(pk, row)[0] for row in rows]
    total = add(pk, *cts)
    sums = [sum(col) for col in zip(*rows, strict=True)]
    assert decrypt_packed(keypair, [total], 4, terms=3) == sums
    # unpacking a 3-term sum as one term must not silently return garbage
    with pytest.raises(PackingError, match="out of range"):
        decrypt_packed(keypair, [total], 4, terms=1)
    # an over-count is not always detectable: it shifts every slot by -2 * 2^87
    assert decrypt_packed(keypair, [total], 4, terms=5) == [s - 2 * OFFSET for s in sums]


def test_maximum_number_of_terms_does_not_carry():
    for extreme in (TOP, -TOP):
        packed = pack([extreme, -extreme, extreme], 1024)
        assert unpack(packed * MAX_TERMS, 3, terms=MAX_TERMS) == [
            extreme * MAX_TERMS,
            -extreme * MAX_TERMS,
            extreme * MAX_TERMS,
        ]
    with pytest.raises(PackingError, match="terms"):
        unpack(pack([0], 1024), 1, terms=MAX_TERMS + 1)


def test_unpack_rejects_a_wrong_count_or_garbage():
    packed = pack([1, 2, 3], 1024)
    with pytest.raises(PackingError, match="above the last slot"):
        unpack(packed, 2)
    with pytest.raises(PackingError, match="out of range"):
        unpack(packed, 4)  # slot 3 is empty: 0 - 2^87 is out of range
    with pytest.raises(PackingError):
        unpack(-1, 1)


def test_many_values_over_several_ciphertexts(keypair):
    values = [encode_real(v) for v in (-12.5, 3.25, 0.0, 7.0, -0.001)] * 5  # 25 values
    pool = ObfuscatorPool(keypair.public_key)
    pool.fill(3)
    for key, kw in ((keypair, {}), (keypair.public_key, {}), (keypair.public_key, {"pool": pool})):
        cts = encrypt_packed(key, values, **kw)
        assert len(cts) == 3
        assert decrypt_packed(keypair, cts, len(values)) == values
    assert len(pool) == 0
    with pytest.raises(PackingError, match="ciphertexts"):
        decrypt_packed(keypair, cts[:2], len(values))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(-TOP, TOP), min_size=10, max_size=10), min_size=1, max_size=6),
    st.integers(1, 10),
)
def test_pack_sum_unpack_property(rows, count):
    rows = [row[:count] for row in rows]
    total = sum(pack(row, 1024) for row in rows)  # plaintext addition = homomorphic addition
    sums = [sum(col) for col in zip(*rows, strict=True)]
    assert unpack(total, count, terms=len(rows)) == sums
