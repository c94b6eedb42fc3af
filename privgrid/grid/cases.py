"""Load network cases: MATPOWER's case14/30/118 through pandapower, or a MATPOWER ``.m`` file.

Both paths end in the same :class:`~privgrid.grid.network.Network` with the case file's own bus
numbers and reference (slack) bus. Out-of-service branches are dropped. The heavy libraries are
imported only when a case is loaded, so processes that never need the network stay light.
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

from privgrid.grid.network import Network, name_branches

#: Scenario names → pandapower.networks functions (MATPOWER case14, case30 and case118).
NAMED_CASES = {"ieee14": "case14", "ieee30": "case30", "ieee118": "case118"}

# MATPOWER column indices (0-based) in the bus and branch matrices.
_BUS_I, _BUS_TYPE, _REF = 0, 1, 3
_F_BUS, _T_BUS, _BR_X, _TAP, _BR_STATUS = 0, 1, 3, 8, 10


class CaseError(ValueError):
    """A network case cannot be loaded; the message says which case and why."""


def load_network(case: str, base_dir: Path | None = None) -> Network:
    """Load a named case (``ieee14``/``ieee30``/``ieee118``) or a MATPOWER ``.m`` file.

    A relative file path is resolved against ``base_dir`` (the scenario file's folder).
    """
    if case in NAMED_CASES:
        return _load_named(case)
    path = Path(case)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.suffix != ".m":
        raise CaseError(
            f"unknown case {case!r}: use one of {sorted(NAMED_CASES)} or a MATPOWER .m file"
        )
    return _load_matpower_file(path.resolve())


@functools.cache
def _load_named(case: str) -> Network:
    import pandapower.networks as pn
    from pandapower.converter.pypower.to_ppc import to_ppc

    logging.getLogger("pandapower").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = getattr(pn, NAMED_CASES[case])()
        ppc = to_ppc(net, init="flat")
    # ppc numbers buses 0..B-1 in pandapower's order; bus names hold the case file's numbers.
    numbers = [int(name) for name in net.bus.name]
    bus = ppc["bus"].real
    branch = ppc["branch"].real
    return _build(case, numbers, bus, branch)


def _load_matpower_file(path: Path) -> Network:
    if not path.is_file():
        raise CaseError(f"MATPOWER case file {path} does not exist")
    from matpowercaseframes import CaseFrames

    try:
        frames = CaseFrames(str(path))
        bus = frames.bus.to_numpy(dtype=float)
        branch = frames.branch.to_numpy(dtype=float)
    except Exception as exc:  # the parser raises many types; report them uniformly
        raise CaseError(f"cannot read MATPOWER case {path}: {exc}") from exc
    numbers = [int(n) for n in bus[:, _BUS_I]]
    index = {n: i for i, n in enumerate(numbers)}
    try:
        rows = branch.copy()
        rows[:, _F_BUS] = [index[int(f)] for f in branch[:, _F_BUS]]
        rows[:, _T_BUS] = [index[int(t)] for t in branch[:, _T_BUS]]
    except KeyError as exc:
        raise CaseError(f"MATPOWER case {path}: branch refers to unknown bus {exc}") from exc
    return _build(path.stem, numbers, bus, rows)


def _build(name: str, numbers: list[int], bus, branch) -> Network:  # noqa: ANN001 (numpy arrays)
    refs = [numbers[i] for i in range(len(numbers)) if int(bus[i, _BUS_TYPE]) == _REF]
    if len(refs) != 1:
        raise CaseError(f"case {name!r} must have exactly one reference bus, found {refs}")
    rows = []
    for row in branch:
        if branch.shape[1] > _BR_STATUS and row[_BR_STATUS] == 0:
            continue
        if row[_BR_X] == 0:
            raise CaseError(f"case {name!r}: a branch has zero reactance (DC model undefined)")
        rows.append((numbers[int(row[_F_BUS])], numbers[int(row[_T_BUS])], row[_BR_X], row[_TAP]))
    return Network(name, tuple(sorted(numbers)), refs[0], name_branches(rows))
