"""Load network cases: MATPOWER's case14/30/118 from shipped data, or a MATPOWER ``.m`` file.

Both paths end in the same :class:`~privgrid.grid.network.Network` with the case file's own bus
numbers and reference (slack) bus. Out-of-service branches are dropped.

The named cases are converted from pandapower once, by ``scripts/make_case_data.py``, and
shipped as small JSON files in ``privgrid/grid/data/``: every role process loads the network,
and importing pandapower (with pandas, scipy, networkx, matplotlib) cost each agent process
about 150 MB of memory and seconds of CPU at start-up. :func:`convert_named` is the pandapower
path; ``tests/test_grid_cases.py`` regenerates the data with it and asserts equality, so the
shipped files cannot drift from the source. Heavy libraries are imported only inside the
functions that need them (the converter, the ``.m`` file reader).
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

from privgrid.grid.network import Network, name_branches

#: Scenario names → pandapower.networks functions (MATPOWER case14, case30 and case118).
NAMED_CASES = {"ieee14": "case14", "ieee30": "case30", "ieee118": "case118"}

#: Version of the shipped JSON layout; bump it when the layout changes.
DATA_FORMAT = 1

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
    if case.startswith("simbench:"):
        raise CaseError(
            f"case {case!r}: a SimBench grid needs a day scenario ([day] section, "
            "docs/feeder.md), whose run folder holds the converted grid.m"
        )
    path = Path(case)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.suffix != ".m":
        raise CaseError(
            f"unknown case {case!r}: use one of {sorted(NAMED_CASES)} or a MATPOWER .m file"
        )
    return _load_matpower_file(path.resolve())


def data_file(case: str) -> Path:
    """Where the shipped data of named case ``case`` lives (inside the installed package)."""
    return Path(str(resources.files("privgrid.grid") / "data" / f"{case}.json"))


@functools.cache
def _load_named(case: str) -> Network:
    path = data_file(case)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CaseError(
            f"cannot read the data of case {case!r} ({path}): {exc}; "
            "regenerate it with scripts/make_case_data.py"
        ) from exc
    return network_from_data(data, str(path))


def network_to_data(network: Network, source: str) -> dict[str, Any]:
    """The JSON-ready form of ``network``: what :func:`network_from_data` reads back exactly.

    Floats are written by ``json`` as their shortest round-tripping repr, so reactances and
    taps come back bit for bit.
    """
    return {
        "format": DATA_FORMAT,
        "name": network.name,
        "source": source,
        "slack": network.slack,
        "buses": list(network.buses),
        "branch_columns": ["name", "from_bus", "to_bus", "x", "tap"],
        "branches": [[b.name, b.from_bus, b.to_bus, b.x, b.tap] for b in network.branches],
    }


def network_from_data(data: dict[str, Any], where: str) -> Network:
    """Build a :class:`Network` from :func:`network_to_data`'s form; ``where`` names the file.

    Branch names are re-derived by :func:`name_branches` (the one naming rule) and must match
    the stored ones, so a hand-edited file cannot smuggle in names the loader would not give.
    """
    try:
        if data["format"] != DATA_FORMAT:
            raise CaseError(f"{where}: data format {data['format']!r}, expected {DATA_FORMAT}")
        rows = [(int(f), int(t), float(x), float(tap)) for _, f, t, x, tap in data["branches"]]
        stored = [row[0] for row in data["branches"]]
        buses = tuple(int(b) for b in data["buses"])
        name, slack = str(data["name"]), int(data["slack"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CaseError):
            raise
        raise CaseError(f"{where}: malformed network data ({exc!r})") from exc
    branches = name_branches(rows)
    if [b.name for b in branches] != stored:
        raise CaseError(f"{where}: branch names or order do not follow the naming rule")
    if list(buses) != sorted(set(buses)):
        raise CaseError(f"{where}: buses must be unique and ascending")
    try:
        return Network(name, buses, slack, branches)
    except ValueError as exc:
        raise CaseError(f"{where}: {exc}") from exc


def convert_named(case: str) -> Network:
    """Convert named case ``case`` from pandapower (MATPOWER's data): the generator's source.

    Imports pandapower, so it is for ``scripts/make_case_data.py`` and the drift test only.
    """
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
    stat = path.stat()
    return _parse_matpower_file(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _parse_matpower_file(path: Path, mtime_ns: int, size: int) -> Network:
    """Parse a case file once per version of it: a day's markets share one ``grid.m``, which
    every interval's scenario loads (the key changes when the file does)."""
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
        rows.append(
            (numbers[int(row[_F_BUS])], numbers[int(row[_T_BUS])], float(row[_BR_X]), row[_TAP])
        )
    return Network(name, tuple(sorted(numbers)), refs[0], name_branches(rows))
