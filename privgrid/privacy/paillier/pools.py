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

The pools themselves (:class:`KeyPools`) belong to the participant's keys, not to one
exchange: in a day over the wire (docs/feeder.md) the keys are the day's, so entries left at
the end of an interval serve the next one, and the idle time between intervals fills the pools
of the next interval's pairs ahead (:func:`pool_targets`, ``crypto_ahead``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from privgrid.crypto import paillier as pl
from privgrid.privacy.paillier.keys import PaillierKeys

#: The longest the fill at the start of round 1 may hold the event loop (partners' pools
#: need their keys, so they cannot be filled before the session in a one-session run).
START_FILL_BUDGET_S = 2.0


def pool_targets(me: str, partners: Sequence[str], depth: int) -> dict[str, int]:
    """Entries each pool should hold for ``depth`` rounds of a market where ``me`` trades
    with ``partners``, by key owner: ``me`` (the own pool) 2 per partner per round (c_A and
    the proof commitment), each partner 1 per round (c_B). Pure: no pool is touched."""
    return {me: 2 * len(partners) * depth, **{m: depth for m in partners}}


def next_interval_targets(
    me: str, pairs: Sequence[tuple[str, str]], pool_rounds: int, max_rounds: int
) -> dict[str, int]:
    """The pools to fill ahead of an interval, and how full, by key owner (as
    :func:`pool_targets`): its pairs ``pairs``, ``privacy.pool_rounds`` and
    ``market.max_rounds`` as its scenario says. Empty if ``me`` trades with no one in it or
    pools are off. Pure."""
    partners = [m for pair in pairs if me in pair for m in pair if m != me]
    depth = min(pool_rounds, max_rounds)
    return pool_targets(me, partners, depth) if partners and depth > 0 else {}


class KeyPools:
    """The own pool and one pool per partner's key: the entries of one participant's keys.

    An entry is valid as long as its key is, so the pools outlive an exchange: a day's
    intervals share them (one key pair per participant for the day). A pool whose key is no
    longer the one in use (ours restored from a checkpoint, a partner's renewed by a restart)
    is replaced on access, so a stale entry is never handed out.
    """

    def __init__(self, keys: PaillierKeys) -> None:
        self.keys = keys
        self._own = pl.ObfuscatorPool(keys.keypair)
        self.partners: dict[str, pl.ObfuscatorPool] = {}
        self._retired = (0, 0)  # (made, misses) of the pools replaced so far
        self._retired_hits = (0, 0)  # (hits, ahead_hits) of the pools replaced so far

    @property
    def own(self) -> pl.ObfuscatorPool:
        """The pool of our key pair (afresh if the key pair was replaced)."""
        if self._own.public_key.n != self.keys.keypair.public_key.n:
            self.rekey()
        return self._own

    def partner(self, partner: str) -> pl.ObfuscatorPool:
        """The pool of ``partner``'s key (made when first needed; the key must be accepted)."""
        key = self.keys.public(partner)
        pool = self.partners.get(partner)
        if pool is None or pool.public_key.n != key.n:
            self.forget(partner)
            pool = self.partners[partner] = pl.ObfuscatorPool(key)
        return pool

    def ready(self, owner: str) -> bool:
        """Whether the pool of ``owner``'s key can be filled (ours, or an accepted key)."""
        return owner == self.keys.me or owner in self.keys.peers

    def pool(self, owner: str) -> pl.ObfuscatorPool:
        return self.own if owner == self.keys.me else self.partner(owner)

    def fill_toward(self, targets: Mapping[str, int], budget_s: float) -> tuple[int, float]:
        """Fill toward ``targets`` (entries by key owner, :func:`pool_targets`), one entry at
        a time for the pool furthest below its target, for at most about ``budget_s``. The
        entries are marked as made ahead (:meth:`drawn` counts those drawn later).

        Returns:
            The entries made and the seconds spent (0, 0.0 when every pool is full).
        """
        wanted = {o: n for o, n in targets.items() if n > 0 and self.ready(o)}
        made, spent = 0, 0.0
        deadline = time.perf_counter() + budget_s
        while time.perf_counter() < deadline:
            lacking = {o: n - len(self.pool(o)) for o, n in wanted.items()}
            owner = max(lacking, key=lambda o: lacking[o] / wanted[o], default=None)
            if owner is None or lacking[owner] <= 0:
                break
            spent += self.pool(owner).fill(1, ahead=True)
            made += 1
        return made, spent

    def forget(self, partner: str) -> None:
        """``partner`` restarted (its key may be new): its pool is void."""
        self._retire(self.partners.pop(partner, None))

    def rekey(self) -> None:
        """Our key pair was replaced: the own pool's entries are void; start it afresh."""
        self._retire(self._own)
        self._own = pl.ObfuscatorPool(self.keys.keypair)

    def _retire(self, pool: pl.ObfuscatorPool | None) -> None:
        if pool is not None:
            made, misses = self._retired
            self._retired = (made + pool.made, misses + pool.misses)
            hits, ahead = self._retired_hits
            self._retired_hits = (hits + pool.hits, ahead + pool.ahead_hits)

    def totals(self) -> tuple[int, int]:
        """Entries made ahead and made on the spot (misses) so far, replaced pools included."""
        pools = [self._own, *self.partners.values()]
        made, misses = self._retired
        return made + sum(p.made for p in pools), misses + sum(p.misses for p in pools)

    def drawn(self) -> tuple[int, int]:
        """Entries drawn from the pools so far (hits), and how many of them were made by
        :meth:`fill_toward` (a day's fill between intervals), replaced pools included."""
        pools = [self._own, *self.partners.values()]
        hits, ahead = self._retired_hits
        return hits + sum(p.hits for p in pools), ahead + sum(p.ahead_hits for p in pools)

    def left(self) -> int:
        """Entries held now."""
        return len(self._own) + sum(len(p) for p in self.partners.values())


