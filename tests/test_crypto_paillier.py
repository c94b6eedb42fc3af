"""Paillier wrapper (protocol.md §3, §10): keys, CRT, encryption, wire format, pools, phe."""

import math
import secrets

import gmpy2
import phe
import pytest

from privgrid.crypto import paillier
from privgrid.crypto.errors import CiphertextError, CryptoError, KeyCheckError, PlaintextError
from privgrid.crypto.paillier import (
    FIXED_EXPONENT,
    ObfuscatorPool,
    add,
    check_ciphertext,
    ciphertext_from_bytes,
    ciphertext_to_bytes,
    encoded_number,
    encrypt,
    encrypt_int,
    encrypt_residue,
    from_encrypted_number,
    generate_keypair,
    public_key_from_bytes,
    public_key_from_n,
    public_key_to_bytes,
    random_unit,
    rerandomise,
    to_encrypted_number,
)
from privgrid.market.fixedpoint import quantise_scalar


@pytest.fixture(scope="session")
def keypair():
    return generate_keypair(1024)


def test_keygen_has_exact_length_and_coprime_totient(keypair):
    n, p, q = keypair.n, keypair.p, keypair.q
    assert n.bit_length() == 1024 == keypair.bits
    assert p * q == n and p != q
    assert keypair.nsquare == n * n
    assert math.gcd(n, (p - 1) * (q - 1)) == 1
    assert gmpy2.is_prime(p) and gmpy2.is_prime(q)


def test_keygen_retries_when_phe_returns_a_short_modulus(monkeypatch):
    real = phe.generate_paillier_keypair
    short = real(n_length=512)  # a key of the wrong size
    calls = []

    def fake(n_length):
        calls.append(n_length)
        return short if len(calls) == 1 else real(n_length=n_length)

    monkeypatch.setattr(paillier.phe, "generate_paillier_keypair", fake)
    kp = generate_keypair(1024)
    assert len(calls) == 2
    assert kp.n.bit_length() == 1024


@pytest.mark.parametrize("bits", [1020, 1023, 128])
def test_keygen_rejects_unusable_sizes(bits):
    with pytest.raises(KeyCheckError):
        generate_keypair(bits)


def test_crt_r_to_the_n_equals_pow(keypair):
    n, n2 = keypair.n, keypair.nsquare
    for _ in range(5):
        r = random_unit(n)
        assert keypair.pow_n(r) == pow(r, n, n2)
    assert keypair.pow_n(1) == 1
    assert keypair.pow_n(n - 1) == pow(n - 1, n, n2)


def test_crt_pow_rejects_non_units(keypair):
    for bad in (0, keypair.p, keypair.q, keypair.n):
        with pytest.raises(CryptoError, match="unit"):
            keypair.pow_n(bad)


def test_crt_combination(keypair):
    x = secrets.randbelow(keypair.nsquare)
    p, q = keypair.p, keypair.q
    assert keypair.crt_mod_n(x % p, x % q) == x % keypair.n
    assert keypair.crt_mod_nsquare(x % (p * p), x % (q * q)) == x


def test_encryption_formula_matches_phe(keypair):
    pk = keypair.public_key
    m, r = secrets.randbelow(pk.n), random_unit(pk.n)
    rn = pow(r, pk.n, pk.nsquare)
    expected = (1 + m * pk.n) * rn % pk.nsquare
    assert encrypt_residue(pk, m, rn) == expected
    assert pk.raw_encrypt(m, r_value=r) == expected
    assert keypair.private_key.raw_decrypt(expected) == m


@pytest.mark.parametrize("value", [0.0, 1.5, -1.5, 25.18, -1234.5, 1e-9, -(2.0**31 - 1), 2**31 - 1])
def test_encrypt_decrypt_round_trip(keypair, value):
    pk = keypair.public_key
    for c in (encrypt(pk, value), keypair.encrypt(value)):
        assert keypair.decrypt(c) == quantise_scalar(value)


