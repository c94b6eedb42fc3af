"""The pair contract of protocol.md §4.2: c = c_A · c_B mod N², run by both parties."""

import pytest

from privgrid.contract import pair_contract
from privgrid.crypto import generate_keypair
from privgrid.crypto.codec import encode_real
from privgrid.crypto.errors import CiphertextError, ContractError, CryptoError
from privgrid.crypto.paillier import (
    ciphertext_from_bytes,
    ciphertext_to_bytes,
    encrypt,
    public_key_from_bytes,
    public_key_to_bytes,
)
from privgrid.crypto.zkp import ProofContext, prove_decryption, verify_decryption
from privgrid.market.fixedpoint import quantise_scalar


@pytest.fixture(scope="session")
def owner():
    return generate_keypair(1024)


def _shares(lam_nm, lam_mn, p_nm, p_mn, alpha=0.05, beta=0.1):
    """Owner and peer shares of protocol.md §1."""
    return (1 - beta) * lam_nm - alpha * p_nm, beta * lam_mn - alpha * p_mn


def test_both_parties_compute_the_same_c(owner):
    a_share, b_share = _shares(20.0, 20.0, 3.5, -3.0)
    # owner n encrypts A and sends it; peer m loads n's key from the wire and encrypts B
    c_A = owner.encrypt(a_share)
    peer_key = public_key_from_bytes(public_key_to_bytes(owner.public_key), 1024)
    c_B = encrypt(peer_key, b_share)
    msg1, msg2 = ciphertext_to_bytes(peer_key, c_A), ciphertext_to_bytes(peer_key, c_B)
    c_at_owner = pair_contract(owner.public_key, c_A, ciphertext_from_bytes(owner.public_key, msg2))
    c_at_peer = pair_contract(peer_key, ciphertext_from_bytes(peer_key, msg1), c_B)
    assert c_at_owner == c_at_peer
    assert c_at_owner not in (c_A, c_B)


@pytest.mark.parametrize(
    "a_share,b_share",
    [(18.0, 2.0), (-5.5, 1.25), (3.0, -7.75), (-1e-6, -2.5), (0.0, 0.0), (2.0**30, -(2.0**30))],
)
def test_decryption_of_c_is_the_sum_of_the_shares(owner, a_share, b_share):
    pk = owner.public_key
    c = pair_contract(pk, owner.encrypt(a_share), encrypt(pk, b_share))
    x_a, x_b = encode_real(a_share), encode_real(b_share)
    assert owner.decrypt_residue(c) == (x_a + x_b) % owner.n
    assert owner.decrypt_int(c) == x_a + x_b
    assert owner.decrypt(c) == quantise_scalar(a_share) + quantise_scalar(b_share)


def test_new_price_is_proven_against_the_peers_own_c(owner):
    a_share, b_share = _shares(21.0, 21.0, 2.0, -1.0)
    pk = owner.public_key
    c_A, c_B = owner.encrypt(a_share), encrypt(pk, b_share)
    ctx = ProofContext(run="r", round=5, owner="S1", peer="B1")
    x, proof = prove_decryption(owner, pair_contract(pk, c_A, c_B), ctx)
    fixed = verify_decryption(pk, pair_contract(pk, c_A, c_B), x, proof, ctx)
    assert fixed == encode_real(a_share) + encode_real(b_share)


def test_contract_rejects_bad_inputs_naming_the_share(owner):
    pk = owner.public_key
    good = owner.encrypt(1.0)
    cases = [
        (0, good, "c_A", "range"),
        (good, pk.nsquare, "c_B", "range"),
        (good, -good, "c_B", "range"),
        (owner.p, good, "c_A", "unit"),
        (good, owner.q * 3, "c_B", "unit"),
        (1.5, good, "c_A", "int"),
        (good, True, "c_B", "int"),
        (good, ciphertext_to_bytes(pk, good), "c_B", "int"),
    ]
    for c_a, c_b, name, reason in cases:
        with pytest.raises(ContractError, match=f"{name}.*{reason}") as info:
            pair_contract(pk, c_a, c_b)
        assert isinstance(info.value, CiphertextError) and isinstance(info.value, CryptoError)
        assert "contract input rejected" in info.value.reason


def test_contract_is_deterministic(owner):
    pk = owner.public_key
    c_A, c_B = owner.encrypt(1.0), encrypt(pk, 2.0)
    assert pair_contract(pk, c_A, c_B) == pair_contract(pk, c_A, c_B) == c_A * c_B % pk.nsquare
