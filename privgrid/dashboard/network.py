"""The grid as the page draws it: buses with positions, lines between them, agents at buses.

Positions: a SimBench feeder's own bus coordinates (``feeder.json``, longitude and latitude);
an IEEE case has none, so it gets a Kamada–Kawai layout (networkx), which is deterministic
(it starts from a circle and minimises a fixed energy): the same case is drawn the same way
every time. Both are scaled into the unit square, north up, aspect kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from privgrid.grid.cases import load_network
from privgrid.grid.network import Network

Point = tuple[float, float]


def layout(network: Network) -> dict[int, Point]:
    """Kamada–Kawai positions of the buses (networkx; deterministic)."""
    import networkx as nx

    graph: nx.Graph[int] = nx.Graph()
    graph.add_nodes_from(network.buses)
    graph.add_edges_from((br.from_bus, br.to_bus) for br in network.branches)
    if graph.number_of_nodes() == 1:
        return {network.buses[0]: (0.5, 0.5)}
    positions = nx.kamada_kawai_layout(graph)
    return {int(bus): (float(x), float(y)) for bus, (x, y) in positions.items()}


def normalise(points: Mapping[int, Point], margin: float = 0.04) -> dict[int, Point]:
    """Scale into [margin, 1 - margin]², aspect kept, y pointing down (screen coordinates)."""
    xs = [p[0] for p in points.values()]
    ys = [p[1] for p in points.values()]
    span = max(max(xs) - min(xs), max(ys) - min(ys)) or 1.0
    scale = (1 - 2 * margin) / span
    x0 = min(xs) - ((1 - 2 * margin) / scale - (max(xs) - min(xs))) / 2
    y1 = max(ys) + ((1 - 2 * margin) / scale - (max(ys) - min(ys))) / 2
    return {
        bus: (margin + (x - x0) * scale, margin + (y1 - y) * scale)
        for bus, (x, y) in points.items()
    }


def feeder_coordinates(feeder: Mapping[str, Any]) -> dict[int, Point] | None:
    """Bus number → (longitude, latitude) of a feeder.json, or None if any bus lacks one."""
    points = {}
    for bus in feeder.get("buses", []):
        if bus.get("x") is None or bus.get("y") is None:
            return None
        points[int(bus["number"])] = (float(bus["x"]), float(bus["y"]))
    return points or None


def network_view(
    network: Network,
    agents: Sequence[Mapping[str, Any]] = (),
    coordinates: Mapping[int, Point] | None = None,
    line_limits: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The page's drawing: buses (id, x, y, slack), lines (id, from, to, limit), agents."""
    raw = coordinates if coordinates is not None else layout(network)
    if set(raw) != set(network.buses):
        raw = layout(network)
    positions = normalise(raw)
    limits = line_limits or {}
    return {
        "name": network.name,
        "source": "coordinates" if coordinates is not None else "layout",
        "buses": [
            {"id": b, "x": positions[b][0], "y": positions[b][1], "slack": b == network.slack}
            for b in network.buses
        ],
        "lines": [
            {"id": br.name, "from": br.from_bus, "to": br.to_bus, "limit": limits.get(br.name)}
            for br in network.branches
        ],
        "agents": [{"id": a["id"], "bus": a.get("bus")} for a in agents],
    }


def run_network(public: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """The drawing of a single market's network (scenario.toml's public part)."""
    network = load_network(str(public["case"]), base)
    return network_view(network, public.get("agents", []), None, public.get("line_limits"))


def day_network(folder: Path) -> dict[str, Any] | None:
    """The drawing of a day's feeder (grid.m and feeder.json), None until both are there."""
    case, feeder_file = folder / "grid.m", folder / "feeder.json"
    if not case.is_file() or not feeder_file.is_file():
        return None
    try:
        feeder = json.loads(feeder_file.read_text(encoding="utf-8"))
    except ValueError:
        return None
    network = load_network(str(case))
    return network_view(network, (), feeder_coordinates(feeder))
