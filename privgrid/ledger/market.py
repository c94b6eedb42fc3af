"""Market blocks: one market session's cleared trades, line prices and settlement.

The MO builds one after convergence (``market_block``); every participant then checks its part
of the KKT conditions on it (:mod:`privgrid.ledger.pos`) and votes. The block stores **both
sides** of every pair as the parties reported them — the seller's power, price and charge and
the buyer's — because reciprocity (``P_nm + P_mn ≈ 0``), price agreement and ``c_mn = −c_nm``
are exactly what Proof of Solution checks; it must not be hidden by storing one side. The
settlement is computed here from the trades (:mod:`privgrid.ledger.settlement`), never passed
in, so a block cannot carry a settlement that does not follow from its trades.

Two ways in: :func:`market_block` from real numbers (kW, $/kW), stored as int64 at the
fixed-point scale 2^32 (values that crossed the wire are on that grid already, so the
conversion is exact), and :func:`market_block_of_records` from records already in fixed point —
what the MO holds from the final reports (:mod:`privgrid.ledger.cleared`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from privgrid.ledger.block import MARKET, Block, now_ms
from privgrid.ledger.encoding import to_fixed
from privgrid.ledger.errors import BlockError
from privgrid.ledger.settlement import settle

TRADE_INPUT = ("seller", "buyer", "power", "price", "seller_charge", "buyer_power", "buyer_price")
LINE_INPUT = ("id", "flow", "limit", "price_up", "price_down")


def _exact_keys(
    entry: Mapping[str, Any], required: Sequence[str], optional: set[str], where: str
) -> None:
    missing = [k for k in required if k not in entry]
    extra = set(entry) - set(required) - optional
    if missing or extra:
        raise BlockError(f"{where}: missing {missing}, unexpected {sorted(extra)}")


def _trade(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    _exact_keys(entry, TRADE_INPUT, {"buyer_charge"}, where)
    record = {k: entry[k] for k in ("seller", "buyer")}
    for key in TRADE_INPUT[2:]:
        record[key] = to_fixed(entry[key], f"{where}.{key}")
    charge = entry.get("buyer_charge")
    record["buyer_charge"] = (
        -record["seller_charge"] if charge is None else to_fixed(charge, f"{where}.buyer_charge")
    )
    return record


def _line(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    _exact_keys(entry, LINE_INPUT, set(), where)
    limit = entry["limit"]
    return {
        "id": entry["id"],
        "flow": to_fixed(entry["flow"], f"{where}.flow"),
        "limit": None if limit is None else to_fixed(limit, f"{where}.limit"),
        "price_up": to_fixed(entry["price_up"], f"{where}.price_up"),
        "price_down": to_fixed(entry["price_down"], f"{where}.price_down"),
    }


def market_block(
    height: int,
    prev_hash: bytes,
    run: str,
    rounds: int,
    trades: Sequence[Mapping[str, Any]],
    lines: Sequence[Mapping[str, Any]],
    timestamp: int | None = None,
) -> Block:
    """Build the block of one market session (settlement computed from ``trades``).

    ``trades``: one entry per pair, seller side first — ``{seller, buyer, power, price,
    seller_charge, buyer_power, buyer_price[, buyer_charge]}``: the seller's trade (≥ 0), price
    and congestion charge, and the buyer's own trade (≈ −power), price and charge (default
    ``−seller_charge``). ``lines``: ``{id, flow, limit | None, price_up, price_down}`` (the
    rows of the results schema). ``timestamp``: Unix ms, default now.
    """
    records = [_trade(t, f"trades[{i}]") for i, t in enumerate(trades)]
    line_records = [_line(ln, f"lines[{i}]") for i, ln in enumerate(lines)]
    return market_block_of_records(height, prev_hash, run, rounds, records, line_records, timestamp)


def market_block_of_records(
    height: int,
    prev_hash: bytes,
    run: str,
    rounds: int,
    trades: Sequence[Mapping[str, Any]],
    lines: Sequence[Mapping[str, Any]],
    timestamp: int | None = None,
) -> Block:
    """Build the block from records in the block's own form (settlement computed here).

    ``trades``: ``{seller, buyer, power, price, seller_charge, buyer_power, buyer_price,
    buyer_charge}``, ``lines``: ``{id, flow, limit | None, price_up, price_down}``, every real
    an int64 at scale 2^32. The block checks their shape on construction (:class:`BlockError`).
    """
    records = [dict(t) for t in trades]
    body = {
        "rounds": rounds,
        "trades": records,
        "lines": [dict(ln) for ln in lines],
        "settlement": settle(records),
    }
    stamp = now_ms() if timestamp is None else timestamp
    return Block(height, prev_hash, MARKET, run, stamp, body)


def trades_from_results(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Trade inputs from the results schema's trade rows (which name the seller's charge
    ``charge`` and leave the buyer's implicit, ``−charge``)."""
    return [
        {
            "seller": r["seller"],
            "buyer": r["buyer"],
            "power": r["power"],
            "price": r["price"],
            "seller_charge": r["charge"],
            "buyer_power": r["buyer_power"],
            "buyer_price": r["buyer_price"],
        }
        for r in rows
    ]
