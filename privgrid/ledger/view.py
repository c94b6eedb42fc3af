"""Human-facing views of stored blocks: JSON-ready dicts and ``rich`` tables for ``show``.

Why separate from the block types: the stored form is fixed point and raw bytes (canonical,
hashable); people read dollars, kW, hex hashes and base64 keys. Nothing here is ever hashed
or stored, so floats are fine.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from privgrid.ledger.block import GENESIS, Block
from privgrid.ledger.encoding import from_fixed
from privgrid.ledger.settlement import imbalance
from privgrid.ledger.votes import Vote

MAX_ROWS = 25
_TRADE_REALS = ("power", "price", "seller_charge", "buyer_power", "buyer_price", "buyer_charge")
_SETTLED_REALS = ("payment", "seller_receives", "buyer_pays", "congestion")


def _reals(entry: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    out = dict(entry)
    for key in keys:
        out[key] = None if entry[key] is None else from_fixed(entry[key])
    return out


def iso_time(timestamp_ms: int) -> str:
    stamp = dt.datetime.fromtimestamp(timestamp_ms / 1000, tz=dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe_vote(vote: Vote) -> dict[str, Any]:
    return {
        "voter": vote.voter,
        "accept": vote.accept,
        "failures": [f.as_dict() for f in vote.failures],
        "signature": vote.signature.hex(),
    }


def describe(block: Block, votes: Sequence[Vote] = ()) -> dict[str, Any]:
    """A block (and its votes) in plain units: floats, hex hashes, base64 keys."""
    out: dict[str, Any] = {
        "height": block.height,
        "kind": block.kind,
        "hash": block.hash_hex,
        "prev_hash": block.prev_hash.hex(),
        "run": block.run,
        "timestamp": iso_time(block.timestamp),
    }
    body = block.body
    if block.kind == GENESIS:
        out["scenario"] = body["scenario"]
        out["quorum"] = body["quorum"]
        out["participants"] = [
            {
                **_reals(p, [k for k in ("pmin", "pmax") if k in p]),
                "public_key": base64.b64encode(p["public_key"]).decode(),
            }
            for p in body["participants"]
        ]
        return out
    settlement = body["settlement"]
    out["rounds"] = body["rounds"]
    out["trades"] = [_reals(t, _TRADE_REALS) for t in body["trades"]]
    out["lines"] = [_reals(ln, ("flow", "limit", "price_up", "price_down")) for ln in body["lines"]]
    out["settlement"] = {
        "trades": [_reals(t, _SETTLED_REALS) for t in settlement["trades"]],
        "agents": [_reals(a, ("receives", "pays", "net")) for a in settlement["agents"]],
        "congestion_rent": from_fixed(settlement["congestion_rent"]),
        "imbalance": imbalance(settlement),
    }
    out["votes"] = [describe_vote(v) for v in votes]
    return out


def _num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1
) -> Table:
    """A table whose first ``text_columns`` columns are names, the rest numbers."""
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < text_columns else "right")
    for row in rows[:MAX_ROWS]:
        table.add_row(*row)
    if len(rows) > MAX_ROWS:
        table.caption = f"{len(rows) - MAX_ROWS} more rows in --json"
    return table


def print_block(console: Console, info: Mapping[str, Any]) -> None:
    """One block as a header line and tables (participants, or trades/lines/settlement)."""
    head = (
        f"[bold]block {info['height']}[/bold] {info['kind']}  hash {info['hash'][:16]}…  "
        f"run {info['run'] or '–'}  {info['timestamp']}"
    )
    if info["kind"] == GENESIS:
        console.print(f"{head}  scenario {info['scenario']}  quorum {info['quorum']}")
        rows = [
            [
                p["id"],
                p["role"],
                str(p.get("bus", "–")),
                _num(p.get("pmin"), 3),
                _num(p.get("pmax"), 3),
                p["public_key"][:12] + "…",
            ]
            for p in info["participants"]
        ]
        columns = ["id", "role", "bus", "pmin kW", "pmax kW", "key"]
        console.print(_table("Registered participants", columns, rows, text_columns=2))
        return
    voters = ", ".join(v["voter"] for v in info["votes"]) or "none"
    console.print(f"{head}  rounds {info['rounds']}  votes: {voters}")
    settled = info["settlement"]["trades"]
    trades = [
        [
            t["seller"],
            t["buyer"],
            _num(t["power"]),
            _num(t["price"]),
            _num(t["seller_charge"]),
            _num(s["payment"], 6),
            _num(s["congestion"], 6),
        ]
        for t, s in zip(info["trades"], settled, strict=True)
    ]
    columns = ["seller", "buyer", "power kW", "price $/kW", "charge $/kW", "payment $", "to LM $"]
    console.print(_table("Trades (seller side)", columns, trades, text_columns=2))
    limited = [ln for ln in info["lines"] if ln["limit"] is not None]
    if limited:
        rows = [
            [
                ln["id"],
                _num(ln["flow"]),
                _num(ln["limit"], 2),
                _num(ln["price_up"]),
                _num(ln["price_down"]),
            ]
            for ln in limited
        ]
        console.print(
            _table("Limited lines", ["line", "flow kW", "limit kW", "η⁺ $/kW", "η⁻ $/kW"], rows)
        )
    settlement = info["settlement"]
    rows = [
        [a["id"], _num(a["receives"], 6), _num(a["pays"], 6), _num(a["net"], 6)]
        for a in settlement["agents"]
    ]
    console.print(_table("Settlement", ["agent", "receives $", "pays $", "net $"], rows))
    console.print(
        f"congestion rent to the LM {settlement['congestion_rent']:.6f} $; "
        f"imbalance {settlement['imbalance']:.1e} $"
    )
