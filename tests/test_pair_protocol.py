"""The two-party price computation (protocol.md §4) between two exchanges, real 1024-bit keys.

Messages are passed by hand (no broker), so each step and each check can be observed.
"""

from dataclasses import replace

import msgpack
import numpy as np
import pytest

from privgrid.attack.lying import LyingDecryptor
from privgrid.crypto import paillier as pl
from privgrid.crypto.keyproof import key_proof_to_bytes, make_key_proof
from privgrid.market.fixedpoint import decode, encode
from privgrid.market.price import combine_fixed, price_shares, share_to_fixed
from privgrid.privacy.exchange import Violation
from privgrid.privacy.paillier import PaillierExchange, PaillierKeys
from privgrid.privacy.plain import PlainExchange
from privgrid.wire.channel import Message, Outgoing
from privgrid.wire.envelope import Rejected
from privgrid.wire.kinds import KeyAnnouncement

RUN = "pair-test"
#: The part of an announcement the channel checks (the agreement key), which these tests skip.
BASE = KeyAnnouncement(x25519=bytes(32), created=0.0)


@pytest.fixture(scope="module")
def keys():
    s1, b1 = PaillierKeys("S1", RUN, 1024, 1024), PaillierKeys("B1", RUN, 1024, 1024)
    s1.accept("B1", b1.announcement(BASE))
    b1.accept("S1", s1.announcement(BASE))
    return s1, b1


def deliver(out: Outgoing, sender: str) -> Message:
    return Message(out.round, sender, out.recipient, out.body, raw=b"signed:" + out.kind.encode())


def shares(seed: int):
    rng = np.random.default_rng(seed)
    lam, bar = rng.normal(1.5, 0.5, 2), rng.normal(0, 2, 2)
    own, peer = price_shares(lam, bar, 0.2, 0.25, 1.0)
    return share_to_fixed(own), share_to_fixed(peer)


def run_pair(s1, b1, round_=1, seed=0, tamper=None):
    """Drive both directions of the S1–B1 pair; ``tamper(kind, out)`` may alter a message."""
    own, peer = shares(seed)
    queue = [(o, "S1") for o in s1.begin(round_, own[:1], peer[:1])]
    queue += [(o, "B1") for o in b1.begin(round_, own[1:], peer[1:])]
    first = {o.kind for o, _ in queue}
    assert first in ({"share_own"}, {"share"})  # Paillier: owners go first, nobody rushes
    while queue:
        out, sender = queue.pop(0)
        if tamper is not None:
            out = tamper(out) or out
        receiver = b1 if out.recipient == "B1" else s1
        queue += [(o, receiver.me) for o in receiver.handle(deliver(out, sender))]
    return own, peer


def test_both_directions_give_the_plain_prices(keys):
    s1k, b1k = keys
    s1 = PaillierExchange("S1", ["B1"], s1k)
    b1 = PaillierExchange("B1", ["S1"], b1k)
    own, peer = run_pair(s1, b1, seed=3)
    assert s1.complete and b1.complete
    lam_s1, seen_by_s1 = s1.prices(np.zeros(1))
    lam_b1, seen_by_b1 = b1.prices(np.zeros(1))
    expected_s1 = combine_fixed(own[:1], peer[1:])  # λ_S1,B1 = A_S1 + B_B1
    expected_b1 = combine_fixed(own[1:], peer[:1])
    assert lam_s1[0] == expected_s1[0] and seen_by_b1[0] == expected_s1[0]
    assert lam_b1[0] == expected_b1[0] and seen_by_s1[0] == expected_b1[0]
    assert s1.counters.counts == {"proofs_made": 1, "proofs_verified": 1, "proofs_failed": 0}


def test_plain_and_paillier_exchanges_agree_bit_for_bit(keys):
    s1k, b1k = keys
    secure = (PaillierExchange("S1", ["B1"], s1k), PaillierExchange("B1", ["S1"], b1k))
    plain = (PlainExchange("S1", ["B1"]), PlainExchange("B1", ["S1"]))
    for pair in (secure, plain):
        run_pair(*pair, seed=11)
    assert secure[0].prices(np.zeros(1)) == plain[0].prices(np.zeros(1))


