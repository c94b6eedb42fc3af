"""SimBench grids and their 2016 profiles, converted once and cached on disk.

``simbench.get_simbench_net`` takes seconds (2–13 s here) and imports pandapower, so each
grid is converted once into three files under the cache folder (``$PRIVGRID_CACHE``, else
``$XDG_CACHE_HOME/privgrid``, else ``~/.cache/privgrid``), keyed by the simbench version and
:data:`CACHE_FORMAT`:

- ``feeder.json``: the :class:`~privgrid.feeder.feeder.Feeder` (buses, branches, elements);
- ``profiles.npz``: the year's absolute load P/Q and sgen P profiles in kW (float64);
- ``net.json``: the pandapower net without its profiles, for the AC check
  (:mod:`privgrid.feeder.acflow`).

Each file is written under a temporary name and renamed, so a reader never sees half a file.

Topology: buses joined by a closed bus–bus switch are one bus; a line or transformer that is
out of service or cut by an open switch is left out; only what the external grid can reach
is kept (an element at an unreachable bus is an error). Buses get numbers 1..n in pandapower's
index order. Reactances are on a 1 MVA base: lines ``x_ohm_per_km · length / parallel /
(vn_kv²)``, transformers ``√(vk² − vkr²)/100 / sn_mva``. Ratings: lines ``max_i_ka · vn_kv ·
√3 · parallel``, transformers ``sn_mva`` (× 1000: kVA).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privgrid.feeder.feeder import (
    STEPS,
    Branch,
    Bus,
    Element,
    Feeder,
    YearProfiles,
    line_rating_kva,
)

#: Bump when the cached files' layout or the conversion changes.
CACHE_FORMAT = 1
PREFIX = "simbench:"


class SimbenchError(ValueError):
    """A SimBench grid cannot be had; the message says which and why."""


@dataclass(frozen=True)
class Source:
    """A converted grid: static data, the year's profiles, and where its pandapower net is."""

    feeder: Feeder
    year: YearProfiles
    net_path: Path


