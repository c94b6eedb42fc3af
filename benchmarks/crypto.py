"""Speed of the crypto primitives next to the floor of one modular exponentiation.

Usage: ``python benchmarks/crypto.py [--bits 1024 2048 3072] [--repeat N]``

Prints, for each key size, the median time in ms of each operation and its ratio to one raw
``gmpy2.powmod(r, N, N²)`` (the cost of one textbook encryption, protocol.md §10's "floor").
Nothing is asserted: the numbers depend on the machine. Fast operations run several times per
sample so that timer resolution does not dominate. Pooled obfuscators are reused across
samples here (timing only; the protocol uses each entry once).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from itertools import cycle

import gmpy2
import phe

from privgrid.contract import pair_contract
from privgrid.crypto.keyproof import make_key_proof, verify_key_proof
from privgrid.crypto.packing import encrypt_packed, slots_per_ciphertext
from privgrid.crypto.paillier import (
    encrypt,
    encrypt_int,
    generate_keypair,
    new_obfuscator,
    random_unit,
)
from privgrid.crypto.zkp import (
    INTERACTIVE_CHALLENGE_BITS,
    ProofContext,
    commit,
    prove_decryption,
    random_challenge,
    recover_randomness,
    respond,
    verify_decryption,
    verify_transcript,
)

MIN_SAMPLE_SECONDS = 2e-3
FLOOR = "floor: gmpy2.powmod(r, N, N²)"


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of one call, in ms, over ``repeat`` samples."""
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    inner = max(1, int(MIN_SAMPLE_SECONDS / max(once, 1e-9)))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples) * 1e3


def bench(bits: int, repeat: int) -> dict[str, float]:
    """All timings for one key size."""
    results: dict[str, float] = {}
    results["key generation"] = median_ms(lambda: generate_keypair(bits), max(3, repeat // 3))
    kp = generate_keypair(bits)
    pk, n, n2 = kp.public_key, kp.n, kp.nsquare
    ctx = ProofContext(run="bench", round=1, owner="S1", peer="B1")
    r = random_unit(n)
    obfuscators = cycle([new_obfuscator(pk).rn for _ in range(16)])
    commitments = cycle([kp.new_obfuscator() for _ in range(16)])
    c_a, c_b = kp.encrypt(21.5), encrypt(pk, -1.25)
    c = pair_contract(pk, c_a, c_b)
    x, proof = prove_decryption(kp, c, ctx)
    key_proof = make_key_proof(kp, "bench", "S1")
    slots = slots_per_ciphertext(bits)
    values = [(i - slots // 2) << 32 for i in range(slots)]
    t = INTERACTIVE_CHALLENGE_BITS
    r_i, a_i = commit(kp)
    e_i = random_challenge(t)
    z_i = respond(kp, c, r_i, e_i)

    results[FLOOR] = median_ms(lambda: gmpy2.powmod(r, n, n2), repeat)
    results["encrypt (public key)"] = median_ms(lambda: encrypt(pk, 25.18), repeat)
    results["obfuscator r^N (owner, CRT)"] = median_ms(lambda: kp.pow_n(r), repeat)
    results["encrypt, pooled obfuscator"] = median_ms(
        lambda: encrypt_int(pk, 108_146_635_407, next(obfuscators)), repeat
    )
    results["decrypt (CRT)"] = median_ms(lambda: kp.decrypt_residue(c), repeat)
    results["contract product"] = median_ms(lambda: pair_contract(pk, c_a, c_b), repeat)
    results["recover v"] = median_ms(lambda: recover_randomness(kp, c), repeat)
    results["FS prove (full)"] = median_ms(lambda: prove_decryption(kp, c, ctx), repeat)
    results["FS prove (pooled commitment)"] = median_ms(
        lambda: prove_decryption(kp, c, ctx, next(commitments)), repeat
    )
    results["FS verify (t = 256)"] = median_ms(
        lambda: verify_decryption(pk, c, x, proof, ctx), repeat
    )
    results["interactive verify (t = 128)"] = median_ms(
        lambda: verify_transcript(pk, c, x, a_i, e_i, z_i, t), repeat
    )
    results["key proof make"] = median_ms(lambda: make_key_proof(kp, "bench", "S1"), repeat)
    results["key proof verify"] = median_ms(
        lambda: verify_key_proof(n, "bench", "S1", key_proof), repeat
    )
    results["packed encrypt per value"] = (
        median_ms(lambda: encrypt_packed(pk, values), repeat) / slots
    )
    return results


def print_table(all_results: dict[int, dict[str, float]]) -> None:
    """One row per operation; per key size: median ms and ratio to the powmod floor."""
    names = list(next(iter(all_results.values())))
    width = max(len(name) for name in names) + 2
    header = f"{'operation':<{width}}" + "".join(
        f"{f'{bits} ms':>12}{'×floor':>9}" for bits in all_results
    )
    print(header)
    print("-" * len(header))
    for name in names:
        row = f"{name:<{width}}"
        for res in all_results.values():
            row += f"{res[name]:>12.4f}{res[name] / res[FLOOR]:>9.3f}"
        print(row)
    slots = ", ".join(f"{slots_per_ciphertext(bits)} at {bits}" for bits in all_results)
    print(f"(packed: values per ciphertext = {slots})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[1024, 2048, 3072])
    parser.add_argument("--repeat", type=int, default=15, help="samples per operation")
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()}, phe {phe.__version__}, "
        f"gmpy2 {gmpy2.version()}, {platform.machine()}; median of {args.repeat} samples"
    )
    print_table({bits: bench(bits, args.repeat) for bits in args.bits})


if __name__ == "__main__":
    main()