class ExchangePools:
    """The depth each pool of one exchange should hold, over the participant's
    :class:`KeyPools` (its own, or the day's given as ``store``)."""

    def __init__(
        self,
        keys: PaillierKeys,
        partners: Sequence[str],
        rounds: int,
        max_rounds: int | None,
        store: KeyPools | None = None,
    ) -> None:
        self.keys = keys
        self.partner_ids = list(partners)
        #: ``privacy.pool_rounds``: rounds' worth of entries to hold; 0: no pools.
        self.rounds = rounds
        self.max_rounds = max_rounds
        self.store = store if store is not None else KeyPools(keys)
        #: The round before this market's first (a day's interval does not open at round 0),
        #: learnt when the first round begins.
        self.opening = 0
        #: The pools' counters when this exchange began: its figures are the difference.
        self._made0, self._misses0 = self.store.totals()
        self._hits0, self._ahead0 = self.store.drawn()

    @property
    def own(self) -> pl.ObfuscatorPool:
        return self.store.own

    @property
    def partners(self) -> dict[str, pl.ObfuscatorPool]:
        return self.store.partners

    def depth(self, round_: int) -> int:
        """Rounds of entries to hold: ``pool_rounds``, but never more than can still run."""
        if self.max_rounds is None:
            return self.rounds
        done = max(0, round_ - self.opening)
        return max(0, min(self.rounds, self.max_rounds - done + 1))

    def partner(self, partner: str) -> pl.ObfuscatorPool:
        """The pool of ``partner``'s key (the key must be accepted)."""
        return self.store.partner(partner)

    def set_targets(self, round_: int, active: Sequence[str]) -> list[pl.ObfuscatorPool]:
        """Set every pool's target depth; return the pools that can be filled now."""
        depth = self.depth(round_) if self.rounds else 0
        targets = pool_targets(self.keys.me, active, depth)
        self.own.target = targets[self.keys.me]
        pools = [self.own]
        for m in self.partner_ids:
            if m not in self.partners and m not in self.keys.peers:
                continue  # its key is not in yet
            pool = self.partner(m)
            pool.target = targets.get(m, 0)
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
        self.store.forget(partner)

    def rekey(self, round_: int, active: Sequence[str]) -> None:
        """Our key pair was replaced: the own pool's entries are void; start it afresh."""
        self.store.rekey()
        if self.rounds:
            self.set_targets(round_, active)

    def stats(self) -> dict[str, float]:
        """Since this exchange began: entries made ahead and on the spot (misses), entries
        drawn from the pools (hits) and those of them made between intervals (ahead hits);
        and the entries held now."""
        made, misses = self.store.totals()
        hits, ahead = self.store.drawn()
        return {
            "pool_made": float(made - self._made0),
            "pool_misses": float(misses - self._misses0),
            "pool_hits": float(hits - self._hits0),
            "pool_ahead_hits": float(ahead - self._ahead0),
            "pool_left": float(self.store.left()),
        }
