"""Precomputed obfuscators of one agent's price exchange (``privacy.pool_rounds``).

The expensive part of an encryption is r^N mod N², and of a decryption proof its commitment;
neither depends on the value, so both can be made ahead of use (protocol.md §10,
docs/performance.md). This module decides *how many* to hold and *when* to make them; the
pool itself (:class:`privgrid.crypto.paillier.ObfuscatorPool`) makes and hands out entries.
It is apart from the exchange because it is scheduling, not protocol: an empty pool is never
an error, the entry is then made on the spot (``pool_misses``).

- **own pool** (CRT, this agent's key): one entry per own direction for ``c_A`` and one for
  the proof commitment ``a``, i.e. 2 per partner per round. Filled to ``pool_rounds``
  rounds' worth before the process connects (phase ``offline``);
- **partner pools** (each partner's public key, full powmod): one entry per round for
  ``c_B``. They can be filled only once the partner's key is accepted: in idle time before
  round 1, and what is still missing when round 1 begins is filled right then, for at most
  :data:`START_FILL_BUDGET_S` (phase ``offline_start``);
- during the session idle time tops the pools up, one entry per call (``topup``). The depth
  never exceeds the rounds that can still run (``market.max_rounds``), so
  ``pool_rounds ≥ max_rounds`` precomputes the whole session and never tops up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from privgrid.crypto import paillier as pl
from privgrid.privacy.paillier.keys import PaillierKeys

#: The longest the fill at the start of round 1 may hold the event loop (partners' pools
#: need their keys, so they cannot be filled before the session in a one-session run).
START_FILL_BUDGET_S = 2.0


class ExchangePools:
    """The own pool and one pool per partner's key, with the depth each should hold."""

    def __init__(
        self, keys: PaillierKeys, partners: Sequence[str], rounds: int, max_rounds: int | None
    ) -> None:
        self.keys = keys
        self.partner_ids = list(partners)
        #: ``privacy.pool_rounds``: rounds' worth of entries to hold; 0: no pools.
        self.rounds = rounds
        self.max_rounds = max_rounds
        self.own = pl.ObfuscatorPool(keys.keypair)
        self.partners: dict[str, pl.ObfuscatorPool] = {}

    def depth(self, round_: int) -> int:
        """Rounds of entries to hold: ``pool_rounds``, but never more than can still run."""
        if self.max_rounds is None:
            return self.rounds
        return max(0, min(self.rounds, self.max_rounds - round_ + 1))

    def partner(self, partner: str) -> pl.ObfuscatorPool:
        """The pool of ``partner``'s key (made when first needed; the key must be accepted)."""
        pool = self.partners.get(partner)
        if pool is None:
            pool = self.partners[partner] = pl.ObfuscatorPool(self.keys.public(partner))
        return pool

    def set_targets(self, round_: int, active: Sequence[str]) -> list[pl.ObfuscatorPool]:
        """Set every pool's target depth; return the pools that can be filled now."""
        depth = self.depth(round_) if self.rounds else 0
        self.own.target = 2 * len(active) * depth
        pools = [self.own]
        for m in self.partner_ids:
            if m not in self.partners and m not in self.keys.peers:
                continue  # its key is not in yet
            pool = self.partner(m)
            pool.target = depth if m in active else 0
            pools.append(pool)
        return pools

    def fill_offline(self, round_: int, active: Sequence[str]) -> float:
        """Fill the own pool to its depth (before the session); return the time spent."""
        self.set_targets(round_, active)
        return self.own.fill_to_target()

    def fill_at_start(self, round_: int, active: Sequence[str]) -> float:
        """Fill the pools round-robin for at most ``START_FILL_BUDGET_S``; return the time.

        Bounded because it runs in the event loop: a client that computes for 1.5 keepalives
        without serving its connection is dropped by the broker (measured: an unbounded
        200-round fill at 2048 bits, 7 s of CPU per agent, did that on a loaded machine).
        Whatever is left is topped up in idle time or made on demand (a pool miss).
        """
        pools = self.set_targets(round_, active)
        deadline = time.perf_counter() + START_FILL_BUDGET_S
        spent = 0.0
        while time.perf_counter() < deadline:
            needy = [pool for pool in pools if pool.deficit]
            if not needy:
                break
            for pool in needy:
                spent += pool.fill(1)
        return spent

    def top_up(self, round_: int, active: Sequence[str]) -> float | None:
        """One entry for the pool furthest below its depth; the seconds it took, or None if
        every pool is full (or there are no pools)."""
        if not self.rounds:
            return None
        pools = [p for p in self.set_targets(round_, active) if p.target]
        if not pools:
            return None
        pool = max(pools, key=lambda p: p.deficit / p.target)
        started = time.perf_counter()
        if pool.fill_one():
            return time.perf_counter() - started
        return None

    def retire(self, partner: str) -> None:
        """The pair was dropped: hold no more entries for ``partner``'s key."""
        pool = self.partners.get(partner)
        if pool is not None:
            pool.target = 0

    def forget(self, partner: str) -> None:
        """``partner`` restarted (its key may be new): its pool is void."""
        self.partners.pop(partner, None)

    def rekey(self, round_: int, active: Sequence[str]) -> None:
        """Our key pair was replaced: the own pool's entries are void; start it afresh."""
        self.own = pl.ObfuscatorPool(self.keys.keypair)
        if self.rounds:
            self.set_targets(round_, active)

    def stats(self) -> dict[str, float]:
        pools = [self.own, *self.partners.values()]
        return {
            "pool_made": float(sum(p.made for p in pools)),
            "pool_misses": float(sum(p.misses for p in pools)),
            "pool_left": float(sum(len(p) for p in pools)),
        }