def test_encryption_is_randomised(keypair):
    pk = keypair.public_key
    assert encrypt(pk, 1.0) != encrypt(pk, 1.0)
    assert keypair.encrypt(1.0) != keypair.encrypt(1.0)


def test_encrypt_rejects_out_of_range_inputs(keypair):
    pk = keypair.public_key
    with pytest.raises(PlaintextError):
        encrypt(pk, 2.0**31)
    with pytest.raises(PlaintextError):
        encrypt_residue(pk, pk.n)
    with pytest.raises(PlaintextError):
        encrypt_residue(pk, -1)
    with pytest.raises(CiphertextError, match="obfuscator"):
        encrypt_residue(pk, 1, obfuscator=0)


def test_decryption_rejects_values_beyond_2_128(keypair):
    pk = keypair.public_key
    assert keypair.decrypt_int(encrypt_int(pk, 2**128 - 1)) == 2**128 - 1
    assert keypair.decrypt_int(encrypt_int(pk, -(2**128) + 1)) == -(2**128) + 1
    with pytest.raises(PlaintextError, match="out of range"):
        keypair.decrypt_int(encrypt_residue(pk, 2**128))
    with pytest.raises(PlaintextError, match="out of range"):
        keypair.decrypt(encrypt_residue(pk, pk.n - 2**128))


def test_decrypt_checks_the_ciphertext(keypair):
    with pytest.raises(CiphertextError, match="unit"):
        keypair.decrypt_residue(keypair.p)
    with pytest.raises(CiphertextError, match="range"):
        keypair.decrypt_residue(keypair.nsquare)


def test_ciphertext_bytes_round_trip(keypair):
    pk = keypair.public_key
    c = encrypt(pk, -3.25)
    data = ciphertext_to_bytes(pk, c)
    assert len(data) == 2 * 1024 // 8
    assert ciphertext_from_bytes(pk, data) == c
    small = encrypt_residue(pk, 0, obfuscator=1)  # c = 1: a short integer, still fixed length
    assert ciphertext_to_bytes(pk, small) == b"\x00" * 255 + b"\x01"


def test_ciphertext_parsing_rejects_bad_input(keypair):
    pk = keypair.public_key
    good = ciphertext_to_bytes(pk, encrypt(pk, 1.0))
    for bad, reason in [
        (good[:-1], "bytes"),
        (good + b"\x00", "bytes"),
        (b"\x00" * 256, "range"),
        (pk.nsquare.to_bytes(256, "big"), "range"),
        ((pk.nsquare + 1).to_bytes(256, "big"), "range"),
        (keypair.p.to_bytes(256, "big"), "unit"),
        ((keypair.q * 12345).to_bytes(256, "big"), "unit"),
        (pk.n.to_bytes(256, "big"), "unit"),
    ]:
        with pytest.raises(CiphertextError, match=reason):
            ciphertext_from_bytes(pk, bad)
    with pytest.raises(CiphertextError, match="bytes"):
        ciphertext_from_bytes(pk, "not bytes")


def test_check_ciphertext_rejects_non_ints(keypair):
    for bad in (1.0, True, "5", None):
        with pytest.raises(CiphertextError, match="int"):
            check_ciphertext(keypair.public_key, bad)


def test_public_key_bytes_round_trip(keypair):
    data = public_key_to_bytes(keypair.public_key)
    assert len(data) == 128
    loaded = public_key_from_bytes(data, bits=1024)
    assert isinstance(loaded, phe.PaillierPublicKey)
    assert loaded.n == keypair.n and loaded.nsquare == keypair.nsquare
    assert loaded == public_key_from_n(keypair.n)


def test_public_key_parsing_rejects_bad_input(keypair):
    data = public_key_to_bytes(keypair.public_key)
    with pytest.raises(KeyCheckError, match="announced"):
        public_key_from_bytes(data, bits=2048)
    with pytest.raises(KeyCheckError, match="leading zero"):
        public_key_from_bytes(b"\x00" + data[1:])
    with pytest.raises(KeyCheckError, match="odd"):
        public_key_from_n(keypair.n + 1)


