"""Proof of correct decryption (protocol.md §5), every failure case of §11."""

import dataclasses
import hashlib
import math
import struct

import pytest

from privgrid.contract import pair_contract
from privgrid.crypto import generate_keypair
from privgrid.crypto.codec import encode_real
from privgrid.crypto.errors import CryptoError, ProofError
from privgrid.crypto.paillier import (
    ObfuscatorPool,
    encrypt,
    encrypt_int,
    encrypt_residue,
    random_unit,
    rerandomise,
)
from privgrid.crypto.zkp import (
    FS_CHALLENGE_BITS,
    INTERACTIVE_CHALLENGE_BITS,
    DecryptionProof,
    ProofContext,
    commit,
    fiat_shamir_challenge,
    prove_decryption,
    random_challenge,
    recover_randomness,
    respond,
    simulate_transcript,
    verify_decryption,
    verify_transcript,
)

CTX = ProofContext(run="run-7", round=12, owner="S1", peer="B2")


@pytest.fixture(scope="session")
def keypair():
    return generate_keypair(1024)


@pytest.fixture(scope="session")
def other_keypair():
    return generate_keypair(1024)


@pytest.fixture
def proven(keypair):
    """A contract result c = E(A) · E(B), its decryption x and a proof in CTX."""
    pk = keypair.public_key
    c = pair_contract(pk, keypair.encrypt(21.5), encrypt(pk, -1.25))
    x, proof = prove_decryption(keypair, c, CTX)
    return c, x, proof


def test_proof_verifies_and_returns_the_value(keypair, proven):
    c, x, proof = proven
    assert verify_decryption(keypair.public_key, c, x, proof, CTX) == encode_real(20.25)
    assert 0 <= x < keypair.n


@pytest.mark.parametrize("value", [-7.5, 0.0, -(2.0**30)])
def test_proof_verifies_for_negative_and_zero_values(keypair, value):
    c = keypair.encrypt(value)
    x, proof = prove_decryption(keypair, c, CTX)
    fixed = encode_real(value)
    assert x == fixed % keypair.n
    # the verifier accepts the residue or the signed integer
    assert verify_decryption(keypair.public_key, c, x, proof, CTX) == fixed
    assert verify_decryption(keypair.public_key, c, fixed, proof, CTX) == fixed


@pytest.mark.parametrize("delta", [1, -1, 2**32, 12345678901234567890])
def test_fails_for_a_wrong_x(keypair, proven, delta):
    c, x, proof = proven
    with pytest.raises(ProofError, match="equation"):
        verify_decryption(keypair.public_key, c, (x + delta) % keypair.n, proof, CTX)


@pytest.mark.parametrize(
    "change",
    [
        {"run": "run-8"},
        {"round": 13},
        {"owner": "S2"},
        {"peer": "B3"},
        {"kind": "trade"},
        {"owner": "B2", "peer": "S1"},  # the opposite direction of the same pair
    ],
)
def test_fails_for_a_wrong_context(keypair, proven, change):
    c, x, proof = proven
    with pytest.raises(ProofError, match="equation"):
        verify_decryption(keypair.public_key, c, x, proof, dataclasses.replace(CTX, **change))


def test_fails_for_another_ciphertext_of_the_same_plaintext(keypair, proven):
    c, x, proof = proven
    c2 = rerandomise(keypair.public_key, c)
    assert keypair.decrypt_residue(c2) == x
    with pytest.raises(ProofError, match="equation"):
        verify_decryption(keypair.public_key, c2, x, proof, CTX)


def test_fails_under_another_key(keypair, other_keypair, proven):
    c, x, proof = proven
    with pytest.raises(ProofError):
        verify_decryption(other_keypair.public_key, c, x, proof, CTX)
    # and a proof by the other key's owner does not transfer to this key's ciphertext
    c_other = other_keypair.encrypt(20.25)
    x_other, proof_other = prove_decryption(other_keypair, c_other, CTX)
    with pytest.raises(ProofError):
        verify_decryption(keypair.public_key, c, x_other, proof_other, CTX)


def test_fails_for_non_units(keypair, proven):
    c, x, proof = proven
    pk, p = keypair.public_key, keypair.p
    with pytest.raises(ProofError, match="unit"):
        verify_decryption(pk, p * 3, x, proof, CTX)
    with pytest.raises(ProofError, match="unit"):
        verify_decryption(pk, c, x, DecryptionProof(p * 5, proof.z), CTX)
    with pytest.raises(ProofError, match="unit"):
        verify_decryption(pk, c, x, DecryptionProof(proof.a, keypair.q), CTX)


