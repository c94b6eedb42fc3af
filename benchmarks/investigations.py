"""The measurements behind two write-ups in docs/performance.md (prints tables, asserts nothing).

Usage: ``python benchmarks/investigations.py [--bits 2048] [--repeat 30] [--quick]``

1. *Short randomness h^s* (Damgård–Jurik–Nielsen; "Investigated" in docs/performance.md):
   the CPU time of one obfuscator made the way the protocol does today — the floor
   ``r^N mod N²``, and the key owner's CRT form of it — against DJN's ``h_s^s mod N²`` with a
   half-length exponent (|s| = ⌈k/2⌉), its CRT form, and a 256-bit exponent. Median of
   ``--repeat`` samples, interleaved so that load hits every row alike; ratio to the floor.
   Nothing here is used by the protocol: h^s was investigated, not implemented.
2. *gmpy2 and threads* (``privacy.crypto_threads``, privgrid/crypto/workers.py): 40 powmods of
   4096-bit numbers on one thread, on two worker threads whose gmpy2 context may release the
   GIL (what the crypto pool's initializer sets), and on two workers without that switch.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gmpy2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.perfdoc import text_table
from privgrid.crypto.paillier import generate_keypair, random_unit
from privgrid.crypto.workers import crypto_pool


def _cpu_ms(operation: Callable[[], object]) -> float:
    started = time.process_time()
    operation()
    return 1000 * (time.process_time() - started)


def short_randomness(bits: int, repeat: int) -> list[list[str]]:
    """Obfuscators r^N (today) against DJN's h_s^s, plain and with the owner's CRT."""
    key = generate_keypair(bits)
    n, n2 = key.n, key.nsquare
    p2, q2 = key.p * key.p, key.q * key.q
    x = random_unit(n)
    h_s = gmpy2.powmod(-x * x % n, n, n2)  # h = −x² mod N, published as h^N mod N²
    half = (bits + 1) // 2
    # CRT for h_s^s: the exponent reduced modulo the order of each half's group
    # (p(p−1) and q(q−1)), as the key owner can do.
    order_p, order_q = key.p * (key.p - 1), key.q * (key.q - 1)
    h_p, h_q = h_s % p2, h_s % q2

    def crt_short(s: int) -> int:
        return key.crt_mod_nsquare(
            gmpy2.powmod(h_p, s % order_p, p2), gmpy2.powmod(h_q, s % order_q, q2)
        )

    rows: dict[str, Callable[[], object]] = {
        "floor: r^N mod N² (textbook encryption's obfuscator)": lambda: gmpy2.powmod(
            random_unit(n), n, n2
        ),
        "r^N with CRT (the owner's own obfuscators, today)": lambda: key.pow_n(random_unit(n)),
        f"h_s^s mod N², |s| = {half} bits (DJN)": lambda: gmpy2.powmod(
            h_s, secrets.randbits(half), n2
        ),
        f"h_s^s with CRT, |s| = {half} bits": lambda: crt_short(secrets.randbits(half)),
        "h_s^s mod N², |s| = 256 bits (not claimed by DJN)": lambda: gmpy2.powmod(
            h_s, secrets.randbits(256), n2
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeat):
        for name, operation in rows.items():
            samples[name].append(_cpu_ms(operation))
    floor = statistics.median(next(iter(samples.values())))
    return [
        [name, f"{statistics.median(times):.2f}", f"{statistics.median(times) / floor:.2f}"]
        for name, times in samples.items()
    ]


def _no_release() -> None:
    context = gmpy2.get_context()
    context.allow_release_gil = False
    gmpy2.set_context(context)


def threads(count: int = 40, bits: int = 4096) -> list[list[str]]:
    """Wall time of ``count`` independent powmods: one thread, two GIL-releasing workers
    (the crypto pool), two workers with gmpy2's default context."""
    modulus = gmpy2.mpz(secrets.randbits(bits) | 1 | (1 << (bits - 1)))
    jobs = [(secrets.randbits(bits) % modulus, secrets.randbits(bits)) for _ in range(count)]

    def work(job: tuple[int, int]) -> object:
        return gmpy2.powmod(job[0], job[1], modulus)

    def timed(run: Callable[[], object]) -> float:
        started = time.perf_counter()
        run()
        return 1000 * (time.perf_counter() - started)

    default_pool = ThreadPoolExecutor(2, initializer=_no_release)
    variants: dict[str, Callable[[], object]] = {
        "one thread": lambda: [work(job) for job in jobs],
        "two workers, GIL released (crypto_pool)": lambda: list(crypto_pool(2).map(work, jobs)),
        "two workers, gmpy2 default context": lambda: list(default_pool.map(work, jobs)),
    }
    for run in variants.values():
        run()  # warm-up: threads started, caches filled
    rows = []
    for name, run in variants.items():
        wall = statistics.median(timed(run) for _ in range(5))
        rows.append([name, f"{wall:.0f}"])
    default_pool.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=2048, help="Paillier key size for h^s")
    parser.add_argument("--repeat", type=int, default=30, help="samples per operation")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1024 bits, 3 samples, 8 smaller powmods"
    )
    args = parser.parse_args()
    bits, repeat = (1024, 3) if args.quick else (args.bits, args.repeat)
    print(f"Short randomness h^s, {bits}-bit key, CPU ms, median of {repeat}")
    print(text_table(["obfuscator", "ms", "÷ floor"], short_randomness(bits, repeat)))
    count, size = (8, 2048) if args.quick else (40, 4096)
    print(f"\n{count} powmods of {size}-bit numbers, wall ms, median of 5")
    print(text_table(["how", "ms"], threads(count, size)))


if __name__ == "__main__":
    main()