def test_homomorphic_addition_and_rerandomisation(keypair):
    pk = keypair.public_key
    c1, c2 = encrypt_int(pk, 10), encrypt_int(pk, -25)
    assert keypair.decrypt_int(add(pk, c1, c2)) == -15
    c3 = rerandomise(pk, c1)
    assert c3 != c1
    assert keypair.decrypt_int(c3) == 10
    with pytest.raises(CiphertextError):
        add(pk)
    with pytest.raises(CiphertextError, match="ciphertext 1"):
        add(pk, c1, 0)


@pytest.mark.parametrize("owner", [True, False])
def test_pool_entries_are_correct_and_used_once(keypair, owner):
    pk = keypair.public_key
    pool = ObfuscatorPool(keypair if owner else pk)
    pool.fill(3)
    assert len(pool) == 3
    entries = [pool.take() for _ in range(3)]
    assert len(pool) == 0 and pool.misses == 0
    assert len({e.r for e in entries}) == 3
    for r, rn in entries:
        assert rn == pow(r, pk.n, pk.nsquare)
    extra = pool.take()  # empty: computed on the spot, counted
    assert pool.misses == 1 and extra.rn == pow(extra.r, pk.n, pk.nsquare)
    pool.fill(1)
    c = encrypt(pk, 4.75, obfuscator=pool.take_rn())
    assert len(pool) == 0
    assert keypair.decrypt(c) == 4.75


def test_a_pool_counts_the_entries_drawn_and_those_of_them_made_ahead(keypair):
    """Entries are drawn oldest first: ``ahead_hits`` counts exactly the draws of entries
    a ``fill(..., ahead=True)`` made (a day's fill between intervals), whatever came between;
    an entry made on the spot (a miss) is no hit."""
    pool = ObfuscatorPool(keypair)
    pool.fill(2)  # left from before
    pool.fill(2, ahead=True)
    pool.fill(1)  # a top-up after them
    for hits, ahead in ((1, 0), (2, 0), (3, 1), (4, 2), (5, 2)):
        pool.take()
        assert (pool.hits, pool.ahead_hits) == (hits, ahead)
    pool.take()  # empty: a miss
    assert (pool.hits, pool.ahead_hits, pool.misses) == (5, 2, 1)
    pool.fill(1, ahead=True)
    pool.take_rn()
    assert (pool.hits, pool.ahead_hits, pool.made) == (6, 3, 6)


def test_phe_interop_uses_the_fixed_exponent(keypair):
    pk = keypair.public_key
    enc = encoded_number(pk, -(2**32) * 3)
    assert enc.exponent == FIXED_EXPONENT == -8
    assert enc.encoding == pk.n - 3 * 2**32
    assert enc.decode() == -3.0
    c = encrypt(pk, 1.5)
    wrapped = to_encrypted_number(pk, c)
    assert keypair.private_key.decrypt(wrapped) == 1.5  # phe reads 16^-8 = 2^-32
    total = wrapped + to_encrypted_number(pk, encrypt(pk, -4.0))
    raw = total.ciphertext(be_secure=False)
    out = from_encrypted_number(total)
    assert out != raw  # re-obfuscated before it may leave
    assert keypair.decrypt(out) == -2.5


def test_phe_interop_rejects_other_exponents(keypair):
    pk = keypair.public_key
    floaty = pk.encrypt(0.1)  # phe's own float encoding picks the exponent from the value
    assert floaty.exponent != FIXED_EXPONENT
    with pytest.raises(CiphertextError, match="exponent"):
        from_encrypted_number(floaty)
    with pytest.raises(CiphertextError, match="exponent"):
        from_encrypted_number(phe.EncryptedNumber(pk, encrypt(pk, 1.0), -7))
