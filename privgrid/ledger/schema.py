"""Shape checks for decoded block bodies: exact keys, exact types, no coercion.

Why separate from the builders: a block read from disk or received from the MO was not built
here, so its structure must be checked before any rule looks at its values. These functions
check shape only (keys, types, ranges of counters); what the values mean — roster membership,
settlement, signatures — is :mod:`privgrid.ledger.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from privgrid.ledger.encoding import HASH_BYTES, INT64_MAX, INT64_MIN
from privgrid.ledger.errors import BlockError

AGENT_ROLES = frozenset({"seller", "buyer", "prosumer"})
SERVICE_ROLES = frozenset({"lm", "mo"})
ROLES = AGENT_ROLES | SERVICE_ROLES

GENESIS_KEYS = frozenset({"scenario", "quorum", "participants"})
AGENT_KEYS = frozenset({"id", "role", "public_key", "bus", "pmin", "pmax"})
SERVICE_KEYS = frozenset({"id", "role", "public_key"})
MARKET_KEYS = frozenset({"rounds", "trades", "lines", "settlement"})
TRADE_KEYS = frozenset(
    {
        "seller",
        "buyer",
        "power",
        "price",
        "seller_charge",
        "buyer_power",
        "buyer_price",
        "buyer_charge",
    }
)
LINE_KEYS = frozenset({"id", "flow", "limit", "price_up", "price_down"})
SETTLEMENT_KEYS = frozenset({"trades", "agents", "congestion_rent"})
SETTLED_TRADE_KEYS = frozenset(
    {"seller", "buyer", "payment", "seller_receives", "buyer_pays", "congestion"}
)
SETTLED_AGENT_KEYS = frozenset({"id", "receives", "pays", "net"})
PUBLIC_KEY_BYTES = 32


def expect_map(value: Any, keys: frozenset[str], where: str) -> Mapping[str, Any]:
    """``value`` is a map with exactly ``keys``."""
    if not isinstance(value, dict):
        raise BlockError(f"{where}: expected a map, got {type(value).__name__}")
    missing, extra = keys - value.keys(), value.keys() - keys
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {sorted(missing)}")
        if extra:
            parts.append(f"unexpected {sorted(extra)}")
        raise BlockError(f"{where}: {'; '.join(parts)}")
    return value


def expect_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BlockError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def expect_int(value: Any, where: str, minimum: int = INT64_MIN) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BlockError(f"{where}: expected an integer, got {type(value).__name__}")
    if not minimum <= value <= INT64_MAX:
        raise BlockError(f"{where}: {value} is out of range")
    return value


def expect_str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise BlockError(f"{where}: expected a non-empty string")
    return value


def expect_bytes(value: Any, length: int, where: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise BlockError(f"{where}: expected {length} bytes")
    return value


def check_genesis_body(body: Any) -> None:
    """Shape of the registration block's body (roles, keys, agent ranges, quorum)."""
    expect_map(body, GENESIS_KEYS, "genesis")
    expect_str(body["scenario"], "genesis.scenario")
    participants = expect_list(body["participants"], "genesis.participants")
    seen_ids: set[str] = set()
    seen_keys: set[bytes] = set()
    roles: list[str] = []
    for i, entry in enumerate(participants):
        where = f"genesis.participants[{i}]"
        role = entry.get("role") if isinstance(entry, dict) else None
        if role not in ROLES:
            raise BlockError(f"{where}.role: {role!r} is not one of {sorted(ROLES)}")
        expect_map(entry, AGENT_KEYS if role in AGENT_ROLES else SERVICE_KEYS, where)
        pid = expect_str(entry["id"], f"{where}.id")
        key = expect_bytes(entry["public_key"], PUBLIC_KEY_BYTES, f"{where}.public_key")
        if pid in seen_ids:
            raise BlockError(f"{where}.id: participant {pid!r} is registered twice")
        if key in seen_keys:
            raise BlockError(f"{where}.public_key: {pid!r} reuses another participant's key")
        seen_ids.add(pid)
        seen_keys.add(key)
        roles.append(role)
        if role in AGENT_ROLES:
            expect_int(entry["bus"], f"{where}.bus", 0)
            pmin = expect_int(entry["pmin"], f"{where}.pmin")
            pmax = expect_int(entry["pmax"], f"{where}.pmax")
            if pmin > pmax:
                raise BlockError(f"{where}: registered range has pmin > pmax")
    for service in sorted(SERVICE_ROLES):
        if roles.count(service) != 1:
            raise BlockError(f"genesis.participants: need exactly one {service!r}")
    if not any(r in AGENT_ROLES for r in roles):
        raise BlockError("genesis.participants: no agents registered")
    quorum = body["quorum"]
    if quorum != "all":
        expect_int(quorum, "genesis.quorum", 1)
        if quorum > len(participants):
            raise BlockError(f"genesis.quorum: {quorum} exceeds {len(participants)} voters")