@pytest.mark.parametrize("z_of", [lambda n, z: n, lambda n, z: z + n, lambda n, z: 0])
def test_fails_for_z_out_of_range(keypair, proven, z_of):
    c, x, proof = proven
    bad = DecryptionProof(proof.a, z_of(keypair.n, proof.z))
    with pytest.raises(ProofError, match="response out of range"):
        verify_decryption(keypair.public_key, c, x, bad, CTX)


@pytest.mark.parametrize("a_of", [lambda n2, a: 0, lambda n2, a: n2, lambda n2, a: a + n2])
def test_fails_for_a_out_of_range(keypair, proven, a_of):
    c, x, proof = proven
    bad = DecryptionProof(a_of(keypair.nsquare, proof.a), proof.z)
    with pytest.raises(ProofError, match="commitment out of range"):
        verify_decryption(keypair.public_key, c, x, bad, CTX)


def test_fails_for_c_out_of_range(keypair, proven):
    _, x, proof = proven
    for bad in (0, keypair.nsquare, -5):
        with pytest.raises(ProofError, match="range"):
            verify_decryption(keypair.public_key, bad, x, proof, CTX)


def test_claimed_value_beyond_2_128_is_rejected_even_with_a_valid_proof(keypair):
    pk = keypair.public_key
    for residue in (2**128, pk.n - 2**128):
        c = encrypt_residue(pk, residue)
        x, proof = prove_decryption(keypair, c, CTX)
        verify_transcript(  # the algebra holds ...
            pk, c, x, proof.a, fiat_shamir_challenge(pk.n, c, x, proof.a, CTX), proof.z, 256
        )
        with pytest.raises(ProofError, match="out of range"):  # ... but the range check fails
            verify_decryption(pk, c, x, proof, CTX)


def test_interactive_proof_and_challenge_range(keypair):
    pk, t = keypair.public_key, INTERACTIVE_CHALLENGE_BITS
    c = keypair.encrypt(3.0)
    x = keypair.decrypt_residue(c)
    r, a = commit(keypair)
    e = random_challenge(t)
    z = respond(keypair, c, r, e)
    verify_transcript(pk, c, x, a, e, z, t)
    with pytest.raises(ProofError, match="equation"):
        verify_transcript(pk, c, x, a, (e + 1) % 2**t, z, t)
    with pytest.raises(ProofError, match="equation"):
        verify_transcript(pk, c, x + 1, a, e, z, t)
    # out-of-range challenges are refused before any algebra
    for bad_e in (2**t, 2**t + e, -1):
        with pytest.raises(ProofError, match="challenge out of range"):
            verify_transcript(pk, c, x, a, bad_e, z, t)
    # the prover's answer to e = 2^t would satisfy the equation: only the range check stops it
    z_big = respond(keypair, c, r, 2**t)
    with pytest.raises(ProofError, match="challenge out of range"):
        verify_transcript(pk, c, x, a, 2**t, z_big, t)
    verify_transcript(pk, c, x, a, 2**t, z_big, t + 1)


def test_recovered_v_is_the_encryption_randomness(keypair):
    n = keypair.n
    for fixed in (0, 5, -(2**40)):
        r = random_unit(n)
        c = keypair.encrypt_int(fixed, obfuscator=pow(r, n, keypair.nsquare))
        assert recover_randomness(keypair, c) == r
        c_pub = encrypt_int(keypair.public_key, fixed, obfuscator=pow(r, n, keypair.nsquare))
        assert recover_randomness(keypair, c_pub) == r


def test_v_is_c_to_the_inverse_of_n_mod_lambda(keypair, proven):
    c, x, _ = proven
    n, p, q = keypair.n, keypair.p, keypair.q
    lam = math.lcm(p - 1, q - 1)
    v = recover_randomness(keypair, c)
    assert v == pow(c, pow(n, -1, lam), n)
    u = c * (1 - x * n) % keypair.nsquare
    assert pow(v, n, keypair.nsquare) == u  # u is the N-th power of v mod N²


