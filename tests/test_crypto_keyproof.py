"""Key announcement checks and the gcd(N, φ(N)) = 1 key proof (protocol.md §2)."""

import hashlib
import secrets
import struct

import gmpy2
import pytest

from privgrid.crypto import generate_keypair
from privgrid.crypto.errors import KeyCheckError
from privgrid.crypto.keyproof import (
    KEY_PROOF_ROOTS,
    check_announced_key,
    check_modulus,
    key_proof_challenges,
    key_proof_from_bytes,
    key_proof_to_bytes,
    make_key_proof,
    verify_key_proof,
)
from privgrid.crypto.paillier import keypair_from_primes, public_key_to_bytes

RUN, ID = "run-1", "S1"


@pytest.fixture(scope="session")
def keypair():
    return generate_keypair(1024)


@pytest.fixture(scope="session")
def proof(keypair):
    return make_key_proof(keypair, RUN, ID)


def _prime(bits):
    return int(gmpy2.next_prime(secrets.randbits(bits) | (1 << (bits - 1))))


def _prime_with_exact_product(p, bits):
    """A prime q with p·q of exactly ``bits`` bits."""
    lo, hi = (1 << (bits - 1)) // p + 1, (1 << bits) // p
    while True:
        q = int(gmpy2.next_prime(lo + secrets.randbelow(hi - lo)))
        if (p * q).bit_length() == bits:
            return q


@pytest.fixture(scope="session")
def bad_totient_primes():
    """p | q − 1, so p | gcd(N, φ(N)): decryption is not unique for N = p·q."""
    p = _prime(256)
    lo, hi = (1 << 1023) // (2 * p * p) + 1, (1 << 1024) // (2 * p * p)  # N = p(2kp + 1)
    while True:
        q = 2 * (lo + secrets.randbelow(hi - lo)) * p + 1
        if (p * q).bit_length() == 1024 and gmpy2.is_prime(q) and (q - 1) // p % p != 0:
            return p, q


def test_good_key_passes_every_check(keypair, proof):
    check_modulus(keypair.n, 1024, 1024)
    verify_key_proof(keypair.n, RUN, ID, proof)
    n_bytes = public_key_to_bytes(keypair.public_key)
    items = key_proof_to_bytes(keypair.n, proof)
    loaded = check_announced_key(n_bytes, 1024, 1024, RUN, ID, items)
    assert loaded.n == keypair.n


def test_proof_roots_are_n_th_roots(keypair, proof):
    rhos = key_proof_challenges(keypair.n, RUN, ID)
    assert len(proof) == len(rhos) == KEY_PROOF_ROOTS
    for sigma, rho in zip(proof, rhos, strict=True):
        assert pow(sigma, keypair.n, keypair.n) == rho


@pytest.mark.parametrize("run,participant", [("run-2", ID), (RUN, "S2"), ("run-1S", "1")])
def test_proof_for_another_run_or_id_is_rejected(keypair, proof, run, participant):
    with pytest.raises(KeyCheckError, match="does not verify"):
        verify_key_proof(keypair.n, run, participant, proof)


def test_proof_for_another_key_is_rejected(keypair, proof):
    other = generate_keypair(1024)
    with pytest.raises(KeyCheckError):
        verify_key_proof(other.n, RUN, ID, proof)


def test_tampered_or_malformed_proofs_are_rejected(keypair, proof):
    n = keypair.n
    with pytest.raises(KeyCheckError, match="root 3 does not verify"):
        verify_key_proof(n, RUN, ID, [*proof[:2], proof[2] + 1, *proof[3:]])
    with pytest.raises(KeyCheckError, match="roots"):
        verify_key_proof(n, RUN, ID, proof[:-1])
    with pytest.raises(KeyCheckError, match="roots"):
        verify_key_proof(n, RUN, ID, [*proof, proof[0]])
    for bad in (0, n, proof[0] + n, -proof[0]):
        with pytest.raises(KeyCheckError, match="out of range"):
            verify_key_proof(n, RUN, ID, [bad, *proof[1:]])