def _check_trade(entry: Any, where: str) -> None:
    expect_map(entry, TRADE_KEYS, where)
    seller = expect_str(entry["seller"], f"{where}.seller")
    buyer = expect_str(entry["buyer"], f"{where}.buyer")
    if seller == buyer:
        raise BlockError(f"{where}: {seller!r} trades with itself")
    for key in TRADE_KEYS - {"seller", "buyer"}:
        expect_int(entry[key], f"{where}.{key}")


def _check_line(entry: Any, where: str) -> None:
    expect_map(entry, LINE_KEYS, where)
    expect_str(entry["id"], f"{where}.id")
    for key in ("flow", "price_up", "price_down"):
        expect_int(entry[key], f"{where}.{key}")
    if entry["limit"] is not None:
        expect_int(entry["limit"], f"{where}.limit", 0)


def _check_settlement(body: Any) -> None:
    expect_map(body, SETTLEMENT_KEYS, "settlement")
    for i, entry in enumerate(expect_list(body["trades"], "settlement.trades")):
        where = f"settlement.trades[{i}]"
        expect_map(entry, SETTLED_TRADE_KEYS, where)
        expect_str(entry["seller"], f"{where}.seller")
        expect_str(entry["buyer"], f"{where}.buyer")
        for key in SETTLED_TRADE_KEYS - {"seller", "buyer"}:
            expect_int(entry[key], f"{where}.{key}")
    for i, entry in enumerate(expect_list(body["agents"], "settlement.agents")):
        where = f"settlement.agents[{i}]"
        expect_map(entry, SETTLED_AGENT_KEYS, where)
        expect_str(entry["id"], f"{where}.id")
        for key in SETTLED_AGENT_KEYS - {"id"}:
            expect_int(entry[key], f"{where}.{key}")
    expect_int(body["congestion_rent"], "settlement.congestion_rent")


def check_market_body(body: Any) -> None:
    """Shape of a market block's body: trades, lines and settlement."""
    expect_map(body, MARKET_KEYS, "market")
    expect_int(body["rounds"], "market.rounds", 0)
    pairs: set[frozenset[str]] = set()
    for i, entry in enumerate(expect_list(body["trades"], "market.trades")):
        _check_trade(entry, f"market.trades[{i}]")
        pair = frozenset((entry["seller"], entry["buyer"]))
        if pair in pairs:
            raise BlockError(f"market.trades[{i}]: pair {sorted(pair)} appears twice")
        pairs.add(pair)
    names: set[str] = set()
    for i, entry in enumerate(expect_list(body["lines"], "market.lines")):
        _check_line(entry, f"market.lines[{i}]")
        if entry["id"] in names:
            raise BlockError(f"market.lines[{i}]: line {entry['id']!r} appears twice")
        names.add(entry["id"])
    _check_settlement(body["settlement"])


def check_hash(value: Any, where: str) -> bytes:
    return expect_bytes(value, HASH_BYTES, where)