def test_a_lying_decryptor_is_caught_by_the_proof(keys):
    s1k, b1k = keys
    liar = LyingDecryptor("S1", ["B1"], s1k, lie=0.01, from_round=2)
    honest = PaillierExchange("B1", ["S1"], b1k)
    run_pair(liar, honest, round_=1)  # before its first lie: fine
    assert honest.complete
    with pytest.raises(Violation, match="decryption proof refused") as info:
        run_pair(liar, honest, round_=2)
    assert info.value.offender == "S1"
    assert info.value.evidence == [b"signed:share_own", b"signed:price_proof"]
    assert honest.counters.counts["proofs_failed"] == 1


@pytest.mark.parametrize(
    ("kind", "change", "reason"),
    [
        ("share_own", {"c": b"\x00" * 256}, "out of range|not a unit|c_A"),
        ("share_peer", {"c": b"\x01" * 100}, "bytes|length"),
        ("price_proof", {"z": b"\xff" * 128}, "decryption proof refused"),
        ("share_own", {"pair": ("B1", "S1")}, "names pair"),
    ],
)
def test_malformed_shares_and_proofs_are_violations(keys, kind, change, reason):
    s1k, b1k = keys
    s1, b1 = PaillierExchange("S1", ["B1"], s1k), PaillierExchange("B1", ["S1"], b1k)

    def tamper(out):
        if (out.kind == kind and out.recipient == "B1") or (
            kind == "share_peer" and out.kind == kind
        ):
            return Outgoing(out.recipient, out.round, replace(out.body, **change))
        return None

    with pytest.raises(Violation, match=reason):
        run_pair(s1, b1, tamper=tamper)


def test_a_second_share_in_one_round_is_refused(keys):
    s1k, b1k = keys
    s1, b1 = PaillierExchange("S1", ["B1"], s1k), PaillierExchange("B1", ["S1"], b1k)
    own, peer = shares(1)
    first = s1.begin(1, own[:1], peer[:1])[0]
    b1.begin(1, own[1:], peer[1:])
    b1.handle(deliver(first, "S1"))
    with pytest.raises(Rejected, match="second share_own"):
        b1.handle(deliver(first, "S1"))


def test_a_proof_does_not_move_to_another_round(keys):
    """The Fiat–Shamir context binds round k: a proof replayed in round k+1 fails."""
    s1k, b1k = keys
    s1, b1 = PaillierExchange("S1", ["B1"], s1k), PaillierExchange("B1", ["S1"], b1k)
    recorded = {}

    def keep(out):
        if out.kind == "price_proof" and out.recipient == "B1":
            recorded["proof"] = out
        return None

    run_pair(s1, b1, round_=1, tamper=keep)

    def replay(out):
        if out.kind == "price_proof" and out.recipient == "B1":
            return Outgoing(out.recipient, out.round, recorded["proof"].body)
        return None

    with pytest.raises(Violation, match="decryption proof refused"):
        run_pair(s1, b1, round_=2, tamper=replay)


def test_key_announcements_are_checked(keys):
    s1k, _ = keys
    checker = PaillierKeys("MO", RUN, 1024, 1024)
    good = s1k.announcement(BASE)
    checker.accept("S1", good)
    small = pl.generate_keypair(512)
    with pytest.raises(Rejected, match="Paillier key refused"):
        checker.accept(
            "S1",
            replace(
                BASE,
                paillier_n=pl.public_key_to_bytes(small.public_key),
                paillier_bits=512,
                key_proof=tuple(key_proof_to_bytes(small.n, make_key_proof(small, RUN, "S1"))),
            ),
        )
    assert good.key_proof is not None
    bad_proof = (b"\x01" * 128,) * len(good.key_proof)
    with pytest.raises(Rejected, match="Paillier key refused"):
        checker.accept("S1", replace(good, key_proof=bad_proof))
    with pytest.raises(Rejected, match="Paillier key refused"):  # proof made for another run
        other = PaillierKeys("S1", "another-run", 1024, 1024)
        checker.accept("S1", other.announcement(BASE))
    with pytest.raises(Rejected, match="without a Paillier key"):
        checker.accept("S1", KeyAnnouncement(x25519=b"\x00" * 32, created=0.0))