def test_response_is_r_times_v_to_the_e(keypair, proven):
    c, _, _ = proven
    n = keypair.n
    r, e = random_unit(n), random_challenge(FS_CHALLENGE_BITS)
    v = recover_randomness(keypair, c)
    assert respond(keypair, c, r, e) == r * pow(v, e, n) % n
    assert keypair.nth_root(c, 0) == 1
    with pytest.raises(CryptoError, match="non-unit"):
        keypair.nth_root(keypair.p * 7)


def test_simulated_transcripts_verify_only_for_their_own_challenge(keypair):
    pk, t = keypair.public_key, INTERACTIVE_CHALLENGE_BITS
    c = encrypt(pk, 9.0)
    x = encode_real(9.0)
    e = random_challenge(t)
    sim = simulate_transcript(pk, c, x, e)
    verify_transcript(pk, c, x, sim.a, e, sim.z, t)
    for other in ((e + 1) % 2**t, random_challenge(t), 0):
        if other == e:
            continue
        with pytest.raises(ProofError, match="equation"):
            verify_transcript(pk, c, x, sim.a, other, sim.z, t)
    # the simulator works for a false statement too: that is why e must come after a,
    # and why the Fiat-Shamir hash covers a. As an FS proof it fails.
    false_sim = simulate_transcript(pk, c, x + 1, e)
    verify_transcript(pk, c, x + 1, false_sim.a, e, false_sim.z, t)
    with pytest.raises(ProofError, match="equation"):
        verify_decryption(pk, c, x + 1, false_sim, CTX)


def test_commitment_from_a_pool(keypair):
    pool = ObfuscatorPool(keypair)
    pool.fill(2)
    entry = pool.take()
    c = keypair.encrypt(-0.125)
    x, proof = prove_decryption(keypair, c, CTX, commitment=entry)
    assert proof.a == entry.rn and len(pool) == 1
    assert verify_decryption(keypair.public_key, c, x, proof, CTX) == encode_real(-0.125)


def test_fiat_shamir_challenge_matches_the_spec_encoding(keypair, proven):
    c, x, proof = proven

    def lp(b):
        return struct.pack(">I", len(b)) + b

    def ib(v):
        return v.to_bytes((v.bit_length() + 7) // 8, "big")

    ctx = lp(b"run-7") + lp(b"12") + lp(b"S1") + lp(b"B2") + lp(b"price")
    assert CTX.to_bytes() == ctx
    digest = hashlib.sha256(
        lp(b"privgrid/zkp-decryption/v1")
        + lp(ib(keypair.n))
        + lp(ib(c))
        + lp(ib(x))
        + lp(ib(proof.a))
        + lp(ctx)
    ).digest()
    e = fiat_shamir_challenge(keypair.n, c, x, proof.a, CTX)
    assert e == int.from_bytes(digest, "big") < 2**FS_CHALLENGE_BITS
    assert fiat_shamir_challenge(keypair.n, c, x - keypair.n, proof.a, CTX) == e  # x mod N


def test_proof_bytes_round_trip(keypair, proven):
    _, _, proof = proven
    data = proof.to_bytes(keypair.public_key)
    assert len(data) == 3 * 1024 // 8  # 384 B at 1024 bits (§5.5)
    assert DecryptionProof.from_bytes(keypair.public_key, data) == proof
    with pytest.raises(ProofError, match="bytes"):
        DecryptionProof.from_bytes(keypair.public_key, data[:-1])


def test_context_validation():
    with pytest.raises(ValueError):
        ProofContext(run="", round=1, owner="S1", peer="B1")
    with pytest.raises(ValueError):
        ProofContext(run="r", round=-1, owner="S1", peer="B1")
    with pytest.raises(ValueError):
        ProofContext(run="r", round=True, owner="S1", peer="B1")


def test_full_direction_at_2048_bits():
    kp = generate_keypair(2048)
    assert kp.n.bit_length() == 2048
    pk = kp.public_key
    ctx = ProofContext(run="demo", round=0, owner="S1", peer="B1")
    c = pair_contract(pk, kp.encrypt(18.0), encrypt(pk, 2.0))
    x, proof = prove_decryption(kp, c, ctx)
    assert len(proof.to_bytes(pk)) == 768
    assert verify_decryption(pk, c, x, proof, ctx) == encode_real(20.0)
    with pytest.raises(ProofError):
        verify_decryption(pk, c, x, proof, dataclasses.replace(ctx, round=1))
    r = random_unit(kp.n)
    assert kp.pow_n(r) == pow(r, kp.n, kp.nsquare)
