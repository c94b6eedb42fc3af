"""Threads for the heavy Paillier steps of a process (``privacy.crypto_threads``).

Python threads run big-integer work in parallel only if the arithmetic releases the GIL.
gmpy2 does that for its large operations when its *context* allows it
(``allow_release_gil``), and the context is per thread: it must be switched on in each
worker thread, which the pool's initializer does. Measured on this machine (2 cores,
``benchmarks/investigations.py``): 40 powmods of 4096-bit numbers take 888 ms on one thread
and 507 ms on two such workers; with the default context the two workers take 973 ms (no
gain at all).

One pool per process, shared by every agent the process hosts (``--agents-per-process``):
the pool size bounds the CPU the process can use for crypto, whatever the number of agents.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import gmpy2


def _release_gil() -> None:
    """Worker-thread initializer: let gmpy2 drop the GIL during large operations."""
    context = gmpy2.get_context()
    context.allow_release_gil = True
    gmpy2.set_context(context)


@functools.cache
def crypto_pool(threads: int) -> ThreadPoolExecutor:
    """The process's crypto worker threads (made once per size, on first use)."""
    if threads < 1:
        raise ValueError(f"a crypto pool needs at least one thread, got {threads}")
    return ThreadPoolExecutor(threads, "crypto", initializer=_release_gil)
