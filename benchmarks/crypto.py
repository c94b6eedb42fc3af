"""Speed of the protocol's crypto operations next to the floor of one modular exponentiation.

Usage: ``python benchmarks/crypto.py [--bits 1024 2048 3072] [--repeat N] [--quick]
[--write-docs]``

Per key size, the median CPU time of each operation of one pair direction (protocol.md §4) and its
ratio to one raw ``gmpy2.powmod(r, N, N²)`` — the floor: one textbook encryption, one
public-key exponentiation. Operations are measured interleaved (sample 1 of every operation,
then sample 2, …), so a burst of load on a shared machine hits them all alike and the ratios
stay stable. Nothing is asserted: the numbers depend on the machine. ``--write-docs``
rewrites the ``crypto`` section of docs/performance.md.

Rows: the unpooled operations (what a direction costs with no precomputation) — the two
encryptions, the contract product both sides compute, the CRT decryption on its own and
decryption + proof together (the proof's own cost is the difference) — then the online cost
with pools (the obfuscator or proof commitment taken from a pool filled offline),
batch verification per proof (a batch of ``BATCH`` proofs of one owner, with the cheap checks
each proof gets on arrival), and the totals per pair direction.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from itertools import cycle
from pathlib import Path

import gmpy2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.perfdoc import (
    command_line,
    markdown_table,
    stamp,
    text_table,
    write_section,
)
from privgrid.contract import pair_contract
from privgrid.crypto.paillier import (
    encrypt_int,
    generate_keypair,
    new_obfuscator,
    random_unit,
)
from privgrid.crypto.zkp import (
    DecryptionBatch,
    ProofContext,
    check_decryption,
    prove_decryption,
    verify_decryption,
)

MIN_SAMPLE_SECONDS = 2e-3
BATCH = 32  # proofs per batch, as privgrid.privacy.paillier.batch.BATCH_CLOSE
FLOOR = "floor: gmpy2.powmod(r, N, N²)"
ENC_OWN = "encrypt c_A, owner (CRT r^N)"
ENC_PEER = "encrypt c_B, peer (public key)"
ENC_POOL = "encrypt, pooled r^N (online)"
CONTRACT = "contract product c = c_A·c_B mod N² (each side)"
DECRYPT = "decrypt (CRT), alone"
PROVE = "decrypt + prove (CRT)"
PROVE_POOL = "decrypt + prove, pooled commitment (online)"
VERIFY = "verify (Fiat–Shamir, t = 256)"
BATCH_ROW = f"batch verify, per proof (batch of {BATCH})"
TOTAL = "per pair direction: 2 enc + prove + verify"
TOTAL_FAST = "per pair direction online: pools + batch"


def timer(fn: Callable[[], object]) -> Callable[[], float]:
    """A sampler of ``fn``: each call returns the mean CPU time of enough calls to last ≥ 2 ms.

    CPU time of this process, not wall time: on a shared machine a sample that is descheduled
    would otherwise count the other jobs' time (the operations are single-threaded).
    """
    start = time.process_time()
    fn()
    once = time.process_time() - start
    inner = max(1, int(MIN_SAMPLE_SECONDS / max(once, 1e-9)))

    def sample() -> float:
        start = time.process_time()
        for _ in range(inner):
            fn()
        return (time.process_time() - start) / inner

    return sample


def bench(bits: int, repeat: int) -> dict[str, float]:
    """Median ms per operation for one key size, all operations sampled interleaved."""
    kp = generate_keypair(bits)
    pk, n, n2 = kp.public_key, kp.n, kp.nsquare
    ctx = ProofContext(run="bench", round=1, owner="S1", peer="B1")
    r = random_unit(n)
    value = 108_146_635_407
    pooled_rn = cycle([new_obfuscator(pk).rn for _ in range(8)])
    pooled_commitments = cycle([kp.new_obfuscator() for _ in range(8)])
    c_a, c_b = kp.encrypt_int(value), encrypt_int(pk, -value // 3)
    c = pair_contract(pk, c_a, c_b)
    x, proof = prove_decryption(kp, c, ctx)
    proofs = []
    for i in range(BATCH):
        c_i = kp.encrypt_int(value + i)
        x_i, proof_i = prove_decryption(kp, c_i, ctx)
        proofs.append((c_i, x_i, proof_i))

    def batch_per_proof() -> None:
        batch: DecryptionBatch[int] = DecryptionBatch(pk)
        for i, (c_i, x_i, proof_i) in enumerate(proofs):
            batch.add(check_decryption(pk, c_i, x_i, proof_i, ctx), i)
        assert batch.close() == []

    ops: dict[str, Callable[[], object]] = {
        FLOOR: lambda: gmpy2.powmod(r, n, n2),
        ENC_OWN: lambda: kp.encrypt_int(value),
        ENC_PEER: lambda: encrypt_int(pk, value),
        ENC_POOL: lambda: encrypt_int(pk, value, next(pooled_rn)),
        CONTRACT: lambda: pair_contract(pk, c_a, c_b),
        DECRYPT: lambda: kp.decrypt_residue(c),
        PROVE: lambda: prove_decryption(kp, c, ctx),
        PROVE_POOL: lambda: prove_decryption(kp, c, ctx, next(pooled_commitments)),
        VERIFY: lambda: verify_decryption(pk, c, x, proof, ctx),
        BATCH_ROW: batch_per_proof,
    }
    samplers = {name: timer(fn) for name, fn in ops.items()}
    samples: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(repeat):
        for name, sample in samplers.items():
            samples[name].append(sample())
    ms = {name: statistics.median(s) * 1e3 for name, s in samples.items()}
    ms[BATCH_ROW] /= BATCH
    ms[TOTAL] = ms[ENC_OWN] + ms[ENC_PEER] + ms[PROVE] + ms[VERIFY]
    ms[TOTAL_FAST] = 2 * ms[ENC_POOL] + ms[PROVE_POOL] + ms[BATCH_ROW]
    return ms


def table(results: dict[int, dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    head = ["operation"] + [h for bits in results for h in (f"{bits} ms", "× floor")]
    rows = []
    for name in next(iter(results.values())):
        row = [name]
        for ms in results.values():
            row += [f"{ms[name]:.3f}", f"{ms[name] / ms[FLOOR]:.2f}"]
        rows.append(row)
    return head, rows


def doc_section(results: dict[int, dict[str, float]], repeat: int, elapsed: float) -> str:
    head, rows = table(results)
    return "\n".join(
        [
            "### Crypto per operation against the floor (`benchmarks/crypto.py`)",
            "",
            stamp(command_line(), elapsed)
            + f" Median CPU time (this process's, so other jobs' load does not count) of"
            f" {repeat} interleaved samples.",
            "",
            markdown_table(head, rows),
            "",
            "The floor is one `gmpy2.powmod(r, N, N²)` (a textbook encryption). *Owner* "
            "operations use the factorisation (CRT: two half-size exponentiations); *peer* "
            "operations have only the public key. *Pooled* rows are the online cost when the "
            "obfuscator r^N or the proof commitment (r, r^N) was computed ahead, offline. "
            "The *contract product* is the one multiplication mod N² (with the shares' range "
            "and unit checks) that owner and peer each run; *decrypt (CRT), alone* is the "
            "owner's decryption by itself, also the first step of *decrypt + prove*, so the "
            "proof's own cost is the difference of the two rows. "
            f"*Batch verify* folds {BATCH} proofs of one owner into one check with secret odd "
            "64-bit exponents (one full exponentiation per batch plus one Straus "
            "multi-exponentiation), including each proof's cheap checks on arrival.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[1024, 2048, 3072])
    parser.add_argument("--repeat", type=int, default=15, help="samples per operation")
    parser.add_argument("--quick", action="store_true", help="1024 bits, 3 samples (smoke test)")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs section")
    args = parser.parse_args()
    bits, repeat = ([1024], 3) if args.quick else (args.bits, args.repeat)
    started = time.perf_counter()
    results = {b: bench(b, repeat) for b in bits}
    print(text_table(*table(results)))
    if args.write_docs:
        write_section("crypto", doc_section(results, repeat, time.perf_counter() - started))
        print("wrote the crypto section of docs/performance.md")


if __name__ == "__main__":
    main()
