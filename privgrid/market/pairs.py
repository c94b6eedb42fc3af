"""Who trades with whom: a ``market.pairs`` spec becomes the list of trading pairs.

Three forms (docs/scenarios.md): ``"sellers-buyers"`` (every seller with every buyer, every
prosumer with everyone), an explicit list, and ``{nearest = k}`` (each buyer with its k
electrically nearest sellers, :func:`nearest_pairs`). Every process derives the pairs itself
from the scenario, so this is pure and deterministic: the same agents and spec give the same
pairs, in the same order and orientation (seller first), in every process.

This is market logic, apart from the scenario schema that only says which forms are valid:
an agent is a :data:`Member` ``(id, bus, role)`` here, not a scenario section.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Literal

from privgrid.grid.cases import load_network
from privgrid.grid.distance import bus_distance


class Role(StrEnum):
    """Inferred from an agent's bounds (algorithm.md §1)."""

    SELLER = "seller"
    BUYER = "buyer"
    PROSUMER = "prosumer"


#: What the pairing needs of an agent: its id, bus number and role.
Member = tuple[str, int, Role]

Pair = tuple[str, str]


def can_trade(first: Role, second: Role) -> bool:
    """A seller with a buyer, or a prosumer with anyone."""
    return Role.PROSUMER in (first, second) or {first, second} == {Role.SELLER, Role.BUYER}


def resolve_pairs(
    members: Sequence[Member], spec: Literal["sellers-buyers"] | Sequence[Pair]
) -> list[Pair]:
    """Trading pairs, each ``(first, second)`` with the seller first when there is one.

    ``"sellers-buyers"``: every seller with every buyer, and every prosumer with every other
    agent, in the order the agents are listed (for the paper case: S1-B1, S1-B2, …, S4-B3).
    A list: those pairs, oriented. ``{nearest = k}`` is :func:`nearest_on_network`.
    """
    if isinstance(spec, str):
        raw = [
            (members[i][0], members[j][0])
            for i in range(len(members))
            for j in range(i + 1, len(members))
            if can_trade(members[i][2], members[j][2])
        ]
    else:
        raw = [(n, m) for n, m in spec]
    return seller_first(raw, {m[0]: m[2] for m in members})


def seller_first(raw: Sequence[Pair], role: dict[str, Role]) -> list[Pair]:
    """Each pair turned so that a seller trading with a buyer comes first."""
    return [(m, n) if role[n] == Role.BUYER and role[m] == Role.SELLER else (n, m) for n, m in raw]


def nearest_pairs(
    members: Sequence[Member], k: int, distance: Callable[[int, int], float]
) -> list[Pair]:
    """Sparse pairing by electrical distance (``pairs = {nearest = k}``).

    - Every buyer trades with the k sellers nearest to its bus.
    - A prosumer is on both sides: it picks its k nearest among sellers and the other
      prosumers, and buyers and prosumers may pick it.
    - A seller that no one picked trades with its single nearest buyer (or prosumer), so
      every seller has a partner; that buyer then has more than k partners.
    - Ties (equal distance, e.g. agents on one bus) go to the smaller id (string order).
    - Each pair appears once, ordered as ``"sellers-buyers"`` orders them: by the position
      of its agents in the file. With k = number of sellers and no prosumers, the result is
      exactly ``"sellers-buyers"``.

    ``distance(bus_i, bus_j)`` must be symmetric (see :mod:`privgrid.grid.distance`).
    """
    order = {m[0]: i for i, m in enumerate(members)}
    supply = [m for m in members if m[2] != Role.BUYER]
    demand = [m for m in members if m[2] != Role.SELLER]

    def ranked(member: Member, candidates: list[Member]) -> list[str]:
        others = [c for c in candidates if c[0] != member[0]]
        return [c[0] for c in sorted(others, key=lambda c: (distance(member[1], c[1]), c[0]))]

    chosen: set[Pair] = set()

    def add(n: str, m: str) -> None:
        chosen.add((n, m) if order[n] < order[m] else (m, n))

    for buyer in demand:
        for seller in ranked(buyer, supply)[:k]:
            add(buyer[0], seller)
    paired = {x for pair in chosen for x in pair}
    for member in supply:
        if member[2] == Role.SELLER and member[0] not in paired and demand:
            add(member[0], ranked(member, demand)[0])
    return sorted(chosen, key=lambda p: (order[p[0]], order[p[1]]))


def nearest_limit(roles: Sequence[Role]) -> int:
    """The largest k every buyer (and prosumer) can be given: the candidates it picks from."""
    supply = sum(r != Role.BUYER for r in roles)
    return supply - 1 if Role.PROSUMER in roles else supply


@functools.lru_cache(maxsize=32)
def nearest_on_network(
    case: str,
    base_dir: Path,
    members: tuple[Member, ...],
    k: int,
) -> tuple[Pair, ...]:
    """``{nearest = k}`` on network ``case``: :func:`nearest_pairs`, oriented seller first.

    Loads the network (the shipped data of a named case loads in milliseconds). Cached once
    per network, agent set and k: every process resolves the pairs itself, and this keeps it
    to one distance computation each.
    """
    network = load_network(case, base_dir)
    raw = nearest_pairs(members, k, functools.partial(bus_distance, network))
    return tuple(seller_first(raw, {m[0]: m[2] for m in members}))
