"""Human-readable summary tables of a results dict (``rich``), printed at the end of a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from privgrid.attack.summary import detection_summary

#: Beyond this many rows, tables show the largest entries and say how many were left out.
MAX_ROWS = 25


def _num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _trades_table(results: Mapping[str, Any]) -> Table:
    rows = sorted(results["trades"], key=lambda r: -abs(r["power"] or 0.0))
    table = Table(title="Trades (seller side; the buyer holds −power)", title_justify="left")
    for col in ("seller", "buyer", "power kW", "price $/kW", "charge $/kW"):
        table.add_column(col, justify="right" if " " in col else "left")
    for r in rows[:MAX_ROWS]:
        table.add_row(
            r["seller"], r["buyer"], _num(r["power"]), _num(r["price"]), _num(r["charge"])
        )
    if len(rows) > MAX_ROWS:
        table.caption = f"{len(rows) - MAX_ROWS} smaller trades in the JSON results"
    return table


def _agents_table(results: Mapping[str, Any]) -> Table:
    table = Table(title="Agents", title_justify="left")
    has_theta = any("theta" in a for a in results["agents"])
    has_opt = any("optimal_total" in a for a in results["agents"])
    cols = ["id", "role", "bus", "total kW"]
    cols += ["θ $/kW"] if has_theta else []
    cols += ["optimum kW"] if has_opt else []
    for col in cols:
        table.add_column(col, justify="right" if col not in ("id", "role") else "left")
    for a in results["agents"][:MAX_ROWS]:
        row = [a["id"], a["role"], str(a["bus"]), _num(a["total"])]
        row += [_num(a.get("theta"))] if has_theta else []
        row += [_num(a.get("optimal_total"))] if has_opt else []
        table.add_row(*row)
    if len(results["agents"]) > MAX_ROWS:
        table.caption = f"{len(results['agents']) - MAX_ROWS} more agents in the JSON results"
    return table


#: Lines shown besides the limited ones: the table is about congestion, the rest is in the JSON.
LINE_ROWS = 5


def _lines_table(results: Mapping[str, Any]) -> Table:
    """Every limited line, then the unlimited ones with the largest flows, up to LINE_ROWS rows;
    the caption says how many were left out and how large their flows get (they have no limit,
    so nothing about them is binding)."""
    limited = [ln for ln in results["lines"] if ln["limit"] is not None]
    others = sorted(
        (ln for ln in results["lines"] if ln["limit"] is None),
        key=lambda ln: -abs(ln["flow"] or 0.0),
    )
    keep = max(0, LINE_ROWS - len(limited))
    shown, hidden = limited + others[:keep], others[keep:]
    table = Table(title="Line flows (limited lines first)", title_justify="left")
    for col in ("line", "flow kW", "limit kW", "η⁺ $/kW", "η⁻ $/kW"):
        table.add_column(col, justify="left" if col == "line" else "right")
    for ln in shown:
        table.add_row(
            ln["id"],
            _num(ln["flow"]),
            _num(ln["limit"], 2) if ln["limit"] else "–",
            _num(ln["price_up"]),
            _num(ln["price_down"]),
        )
    if hidden:
        largest = max(abs(ln["flow"] or 0.0) for ln in hidden)
        table.caption = (
            f"{len(hidden)} more lines, none of them limited (|flow| ≤ {largest:.4f} kW), "
            "in the JSON results"
        )
    return table


#: How each timing is measured: wall-clock time of one process, or a sum over participants
#: (those can exceed the run's wall time: nine processes waiting one second is nine seconds).
TIMING_LABELS = {
    "negotiation_s": ("negotiation", "wall"),
    "per_round_s": ("per round", "wall"),
    "finish_s": ("final reports", "wall"),
    "central_s": ("centralised QP", "wall, evaluator"),
    "kkt_s": ("KKT checks", "wall"),
    "total_s": ("total", "wall"),
    "crypto_s": ("crypto", "sum"),
    "compute_s": ("maths", "sum"),
    "wait_s": ("waiting", "sum"),
}

#: The status row of the summary (``status`` in the results).
STATUS_TEXT = {
    "converged": "converged",
    "not_converged": "NOT CONVERGED",
    "failed": "FAILED",
    "interrupted": "INTERRUPTED",
}


def _seconds(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f} s"


def _timing_rows(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Wall times first, then the sums over participants, each saying which it is."""
    timings = results.get("timings") or {}
    n = len(results.get("participants") or {})
    walls, sums = [], []
    for key, seconds in timings.items():
        name, kind = TIMING_LABELS.get(key, (key.removesuffix("_s"), "wall"))
        if kind == "sum":
            who = f"{n} participant" + ("" if n == 1 else "s")
            sums.append((f"time {name} (sum over {who})", _seconds(seconds)))
        else:
            walls.append((f"time {name} ({kind})", _seconds(seconds)))
    return walls + sums


