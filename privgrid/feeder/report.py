"""What ``privgrid solve`` prints for a day: one line per interval, a summary table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "–" if value is None else format(value, fmt)


def interval_line(row: Mapping[str, Any]) -> str:
    cold = f" (cold {row['cold_rounds']})" if row["warm"] and row["cold_rounds"] else ""
    state = "ok" if row["converged"] and row["ledger"]["committed"] else "FAILED"
    return (
        f"interval {row['index']:04d} {row['start']}: {state}, {row['rounds']} rounds{cold}, "
        f"gap {_num(row['welfare_gap'], '.1e')}, local {row['local_kwh']:.2f} kWh, "
        f"import {row['import_kwh']:.2f} kWh, export {row['export_kwh']:.2f} kWh, "
        f"peak loading {row['max_loading_pct']:.0f} %"
    )


def print_day_summary(document: Mapping[str, Any], console: Console | None = None) -> None:
    s = document["summary"]
    table = Table(title=f"Day {document['scenario']} ({document['case']})", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in (
        ("intervals (converged / blocks)", f"{s['intervals']} ({s['converged']} / {s['blocks']})"),
        ("largest welfare gap", _num(s["max_welfare_gap"], ".2e")),
        ("largest overload, kW", _num(s["max_overload_kw"], ".2e")),
        (
            "median rounds warm / cold",
            f"{_num(s['median_rounds_warm'])} / {_num(s['median_rounds_cold'])}",
        ),
        ("traded locally, kWh", _num(s["local_kwh"], ".2f")),
        ("imported / exported, kWh", f"{s['import_kwh']:.2f} / {s['export_kwh']:.2f}"),
        ("congestion rent (money)", _num(s["congestion_rent"], ".4f")),
        ("peak loading (DC), %", _num(s["peak_loading_pct"], ".1f")),
        ("AC: largest |P_AC − F_DC|, kW", _num(s["ac_max_flow_error_kw"], ".3f")),
        (
            "AC: peak loading, %; lowest voltage, p.u.",
            f"{_num(s['ac_max_loading_pct'], '.1f')}; {_num(s['ac_vm_min_pu'], '.4f')}",
        ),
        ("time, s", _num(s["time_s"], ".1f")),
    ):
        table.add_row(label, value)
    (console or Console()).print(table)


def day_exit_status(document: Mapping[str, Any]) -> int:
    """0: every interval converged, passed its checks and has its block; else 1."""
    s = document["summary"]
    return 0 if s["converged"] == s["intervals"] == s["blocks"] else 1