def test_modulus_with_non_coprime_totient_is_rejected(bad_totient_primes):
    p, q = bad_totient_primes
    n = p * q
    assert gmpy2.gcd(n, (p - 1) * (q - 1)) == p
    check_modulus(n, 1024, 1024)  # passes the cheap checks: only the key proof catches it
    with pytest.raises(KeyCheckError, match="gcd"):
        make_key_proof(keypair_from_primes(p, q), RUN, ID)

    # The owner's best effort: exact roots mod p, and mod q the root that would be right if
    # ρ were a p-th power there (it is not, except with probability 1/p).
    d_p = pow(n, -1, p - 1)
    d_q = pow(n, -1, (q - 1) // p)

    def best_root(rho):
        s_p, s_q = pow(rho, d_p, p), pow(rho, d_q, q)
        return (s_p + p * ((s_q - s_p) * pow(p, -1, q) % q)) % n

    forged = [best_root(rho) for rho in key_proof_challenges(n, RUN, ID)]
    with pytest.raises(KeyCheckError, match="does not verify"):
        verify_key_proof(n, RUN, ID, forged)
    # sanity check of the forger: on a p-th power mod q it does produce a valid root
    y = secrets.randbelow(n - 2) + 2
    rho_ok = pow(y, p, n)
    assert pow(best_root(rho_ok), n, n) == rho_ok


def test_modulus_with_small_factors_is_rejected():
    for small in (3, 65521):  # 65521 is the largest prime below 2^16
        n = small * _prime_with_exact_product(small, 1024)
        with pytest.raises(KeyCheckError, match="below 2\\^16"):
            check_modulus(n, 1024, 1024)
    # 65537 is the first prime above 2^16: the gcd check lets it through (boundary)
    check_modulus(65537 * _prime_with_exact_product(65537, 1024), 1024, 1024)


def test_square_modulus_is_rejected():
    p = int(gmpy2.next_prime(gmpy2.isqrt(1 << 1023) + 1))
    assert (p * p).bit_length() == 1024
    with pytest.raises(KeyCheckError, match="square"):
        check_modulus(p * p, 1024, 1024)


def test_size_and_parity_checks(keypair):
    n = keypair.n
    with pytest.raises(KeyCheckError, match="minimum"):
        check_modulus(n, 1024, 2048)
    with pytest.raises(KeyCheckError, match="bits, announced"):
        check_modulus(n, 2048, 2048)
    short = generate_keypair(1016).n
    with pytest.raises(KeyCheckError, match="bits, announced"):
        check_modulus(short, 1024, 1024)
    with pytest.raises(KeyCheckError, match="even"):
        check_modulus(n + 1, 1024, 1024)
    with pytest.raises(KeyCheckError, match="int"):
        check_modulus(float(n), 1024, 1024)


def test_announced_key_of_wrong_length_is_rejected(keypair, proof):
    data = public_key_to_bytes(keypair.public_key)
    items = key_proof_to_bytes(keypair.n, proof)
    with pytest.raises(KeyCheckError):
        check_announced_key(data, 2048, 1024, RUN, ID, items)
    with pytest.raises(KeyCheckError, match="minimum"):
        check_announced_key(data, 1024, 2048, RUN, ID, items)
    with pytest.raises(KeyCheckError, match="does not verify"):
        check_announced_key(data, 1024, 1024, "run-2", ID, items)


def test_key_proof_bytes(keypair, proof):
    items = key_proof_to_bytes(keypair.n, proof)
    assert all(len(item) == 128 for item in items)
    assert key_proof_from_bytes(keypair.n, items) == proof
    with pytest.raises(KeyCheckError, match="128 bytes"):
        key_proof_from_bytes(keypair.n, [items[0][1:], *items[1:]])


def test_challenges_are_full_domain_units_with_the_specified_encoding(keypair):
    n = keypair.n
    rhos = key_proof_challenges(n, RUN, ID)
    assert len(set(rhos)) == KEY_PROOF_ROOTS
    assert all(0 < r < n and gmpy2.gcd(r, n) == 1 for r in rhos)
    assert max(r.bit_length() for r in rhos) > 1000  # not a bare 256-bit hash
    assert key_proof_challenges(n, RUN, ID) == rhos
    assert key_proof_challenges(n, RUN, "S2") != rhos

    def lp(b):
        return struct.pack(">I", len(b)) + b

    def ib(v):
        return v.to_bytes((v.bit_length() + 7) // 8, "big")

    prefix = lp(b"privgrid/key-proof/v1") + lp(ib(n)) + lp(RUN.encode()) + lp(ID.encode())
    out_len = (1024 + 128) // 8
    stream = b"".join(hashlib.sha256(prefix + lp(ib(1)) + lp(ib(j))).digest() for j in range(5))
    assert rhos[0] == int.from_bytes(stream[:out_len], "big") % n