def _kkt_text(kkt: Mapping[str, Any] | None) -> str:
    if not kkt or not kkt.get("checked"):
        return "not checked"
    if kkt["passed"]:
        return "passed"
    return f"FAILED ({len(kkt['failures'])} conditions)"


def _summary_table(results: Mapping[str, Any]) -> Table:
    title = f"Summary: {results.get('scenario', '?')} ({results.get('mode', '?')})"
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")
    status = results.get("status") or ("converged" if results.get("converged") else "not_converged")
    rows = [
        ("status", STATUS_TEXT.get(status, str(status))),
        ("converged", "yes" if results.get("converged") else "NO"),
        ("rounds", "–" if results.get("rounds") is None else str(results["rounds"])),
        ("social welfare $", _num(results.get("social_welfare"), 6)),
        ("centralised optimum $", _num(results.get("optimal_social_welfare"), 6)),
    ]
    if results.get("welfare_gap") is not None:
        rows.append(("welfare gap (relative)", f"{results['welfare_gap']:.2e}"))
    failed = status in ("failed", "interrupted")
    kkt = "not judged (the run did not end)" if failed else _kkt_text(results.get("kkt"))
    rows.append(("Proof of Solution (KKT)", kkt))
    rows += _timing_rows(results)
    for label, value in rows:
        table.add_row(label, value)
    return table


def print_summary(results: Mapping[str, Any], console: Console | None = None) -> None:
    """The tables of a results dict. A failed or interrupted run shows only its summary: its
    trades and prices are an unjudged last state (they are in the JSON results)."""
    console = console or Console()
    if results.get("status") not in ("failed", "interrupted"):
        console.print(_trades_table(results))
        console.print(_agents_table(results))
        console.print(_lines_table(results))
    console.print(_summary_table(results))
    if results.get("status") in ("failed", "interrupted"):
        return  # the KKT checks of a state nobody agreed on are noise; the reason comes next
    for failure in (results.get("kkt") or {}).get("failures", [])[:10]:
        console.print(
            f"[red]KKT {failure['condition']} failed at {failure['subject']}: "
            f"{_fmt(failure.get('value'), '.3g')} > {_fmt(failure.get('tolerance'), '.3g')}[/red]"
        )


def _fmt(x: float | None, spec: str = ".2e") -> str:
    return "–" if x is None else format(x, spec)


def print_attack_summary(report: Mapping[str, Any], console: Console | None = None) -> None:
    """What the colluders learnt about the target, and what the attack cost."""
    console = console or Console()
    table = Table(
        title=f"Collusion against {report['target']} by {', '.join(report['colluders'])}"
        f" ({report['strategy']}, {report['shares']} shares)",
        title_justify="left",
    )
    for col in ("", "truth", "estimate", "relative error"):
        table.add_column(col, justify="right" if col else "left")
    est, err, truth = report["estimates"], report["errors"], report["truth"]
    rows = [
        ("Pmax", "pmax", "pmax"),
        ("Pmin", "pmin", "pmin"),
        ("a (active)", "a", "a"),
        ("b (active)", "b", "b"),
        ("a (passive)", "passive_a", "a"),
        ("b (passive)", "passive_b", "b"),
    ]
    for label, key, true_key in rows:
        table.add_row(label, _fmt(truth[true_key], ".6g"), _fmt(est[key], ".10g"), _fmt(err[key]))
    table.caption = detection_summary(report["detection"])
    console.print(table)
    outcome = report.get("outcome")
    if outcome:
        honest = report["honest"]
        console.print(
            f"rounds honest → attacked: {honest['rounds']} → {report['attacked']['rounds']}; "
            f"welfare change {_fmt(outcome['welfare_change'], '+.2e')}; largest trade change "
            f"{_fmt(outcome['max_trade_change'], '.3g')} kW, price change "
            f"{_fmt(outcome['max_price_change'], '.3g')}"
        )