def cache_root() -> Path:
    if os.environ.get("PRIVGRID_CACHE"):
        return Path(os.environ["PRIVGRID_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "privgrid"


def _simbench():  # noqa: ANN202 (a module)
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import simbench
        except ImportError as exc:
            raise SimbenchError(
                "the 'simbench' package is not installed; install privgrid's data extra: "
                "pip install 'privgrid[data]'"
            ) from exc
    return simbench


@functools.cache
def valid_codes() -> tuple[str, ...]:
    """Every SimBench code of a single LV or MV grid (the ones a day can run on)."""
    codes = _simbench().collect_all_simbench_codes()
    return tuple(c for c in codes if c.split("-")[1] in ("LV", "MV"))


def check_code(code: str) -> None:
    """Raise :class:`SimbenchError` listing the valid codes unless ``code`` is one."""
    codes = valid_codes()
    if code not in codes:
        import difflib

        near = difflib.get_close_matches(code, codes, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise SimbenchError(
            f"unknown SimBench code {code!r}{hint}; valid LV and MV codes: " + ", ".join(codes)
        )


@functools.cache
def load_source(code: str) -> Source:
    """The converted grid ``code``, from the cache or converted now (and cached)."""
    check_code(code)
    simbench = _simbench()
    folder = cache_root() / "simbench" / f"{simbench.__version__}-v{CACHE_FORMAT}" / code
    feeder_path, profiles_path, net_path = (
        folder / "feeder.json",
        folder / "profiles.npz",
        folder / "net.json",
    )
    if not (feeder_path.exists() and profiles_path.exists() and net_path.exists()):
        _convert_to(code, folder)
    feeder = Feeder.from_dict(json.loads(feeder_path.read_text(encoding="utf-8")))
    with np.load(profiles_path) as data:
        year = YearProfiles(data["load_kw"], data["load_kvar"], data["sgen_kw"])
    return Source(feeder, year, net_path)


def _convert_to(code: str, folder: Path) -> None:
    simbench = _simbench()
    import pandapower as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = simbench.get_simbench_net(code)
        values = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    feeder = convert(net, code)
    loads = net.load.index[net.load.in_service]
    sgens = net.sgen.index[net.sgen.in_service]
    year = {
        "load_kw": 1000.0 * values[("load", "p_mw")][loads].to_numpy(dtype=np.float64),
        "load_kvar": 1000.0 * values[("load", "q_mvar")][loads].to_numpy(dtype=np.float64),
        "sgen_kw": 1000.0 * values[("sgen", "p_mw")][sgens].to_numpy(dtype=np.float64),
    }
    if year["load_kw"].shape[0] != STEPS:
        raise SimbenchError(f"{code}: expected {STEPS} profile rows, got {year['load_kw'].shape}")
    net.profiles = {}
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "net.json", pp.to_json(net).encode())
    _write(folder / "feeder.json", json.dumps(feeder.to_dict()).encode())
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as handle:
        np.savez_compressed(handle, **year)
    os.replace(handle.name, folder / "profiles.npz")


def _write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _coordinates(geo: Any) -> tuple[float | None, float | None]:
    if not isinstance(geo, str) or not geo:
        return None, None
    try:
        x, y = json.loads(geo)["coordinates"][:2]
        return float(x), float(y)
    except (ValueError, KeyError, TypeError):
        return None, None


def convert(net: Any, code: str) -> Feeder:
    """The DC feeder of a pandapower net (see the module docstring for the rules)."""
    buses = [int(b) for b in net.bus.index[net.bus.in_service]]
    parent = {b: b for b in buses}

    def find(b: int) -> int:
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        return b

    switches = net.switch
    for _, sw in switches[(switches.et == "b") & switches.closed].iterrows():
        a, b = find(int(sw.bus)), find(int(sw.element))
        parent[max(a, b)] = min(a, b)
    open_lines = set(switches[(switches.et == "l") & ~switches.closed].element.astype(int))
    open_trafos = set(switches[(switches.et == "t") & ~switches.closed].element.astype(int))

    edges: list[tuple[int, int, float, float, float, str, str, int]] = []
    for idx, ln in net.line[net.line.in_service].iterrows():
        if int(idx) in open_lines:
            continue
        vn = float(net.bus.vn_kv[ln.from_bus])
        parallel = int(ln.parallel)
        z_base = vn * vn  # ohm on a 1 MVA base
        x = float(ln.x_ohm_per_km) * float(ln.length_km) / parallel / z_base
        r = float(ln.r_ohm_per_km) * float(ln.length_km) / parallel / z_base
        rating = line_rating_kva(float(ln.max_i_ka) * parallel, vn)
        edges.append(
            (int(ln.from_bus), int(ln.to_bus), x, r, rating, "line", str(ln["name"]), int(idx))
        )
    for idx, tr in net.trafo[net.trafo.in_service].iterrows():
        if int(idx) in open_trafos:
            continue
        sn = float(tr.sn_mva) * int(tr.parallel)
        z, r = float(tr.vk_percent) / 100 / sn, float(tr.vkr_percent) / 100 / sn
        x = math.sqrt(max(z * z - r * r, 0.0)) or z
        edges.append(
            (int(tr.hv_bus), int(tr.lv_bus), x, r, 1000.0 * sn, "trafo", str(tr["name"]), int(idx))
        )
    ext = net.ext_grid[net.ext_grid.in_service]
    if len(ext) != 1:
        raise SimbenchError(f"{code}: expected one external grid, found {len(ext)}")
    root = find(int(ext.bus.iloc[0]))
    reach = {root}
    frontier = [root]
    adjacency: dict[int, list[int]] = {}
    for f, t, *_ in edges:
        adjacency.setdefault(find(f), []).append(find(t))
        adjacency.setdefault(find(t), []).append(find(f))
    while frontier:
        node = frontier.pop()
        for other in adjacency.get(node, []):
            if other not in reach:
                reach.add(other)
                frontier.append(other)
    kept = sorted(reach)
    number = {b: i + 1 for i, b in enumerate(kept)}

    def bus_number(pp_bus: int, what: str) -> int:
        rep = find(pp_bus)
        if rep not in number:
            raise SimbenchError(f"{code}: {what} sits at bus {pp_bus}, unreachable from the grid")
        return number[rep]

    bus_rows = []
    for b in kept:
        bx, by = _coordinates(net.bus.at[b, "geo"] if "geo" in net.bus.columns else None)
        bus_rows.append(
            Bus(number[b], str(net.bus.at[b, "name"]), float(net.bus.at[b, "vn_kv"]), bx, by, b)
        )
    branches = tuple(
        Branch(number[find(f)], number[find(t)], x, r, rating, kind, name, idx)
        for f, t, x, r, rating, kind, name, idx in edges
        if find(f) in number and find(t) in number and find(f) != find(t)
    )

    def elements(table: Any, what: str) -> tuple[Element, ...]:
        rows = []
        for _, e in table[table.in_service].iterrows():
            label = str(e["name"])
            power = float(e.get("sn_mva", 0.0) or 0.0) * 1000.0
            if what == "sgen":
                power = float(e.p_mw) * 1000.0
            energy = float(e.get("max_e_mwh", 0.0) or 0.0) * 1000.0 if what == "storage" else 0.0
            profile = e.get("profile")
            kind = e.get("type")
            rows.append(
                Element(
                    label,
                    bus_number(int(e.bus), f"{what} {label!r}"),
                    profile if isinstance(profile, str) else "",
                    kind if isinstance(kind, str) else "",
                    abs(power) if what != "load" else 0.0,
                    energy,
                )
            )
        return tuple(rows)

    return Feeder(
        code,
        tuple(bus_rows),
        number[root],
        branches,
        elements(net.load, "load"),
        elements(net.sgen, "sgen"),
        elements(net.storage, "storage"),
    )
