"""The DC network model: buses, the slack bus and branches, independent of where they came from.

Only what the DC power-flow model needs is kept (algorithm.md §3): each branch's end buses,
series reactance and tap ratio. Lines are named ``"<from>-<to>"`` by the case's own 1-based bus
numbers; a second parallel line between the same buses gets ``"#2"``, a third ``"#3"``, and so on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Branch:
    """One in-service branch (line or transformer) of the DC model."""

    name: str
    from_bus: int
    to_bus: int
    x: float  # series reactance, p.u.
    tap: float  # off-nominal tap ratio (1.0 for lines)

    @property
    def susceptance(self) -> float:
        """``b_l = 1 / (x_l k_l)`` as in MATPOWER's makeBdc."""
        return 1.0 / (self.x * self.tap)


@dataclass(frozen=True)
class Network:
    """A network case ready for the PTDF computation."""

    name: str
    buses: tuple[int, ...]  # bus numbers as in the case file, ascending
    slack: int  # bus number of the reference bus
    branches: tuple[Branch, ...]
    _bus_index: dict[int, int] = field(init=False, repr=False, compare=False)
    _branch_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bus_index", {b: i for i, b in enumerate(self.buses)})
        names = {br.name: i for i, br in enumerate(self.branches)}
        object.__setattr__(self, "_branch_index", names)
        if self.slack not in self._bus_index:
            raise ValueError(f"slack bus {self.slack} is not a bus of network {self.name!r}")

    def bus_index(self, bus: int) -> int:
        """Column of ``bus`` in the ISF matrix."""
        return self._bus_index[bus]

    def has_bus(self, bus: int) -> bool:
        return bus in self._bus_index

    def branch_index(self, name: str) -> int:
        """Row of line ``name`` in the ISF matrix."""
        return self._branch_index[name]

    def has_branch(self, name: str) -> bool:
        return self.resolve_branch(name) is not None

    def resolve_branch(self, name: str) -> str | None:
        """The canonical name of line ``name``, accepting either orientation.

        ``"86-87"`` finds a branch stored as ``"87-86"`` (pandapower lists some transformers
        high-voltage side first). Limits are symmetric, so orientation does not matter for
        them; flows are reported in the canonical orientation.
        """
        if name in self._branch_index:
            return name
        ends, _, parallel = name.partition("#")
        f, sep, t = ends.partition("-")
        if not sep:
            return None
        flipped = f"{t}-{f}" + (f"#{parallel}" if parallel else "")
        return flipped if flipped in self._branch_index else None

    @property
    def branch_names(self) -> list[str]:
        return [br.name for br in self.branches]


def name_branches(rows: Iterable[tuple[int, int, float, float]]) -> tuple[Branch, ...]:
    """Turn ``(from, to, x, tap)`` rows into named branches in a stable order.

    Rows are sorted by (from, to) — MATPOWER's own case files list branches in that order — and
    parallel branches keep their relative input order, the second one being named ``"f-t#2"``.
    A tap of 0 means 1 (MATPOWER's convention for lines).
    """
    ordered = sorted(rows, key=lambda r: (r[0], r[1]))  # sort is stable for parallel lines
    seen: dict[tuple[int, int], int] = {}
    branches = []
    for f, t, x, tap in ordered:
        count = seen.get((f, t), 0) + 1
        seen[(f, t)] = count
        name = f"{f}-{t}" if count == 1 else f"{f}-{t}#{count}"
        branches.append(Branch(name, int(f), int(t), float(x), float(tap) if tap else 1.0))
    return tuple(branches)
