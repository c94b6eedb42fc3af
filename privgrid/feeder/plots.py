"""The day's figures, drawn from day.json (so they can be redrawn from the file alone).

- ``prices.png``: the local price over the day (volume-weighted over household trades, and
  the range of the households' marginal values) against the retail and feed-in prices;
- ``energy.png``: energy traded locally, imported and exported per interval;
- ``loading.png``: each line's and the transformer's loading over the day (DC, % of limit);
- ``rounds.png``: rounds per interval, warm and cold;
- ``map.png``: the feeder on its coordinates, each branch coloured by its loading in the
  interval of peak congestion, each household by its net position then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from privgrid.feeder.feeder import Feeder


def _times(document: Mapping[str, Any]) -> list[datetime]:
    return [datetime.fromisoformat(r["start"]) for r in document["per_interval"]]


def write_day_plots(
    folder: Path, document: Mapping[str, Any], feeder: Feeder, line_names: Sequence[str]
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    rows = document["per_interval"]
    # Any: matplotlib plots datetimes (its date converter), but its stubs take numbers only.
    times: Any = _times(document)
    grid = document["parameters"]["grid_supply"]
    written = []

    def finish(fig: Any, ax: Any, name: str) -> None:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(folder / name)

    # Prices.
    fig, ax = plt.subplots(figsize=(8, 4))
    local = [r["local_price"] for r in rows]
    prices = [
        [h["price"] for h in r["households"].values() if h["price"] is not None] for r in rows
    ]
    lo = [min(p) if p else float("nan") for p in prices]
    hi = [max(p) if p else float("nan") for p in prices]
    ax.fill_between(times, lo, hi, step="post", alpha=0.25, label="households' marginal values")
    ax.step(
        times,
        [float("nan") if v is None else v for v in local],
        where="post",
        label="local trades (volume-weighted)",
    )
    ax.axhline(grid["retail_price"], color="tab:red", linestyle="--", label="retail")
    ax.axhline(grid["feed_in_price"], color="tab:green", linestyle="--", label="feed-in")
    ax.set_ylabel("price per kWh")
    ax.set_title(f"Prices over the day: {document['scenario']}")
    ax.legend(fontsize=8)
    finish(fig, ax, "prices.png")

    # Energy.
    fig, ax = plt.subplots(figsize=(8, 4))
    width = document["interval_minutes"] / (24 * 60) * 0.9
    local_kwh = [r["local_kwh"] for r in rows]
    imported = [r["import_kwh"] for r in rows]
    exported = [-r["export_kwh"] for r in rows]
    ax.bar(times, imported, width, align="edge", label="imported (RETAIL)", color="tab:red")
    ax.bar(
        times,
        local_kwh,
        width,
        bottom=imported,
        align="edge",
        label="traded locally",
        color="tab:blue",
    )
    ax.bar(times, exported, width, align="edge", label="exported (FEEDIN)", color="tab:green")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("kWh per interval (exports below zero)")
    ax.set_title("Energy traded locally vs with the grid")
    ax.legend(fontsize=8)
    finish(fig, ax, "energy.png")

    # Loading.
    fig, ax = plt.subplots(figsize=(8, 4))
    limits = {ln["id"]: ln for ln in document["lines"]}
    for name in line_names:
        series = [100 * abs(r["line_flows_kw"][name]) / limits[name]["limit_kw"] for r in rows]
        trafo = limits[name]["kind"] == "trafo"
        ax.step(
            times,
            series,
            where="post",
            linewidth=2.0 if trafo else 0.8,
            color="black" if trafo else None,
            alpha=1.0 if trafo else 0.6,
            label=f"transformer {name}" if trafo else None,
        )
    ax.axhline(100, color="tab:red", linestyle="--", linewidth=0.8, label="limit")
    ax.set_ylabel("loading, % of the limit (DC)")
    ax.set_title("Line and transformer loading over the day")
    ax.legend(fontsize=8)
    finish(fig, ax, "loading.png")

    # Rounds.
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.step(times, [r["rounds"] for r in rows], where="post", label="rounds (as cleared)")
    cold = [r["cold_rounds"] for r in rows]
    if any(c is not None for c in cold):
        ax.plot(
            times,
            [float("nan") if c is None else c for c in cold],
            "o",
            markersize=3,
            label="cold start",
        )
    ax.set_ylabel("rounds")
    ax.set_title("Rounds per interval (warm start from the previous interval)")
    ax.legend(fontsize=8)
    finish(fig, ax, "rounds.png")

    written.append(_map(folder / "map.png", document, feeder, line_names, plt))
    return written


def _map(
    path: Path, document: Mapping[str, Any], feeder: Feeder, line_names: Sequence[str], plt: Any
) -> Path:
    from matplotlib import colormaps
    from matplotlib.colors import Normalize, TwoSlopeNorm

    rows = document["per_interval"]
    peak = max(rows, key=lambda r: r["max_loading_pct"])
    limits = {ln["id"]: ln["limit_kw"] for ln in document["lines"]}
    xy = {b.number: (b.x, b.y) for b in feeder.buses}
    if any(x is None or y is None for x, y in xy.values()):  # no coordinates: a line layout
        xy = {b.number: (float(b.number), 0.0) for b in feeder.buses}
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = colormaps["viridis"]
    norm = Normalize(0, max(100.0, peak["max_loading_pct"]))
    for name, br in zip(line_names, feeder.branches, strict=True):
        loading = 100 * abs(peak["line_flows_kw"][name]) / limits[name]
        (x1, y1), (x2, y2) = xy[br.from_bus], xy[br.to_bus]
        ax.plot(
            [x1, x2],
            [y1, y2],
            color=cmap(norm(loading)),
            linewidth=1.5 + 3 * (loading > 99),
            linestyle="--" if br.kind == "trafo" else "-",
            zorder=1,
        )
    homes = [a for a in document["agents"] if a["kind"] == "household"]
    by_bus: dict[int, float] = {}
    for a in homes:
        by_bus[a["bus"]] = by_bus.get(a["bus"], 0.0) + peak["households"][a["id"]]["net_kw"]
    values = list(by_bus.values()) or [0.0]
    span = max(max(abs(v) for v in values), 1e-6)
    colour = TwoSlopeNorm(vmin=-span, vcenter=0.0, vmax=span)
    xs = [xy[b][0] for b in by_bus]
    ys = [xy[b][1] for b in by_bus]
    points = ax.scatter(
        xs,
        ys,
        c=list(by_bus.values()),
        cmap="coolwarm_r",
        norm=colour,
        s=60,
        edgecolors="black",
        zorder=2,
    )
    sx, sy = xy[feeder.slack]
    ax.scatter([sx], [sy], marker="s", s=90, color="black", zorder=3, label="external grid")
    fig.colorbar(points, ax=ax, label="households' net position at the bus, kW (+ export)")
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="branch loading, % of limit (DC)"
    )
    ax.set_title(
        f"{feeder.code} at {peak['start']} (peak loading {peak['max_loading_pct']:.0f} %)",
        fontsize=9,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
