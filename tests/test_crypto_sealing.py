"""Pair keys, sealed fields and LM masks (protocol.md §6.1, §6.2)."""

import hashlib
import hmac
import itertools
import struct

import msgpack
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privgrid.crypto.errors import SealError
from privgrid.crypto.sealing import (
    MASK_MODULUS,
    AgreementKey,
    associated_data,
    mask_key,
    masks,
    net_masks,
    pair_key,
    seal,
    unseal,
)

RUN = "run-3"


def lp(b):
    return struct.pack(">I", len(b)) + b


@pytest.fixture(scope="module")
def keys():
    return {name: AgreementKey.generate() for name in ("S1", "B1", "B2", "S2")}


@pytest.fixture(scope="module")
def k_pair(keys):
    return pair_key(keys["S1"], "S1", "B1", keys["B1"].public_bytes(), RUN)


AD = associated_data(RUN, 4, "S1", "B1", "price_proof")
FIELDS = {"x": (2**200).to_bytes(26, "big"), "a": b"\x01" * 256, "z": b"\x02" * 128, "k": 4}


def test_pair_key_is_symmetric_and_32_bytes(keys, k_pair):
    other_side = pair_key(keys["B1"], "B1", "S1", keys["S1"].public_bytes(), RUN)
    assert other_side == k_pair and len(k_pair) == 32


def test_pair_key_matches_the_specified_derivation(keys, k_pair):
    shared = keys["S1"].exchange(keys["B1"].public_bytes())
    info = lp(b"privgrid/pair/v1") + lp(b"B1") + lp(b"S1")  # min, max by byte order
    expected = HKDF(hashes.SHA256(), 32, salt=RUN.encode(), info=info).derive(shared)
    assert k_pair == expected


def test_keys_differ_by_run_pair_and_purpose(keys, k_pair):
    s1 = keys["S1"]
    assert pair_key(s1, "S1", "B1", keys["B1"].public_bytes(), "run-4") != k_pair
    assert pair_key(s1, "S1", "B2", keys["B2"].public_bytes(), RUN) != k_pair
    assert mask_key(s1, "S1", "B1", keys["B1"].public_bytes(), RUN) != k_pair
    # a third party with its own agreement key derives something else
    assert pair_key(keys["B2"], "S1", "B1", keys["B1"].public_bytes(), RUN) != k_pair


def test_pair_key_input_checks(keys):
    s1 = keys["S1"]
    with pytest.raises(SealError, match="two different"):
        pair_key(s1, "S1", "S1", keys["B1"].public_bytes(), RUN)
    with pytest.raises(SealError, match="invalid"):
        pair_key(s1, "S1", "B1", bytes(32), RUN)  # low-order point: all-zero secret
    with pytest.raises(SealError, match="32 bytes"):
        pair_key(s1, "S1", "B1", b"\x09" * 31, RUN)


def test_seal_round_trip(k_pair):
    sealed = seal(k_pair, FIELDS, AD)
    assert unseal(k_pair, sealed, AD) == FIELDS
    assert len(sealed) == 12 + len(msgpack.packb(FIELDS, use_bin_type=True)) + 16
    assert seal(k_pair, FIELDS, AD)[:12] != sealed[:12]  # fresh random nonce


@pytest.mark.parametrize("position", [0, 11, 12, 40, -17, -1])
def test_tampered_ciphertext_is_rejected(k_pair, position):
    sealed = bytearray(seal(k_pair, FIELDS, AD))
    sealed[position] ^= 0x80
    with pytest.raises(SealError, match="authentication failed"):
        unseal(k_pair, bytes(sealed), AD)


@pytest.mark.parametrize(
    "ad",
    [
        associated_data("run-4", 4, "S1", "B1", "price_proof"),
        associated_data(RUN, 5, "S1", "B1", "price_proof"),
        associated_data(RUN, 4, "B1", "S1", "price_proof"),
        associated_data(RUN, 4, "S1", "B2", "price_proof"),
        associated_data(RUN, 4, "S1", "B1", "share_own"),
        b"",
    ],
)
def test_wrong_associated_data_is_rejected(k_pair, ad):
    with pytest.raises(SealError, match="authentication failed"):
        unseal(k_pair, seal(k_pair, FIELDS, AD), ad)