def test_fixed_point_shares_stay_exact_through_paillier(keys):
    s1k, _ = keys
    values = np.array([-3.25, 1e-9, 1234.5678])
    cts = [s1k.keypair.encrypt_int(int(x)) for x in encode(values)]
    assert np.array_equal(
        decode(np.array([s1k.keypair.decrypt_int(c) for c in cts])), decode(encode(values))
    )


# -- both partners restarted, one a round behind the other (docs/reliability.md) --------------
@pytest.mark.parametrize("mode", ["plain", "paillier"])
def test_partners_restarted_a_round_apart_redo_that_round_with_the_same_prices(keys, mode):
    """S1 completed round 1 and checkpointed it; B1 crashed before completing it; both
    restart. S1 rebuilds the round from its checkpoint (msgpack, as the state file keeps
    it) and starts the pair over for B1; B1 redoes the round from its own checkpoint and,
    once it sees S1's rejoin, sends its opening share again (S1 ignored the first: it came
    before B1's resync). Both end with the prices of the undisturbed round, and S1's check
    that the redo gives its checkpointed prices passes."""

    def pair() -> tuple:
        if mode == "plain":
            return PlainExchange("S1", ["B1"]), PlainExchange("B1", ["S1"])
        return PaillierExchange("S1", ["B1"], keys[0]), PaillierExchange("B1", ["S1"], keys[1])

    s1, b1 = pair()
    own, peer = run_pair(s1, b1, seed=5)
    expected = s1.prices(np.zeros(1)), b1.prices(np.zeros(1))
    saved = msgpack.unpackb(msgpack.packb(s1.snapshot()), raw=False)
    s1, b1 = pair()  # both restarted: S1 from round 1's checkpoint, B1 from round 0's
    s1.restore(saved)
    assert s1.prices(np.zeros(1)) == expected[0]
    ignored = b1.begin(1, own[1:], peer[1:])  # reached S1 before B1's resync: dropped
    assert ignored and s1.round == 1
    queue = [(o, "S1") for o in s1.restart_partner(0)]  # S1 saw B1's rejoin
    queue += [(o, "B1") for o in b1.resend_opening(0)]  # B1 saw S1's rejoin
    assert [o.body for o, sender in queue if sender == "B1"] == [o.body for o in ignored]
    while queue:
        out, sender = queue.pop(0)
        receiver = b1 if out.recipient == "B1" else s1
        queue += [(o, receiver.me) for o in receiver.handle(deliver(out, sender))]
    assert b1.complete and b1.prices(np.zeros(1)) == expected[1]
    assert s1.redo_done(0) and s1.prices(np.zeros(1)) == expected[0]
    assert b1.resend_opening(0) == []  # its price is in: nothing more to send


def test_a_restored_round_refuses_a_redo_with_other_prices():
    """The redo after both restarts is checked like any other: another price is reported."""
    s1, b1 = PlainExchange("S1", ["B1"]), PlainExchange("B1", ["S1"])
    own, peer = run_pair(s1, b1, seed=6)
    saved = s1.snapshot()
    s1 = PlainExchange("S1", ["B1"])
    s1.restore(saved)
    s1.restart_partner(0)
    (share,) = PlainExchange("B1", ["S1"]).begin(1, own[1:] + 1, peer[1:])
    with pytest.raises(Violation, match="after its restart, B1 computed its price"):
        s1.handle(deliver(share, "B1"))


def test_an_exchange_checkpoint_of_other_partners_is_refused():
    s1 = PlainExchange("S1", ["B1", "B2"])
    s1.begin(3, np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="another set of partners"):
        PlainExchange("S1", ["B1"]).restore(s1.snapshot())
