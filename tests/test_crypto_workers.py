"""Crypto on worker threads (``privacy.crypto_threads``): same prices, same checks.

Real 1024-bit keys, real threads; messages are passed by hand so that the jobs of several
messages run together before any of them is handled, as the runtime does with a backlog.
"""

import gmpy2
import numpy as np
import pytest

from privgrid.attack.lying import LyingDecryptor
from privgrid.crypto.errors import ProofError
from privgrid.crypto.workers import crypto_pool
from privgrid.privacy.exchange import Violation
from privgrid.privacy.paillier import PaillierExchange
from privgrid.privacy.paillier.workers import Prepared
from privgrid.wire.channel import Message, Outgoing
from tests.test_pair_protocol import keys, shares  # noqa: F401  (keys is a fixture)

POOL = crypto_pool(2)


def deliver(out: Outgoing, sender: str) -> Message:
    raw = f"signed:{out.kind}:{sender}:{out.recipient}:{out.round}".encode()
    return Message(out.round, sender, out.recipient, out.body, raw=raw)


def run_pair_threaded(s1, b1, round_=1, seed=0):
    """Both directions of S1–B1; each wave of messages has its jobs run on the pool first."""
    own, peer = shares(seed)
    wave = [(o, "S1") for o in s1.begin(round_, own[:1], peer[:1])]
    wave += [(o, "B1") for o in b1.begin(round_, own[1:], peer[1:])]
    jobs = 0
    while wave:
        messages = [(b1 if o.recipient == "B1" else s1, deliver(o, sender)) for o, sender in wave]
        started = [POOL.submit(job) for r, m in messages if (job := r.precompute(m)) is not None]
        for future in started:
            future.result()
        jobs += len(started)
        wave = []
        for receiver, message in messages:
            wave += [(o, receiver.me) for o in receiver.handle(message)]
    return jobs


class Inline(PaillierExchange):
    """The same exchange with no jobs: everything computed in handle()."""

    def precompute(self, message):
        return None


def test_worker_threads_may_release_the_gil():
    assert POOL.submit(lambda: gmpy2.get_context().allow_release_gil).result() is True


def test_threaded_prices_equal_inline_prices_and_every_job_is_used(keys):  # noqa: F811
    s1k, b1k = keys
    inline = Inline("S1", ["B1"], s1k), Inline("B1", ["S1"], b1k)
    threaded = PaillierExchange("S1", ["B1"], s1k), PaillierExchange("B1", ["S1"], b1k)
    for round_ in (1, 2):
        for s1, b1 in (inline, threaded):
            run_pair_threaded(s1, b1, round_=round_, seed=round_)
        for a, b in zip(inline, threaded, strict=True):
            assert a.prices(np.zeros(1)) == b.prices(np.zeros(1))
    for exchange in threaded:
        assert exchange.counters.counts == {
            "proofs_made": 2,
            "proofs_verified": 2,
            "proofs_failed": 0,
            "worker_jobs": 4,  # 2 rounds × (our decrypt + prove, our check of theirs)
        }
        assert len(exchange.prepared) == 0  # each job's result was taken by handle()
        assert exchange.counters.seconds["verify"] > 0


def test_jobs_run_for_proofs_and_checks_only(keys):  # noqa: F811
    s1k, b1k = keys
    s1, b1 = PaillierExchange("S1", ["B1"], s1k), PaillierExchange("B1", ["S1"], b1k)
    # Per direction: one decrypt + prove (share_peer), one check (price_proof); 2 directions.
    assert run_pair_threaded(s1, b1) == 4
    batch = PaillierExchange("S1", ["B1"], s1k, verify="batch")
    other = PaillierExchange("B1", ["S1"], b1k, verify="batch")
    assert run_pair_threaded(batch, other) == 2  # batch mode checks later, in one go


def test_a_lie_is_caught_when_the_check_ran_on_a_worker(keys):  # noqa: F811
    s1k, b1k = keys
    liar = LyingDecryptor("S1", ["B1"], s1k, lie=0.01, from_round=2)
    honest = PaillierExchange("B1", ["S1"], b1k)
    run_pair_threaded(liar, honest, round_=1)
    with pytest.raises(Violation, match="decryption proof refused") as info:
        run_pair_threaded(liar, honest, round_=2)
    assert info.value.offender == "S1"
    assert honest.counters.counts["proofs_failed"] == 1


def test_a_result_from_other_inputs_is_not_used(keys):  # noqa: F811
    """handle() recomputes when a job's inputs differ from its own: a stale or wrong result
    (here planted: claims a failed check) cannot decide a message."""
    s1k, b1k = keys
    s1, b1 = Inline("S1", ["B1"], s1k), Inline("B1", ["S1"], b1k)
    own, peer = shares(5)
    out_s1 = s1.begin(1, own[:1], peer[:1])
    out_b1 = b1.begin(1, own[1:], peer[1:])
    answer_b1 = b1.handle(deliver(out_s1[0], "S1"))  # B1's c_B to S1
    answer_s1 = s1.handle(deliver(out_b1[0], "B1"))  # S1's c_B to B1
    proof_s1 = s1.handle(deliver(answer_b1[0], "B1"))[0]  # S1's price_proof to B1
    b1.handle(deliver(answer_s1[0], "S1"))
    message = deliver(proof_s1, "S1")
    planted = Prepared(("another", "input"), ProofError("planted"), 0.0)
    b1.prepared.put(message.raw, planted)
    assert b1.handle(message) == []  # checked inline: the proof is good
    assert b1.counters.counts["proofs_verified"] == 1
    assert len(b1.prepared) == 0