def test_wrong_key_truncation_and_bad_keys_are_rejected(keys, k_pair):
    sealed = seal(k_pair, FIELDS, AD)
    wrong = pair_key(keys["S1"], "S1", "B2", keys["B2"].public_bytes(), RUN)
    with pytest.raises(SealError, match="authentication failed"):
        unseal(wrong, sealed, AD)
    with pytest.raises(SealError, match="too short"):
        unseal(k_pair, sealed[:27], AD)
    with pytest.raises(SealError, match="32 bytes"):
        unseal(k_pair[:16], sealed, AD)
    with pytest.raises(SealError, match="32 bytes"):
        seal(b"", FIELDS, AD)


def test_unencodable_fields_and_non_map_payloads_are_rejected(k_pair):
    with pytest.raises(SealError, match="msgpack"):
        seal(k_pair, {"x": 2**70}, AD)  # big integers must travel as bytes
    with pytest.raises(SealError, match="msgpack"):
        seal(k_pair, {"x": object()}, AD)
    nonce = b"\x00" * 12
    forged = nonce + ChaCha20Poly1305(k_pair).encrypt(nonce, msgpack.packb([1, 2]), AD)
    with pytest.raises(SealError, match="not a map"):
        unseal(k_pair, forged, AD)


def test_associated_data_encoding():
    assert associated_data("r", 12, "S1", "B1", "price_proof") == (
        lp(b"r") + lp(b"12") + lp(b"S1") + lp(b"B1") + lp(b"price_proof")
    )


def test_masks_are_a_shake_stream_seeded_by_hmac_over_run_round_and_lines(keys):
    k = mask_key(keys["S1"], "S1", "B1", keys["B1"].public_bytes(), RUN)
    assert k == mask_key(keys["B1"], "B1", "S1", keys["S1"].public_bytes(), RUN)
    lines = ["1-2", "2-3", "7-9"]
    framed = lp(RUN.encode()) + lp(b"7") + b"".join(lp(line.encode()) for line in lines)
    seed = hmac.new(k, framed, hashlib.sha256).digest()
    stream = hashlib.shake_256(seed).digest(24)
    got = masks(k, RUN, 7, lines)
    assert got == [int.from_bytes(stream[i : i + 8], "big") for i in (0, 8, 16)]
    assert all(0 <= m < MASK_MODULUS for m in got) and len(set(got)) == 3
    # another round, run or line list gives unrelated masks
    others = [masks(k, RUN, 8, lines), masks(k, "r", 7, lines), masks(k, RUN, 7, lines[:2])]
    assert all(not set(got) & set(o) for o in others)


def test_net_masks_cancel_over_all_agents_on_every_line(keys):
    names = sorted(keys)
    mask_keys = {
        n: {m: mask_key(keys[n], n, m, keys[m].public_bytes(), RUN) for m in names if m != n}
        for n in names
    }
    lines = ["L1", "2"]
    flows = {"B1": [1000, 5], "B2": [-250, 0], "S1": [77, -3], "S2": [2**40, 1]}
    nets = {n: net_masks(n, mask_keys[n], RUN, 9, lines) for n in names}
    for i in range(len(lines)):
        ys = {n: (flows[n][i] + nets[n][i]) % MASK_MODULUS for n in names}
        assert all(ys[n] != flows[n][i] % MASK_MODULUS for n in names)  # each y_n is masked
        total = sum(f[i] for f in flows.values()) % MASK_MODULUS
        assert sum(ys.values()) % MASK_MODULUS == total
        # without one agent's contribution the masks no longer cancel
        assert sum(nets[n][i] for n in names[:-1]) % MASK_MODULUS != 0
    with pytest.raises(SealError, match="itself"):
        net_masks("S1", {"S1": bytes(32)}, RUN, 9, lines)


def test_every_ordered_pair_derives_the_same_mask_key(keys):
    for n, m in itertools.permutations(sorted(keys), 2):
        assert mask_key(keys[n], n, m, keys[m].public_bytes(), RUN) == mask_key(
            keys[m], m, n, keys[n].public_bytes(), RUN
        )
