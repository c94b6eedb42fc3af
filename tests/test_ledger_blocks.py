"""Blocks: genesis, market blocks, canonical bytes and hashes, settlement (incl. the paper case)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privgrid.crypto.identity import Identity
from privgrid.ledger import (
    Block,
    BlockError,
    imbalance,
    ledger_id,
    market_block,
    required_voters,
    roster_of,
    trades_from_results,
)
from privgrid.ledger.block import ZERO_HASH
from privgrid.ledger.encoding import from_fixed, to_fixed
from privgrid.ledger.genesis import genesis_block, quorum_of, same_registration
from privgrid.ledger.settlement import fixed_mul, imbalance_fixed, settle
from tests.test_ledger_support import SMALL_LINES, make_parties, paper, small_trades

H = bytes(range(32))


# -- genesis
def test_genesis_registers_the_paper_roster():
    case = paper()
    g = case.genesis
    roster = roster_of(g)
    assert set(roster) == set(case.identities)
    for pid, identity in case.identities.items():
        assert roster[pid] == identity.public_b64
    assert required_voters(g) == ("S1", "S2", "S3", "S4", "B1", "B2", "B3", "LM", "MO")
    assert ledger_id(g) == g.hash.hex()
    assert quorum_of(g) == "all"
    s1 = g.body["participants"][0]
    assert (s1["role"], s1["bus"], from_fixed(s1["pmin"]), from_fixed(s1["pmax"])) == (
        "seller",
        2,
        1.0,
        7.0,
    )
    assert Block.from_bytes(g.to_bytes()) == g


def test_same_registration_ignores_the_timestamp():
    parties = make_parties()
    again = dataclasses.replace(parties.genesis, timestamp=parties.genesis.timestamp + 5)
    assert again.hash != parties.genesis.hash
    assert same_registration(parties.genesis, again)
    assert not same_registration(parties.genesis, make_parties().genesis)  # other keys


def _participants() -> list[dict]:
    key = lambda: Identity.generate().public_b64  # noqa: E731
    return [
        {"id": "S1", "role": "seller", "public_key": key(), "bus": 2, "pmin": 1, "pmax": 7},
        {"id": "B1", "role": "buyer", "public_key": key(), "bus": 3, "pmin": -7, "pmax": -1},
        {"id": "LM", "role": "lm", "public_key": key()},
        {"id": "MO", "role": "mo", "public_key": key()},
    ]


def _edit(change):
    entries = _participants()
    change(entries)
    return entries


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.append(dict(p[0])), "registered twice|reuses"),
        (lambda p: p[1].update(public_key=p[0]["public_key"]), "reuses another"),
        (lambda p: p[0].update(public_key="AAAA"), "32 bytes"),
        (lambda p: p[0].update(public_key="not base64!"), "base64"),
        (lambda p: p[0].pop("pmax"), "needs 'pmax'"),
        (lambda p: p[0].update(pmin=8), "pmin > pmax"),
        (lambda p: p[2].update(bus=1), "unexpected"),
        (lambda p: p[0].update(colour="red"), "unexpected"),
        (lambda p: p[3].update(role="lm"), "exactly one"),
        (lambda p: p[0].update(role="king"), "not one of"),
        (lambda p: p[0].update(id=""), "non-empty"),
        (lambda p: p[:] and p.__delitem__(slice(0, 2)), "no agents"),
    ],
)
def test_genesis_refuses_bad_registrations(change, message):
    with pytest.raises(BlockError, match=message):
        genesis_block("s", _edit(change), timestamp=1)


@pytest.mark.parametrize("quorum", [0, 5, "most", True])
def test_genesis_refuses_bad_quorum(quorum):
    with pytest.raises(BlockError):
        genesis_block("s", _participants(), quorum=quorum, timestamp=1)


# -- market blocks: canonical bytes and hashes
def test_market_block_round_trips_bytes_exactly():
    block = market_block(3, H, "run", 195, small_trades(), SMALL_LINES, timestamp=123)
    data = block.to_bytes()
    again = Block.from_bytes(data)
    assert again == block
    assert again.to_bytes() == data
    assert again.hash == block.hash


reals = st.floats(-1000, 1000, allow_nan=False).map(lambda x: round(x, 6))
trade = st.fixed_dictionaries(
    {
        "power": reals,
        "price": reals,
        "seller_charge": reals,
        "buyer_power": reals,
        "buyer_price": reals,
        "buyer_charge": reals | st.none(),
    }
)
line = st.fixed_dictionaries(
    {"flow": reals, "limit": st.none() | st.floats(0, 100), "price_up": reals, "price_down": reals}
)


@given(
    trades=st.lists(trade, max_size=6),
    lines=st.lists(line, max_size=4),
    height=st.integers(1, 2**40),
    rounds=st.integers(0, 10**6),
    run=st.text(min_size=1, max_size=12),
    timestamp=st.integers(0, 2**50),
    prev=st.binary(min_size=32, max_size=32),
)
@settings(max_examples=100, deadline=None)
def test_random_blocks_are_canonical(trades, lines, height, rounds, run, timestamp, prev):
    for i, t in enumerate(trades):
        t.update(seller=f"S{i}", buyer=f"B{i}")
        if t["buyer_charge"] is None:
            del t["buyer_charge"]
    for i, ln in enumerate(lines):
        ln["id"] = f"{i}-{i + 1}"
    block = market_block(height, prev, run, rounds, trades, lines, timestamp)
    data = block.to_bytes()
    decoded = Block.from_bytes(data)
    assert decoded == block and decoded.to_bytes() == data
    assert imbalance_fixed(block.body["settlement"]) == 0


def _mutations(block: Block) -> dict[str, Block]:
    def body(change) -> Block:
        b = copy.deepcopy(block.body)
        change(b)
        return dataclasses.replace(block, body=b)

    def bump(path):
        def change(b):
            *head, last = path
            target = b
            for key in head:
                target = target[key]
            target[last] += 1  # one fixed-point step: 2^-32

        return change

    out = {
        "height": dataclasses.replace(block, height=block.height + 1),
        "prev_hash": dataclasses.replace(block, prev_hash=bytes(31) + b"\x01"),
        "run": dataclasses.replace(block, run=block.run + "x"),
        "timestamp": dataclasses.replace(block, timestamp=block.timestamp + 1),
        "rounds": body(bump(["rounds"])),
        "seller name": body(lambda b: b["trades"][0].update(seller="S9")),
        "settlement": body(bump(["settlement", "congestion_rent"])),
        "line id": body(lambda b: b["lines"][0].update(id="9-9")),
        "line limit": body(lambda b: b["lines"][0].update(limit=5)),
        "trade order": body(lambda b: b["trades"].reverse()),
    }
    for key in ("power", "price", "seller_charge", "buyer_power", "buyer_price", "buyer_charge"):
        out[f"trade {key}"] = body(bump(["trades", 0, key]))
    for key in ("flow", "price_up", "price_down"):
        out[f"line {key}"] = body(bump(["lines", 1, key]))
    return out


def test_hash_changes_with_any_field():
    block = market_block(3, H, "run", 195, small_trades(), SMALL_LINES, timestamp=123)
    hashes = {name: b.hash for name, b in _mutations(block).items()}
    assert block.hash not in hashes.values()
    assert len(set(hashes.values())) == len(hashes)


def test_genesis_hash_changes_with_any_participant_field():
    g = make_parties().genesis
    for i, key in [(0, "bus"), (0, "pmin"), (0, "pmax")]:
        body = copy.deepcopy(g.body)
        body["participants"][i][key] += 1
        assert dataclasses.replace(g, body=body).hash != g.hash
    body = copy.deepcopy(g.body)
    body["participants"][0]["public_key"] = bytes(32)
    assert dataclasses.replace(g, body=body).hash != g.hash


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(kind="fork"), "kind"),
        (dict(height=0), "height >= 1"),
        (dict(prev_hash=b"short"), "32 bytes"),
        (dict(run=""), "non-empty"),
        (dict(timestamp=-1), "out of range"),
        (dict(body={"rounds": 1}), "missing"),
    ],
)
def test_block_shape_is_checked_on_construction(change, message):
    block = market_block(3, H, "run", 195, small_trades(), SMALL_LINES, timestamp=123)
    with pytest.raises(BlockError, match=message):
        dataclasses.replace(block, **change)


def test_market_body_rules():
    trades = small_trades()
    with pytest.raises(BlockError, match="appears twice"):
        market_block(1, H, "r", 1, [*trades, {**trades[0], "seller": "B1", "buyer": "S1"}], [])
    with pytest.raises(BlockError, match="itself"):
        market_block(1, H, "r", 1, [{**trades[0], "buyer": "S1"}], [])
    with pytest.raises(BlockError, match="unexpected"):
        market_block(1, H, "r", 1, [{**trades[0], "charge": 0.1}], [])
    with pytest.raises(BlockError, match="missing"):
        market_block(1, H, "r", 1, [], [{"id": "1-2", "flow": 0.0}])
    with pytest.raises(BlockError, match="height >= 1"):
        Block(0, ZERO_HASH, "market", "r", 1, market_block(1, H, "r", 1, [], []).body)
    with pytest.raises(BlockError, match="height 0 and a zero prev_hash"):
        Block(1, H, "genesis", "", 1, make_parties().genesis.body)


def test_stored_floats_are_refused():
    block = market_block(1, H, "r", 1, small_trades(), [])
    body = copy.deepcopy(block.body)
    body["trades"][0]["power"] = 1.5
    with pytest.raises(BlockError, match="integer"):
        dataclasses.replace(block, body=body)


# -- settlement
def test_settlement_of_one_trade():
    t = {
        "seller": "S1",
        "buyer": "B1",
        "power": 2.0,
        "price": 1.5,
        "seller_charge": 0.25,
        "buyer_power": -2.0,
        "buyer_price": 1.5,
    }
    s = market_block(1, H, "r", 1, [t], []).body["settlement"]
    row = {k: from_fixed(v) if isinstance(v, int) else v for k, v in s["trades"][0].items()}
    assert row == {
        "seller": "S1",
        "buyer": "B1",
        "payment": 3.0,
        "seller_receives": 2.5,
        "buyer_pays": 3.5,
        "congestion": 1.0,
    }
    agents = {
        a["id"]: (from_fixed(a["receives"]), from_fixed(a["pays"]), from_fixed(a["net"]))
        for a in s["agents"]
    }
    assert agents == {"S1": (2.5, 0.0, 2.5), "B1": (0.0, 3.5, -3.5)}
    assert from_fixed(s["congestion_rent"]) == 1.0
    assert imbalance(s) == 0.0


def test_fixed_mul_rounds_half_up():
    one, half_step = to_fixed(1.0), 1
    assert fixed_mul(one, 3) == 3
    assert fixed_mul(half_step, 1 << 31) == 1  # exactly half a step rounds up
    assert fixed_mul(-half_step, 1 << 31) == 0


@given(st.lists(trade, min_size=1, max_size=8))
@settings(max_examples=100, deadline=None)
def test_settlement_always_balances_exactly(trades):
    records = []
    for i, t in enumerate(trades):
        record = {k: to_fixed(v) for k, v in t.items() if v is not None}
        record.setdefault("buyer_charge", -record["seller_charge"])
        records.append({**record, "seller": f"S{i % 3}", "buyer": f"B{i % 2}"})
    assert imbalance_fixed(settle(records)) == 0


def test_paper_case_settlement_balances_and_pays_the_congestion_rent():
    case = paper()
    block = case.block()
    s = block.body["settlement"]
    assert abs(imbalance(s)) <= 1e-6
    paid = sum(from_fixed(a["pays"]) for a in s["agents"])
    received = sum(from_fixed(a["receives"]) for a in s["agents"])
    rent = from_fixed(s["congestion_rent"])
    assert abs(paid - received - rent) <= 1e-6
    assert rent == pytest.approx(10.868, abs=1e-3)  # algorithm.md §9
    line_rent = sum(
        ln["limit"] * (ln["price_up"] + ln["price_down"])
        for ln in case.results["lines"]
        if ln["limit"] is not None
    )
    assert rent == pytest.approx(line_rent, abs=1e-3)  # Σ c P = Σ Fmax (η⁺ + η⁻)
    for row, t in zip(s["trades"], case.results["trades"], strict=True):
        assert from_fixed(row["payment"]) == pytest.approx(t["power"] * t["price"], abs=1e-9)
    net = {a["id"]: from_fixed(a["net"]) for a in s["agents"]}
    assert all(net[a] > 0 for a in ("S1", "S2", "S3", "S4"))
    assert all(net[a] < 0 for a in ("B1", "B2", "B3"))


def test_trades_from_results_uses_the_sellers_charge_for_both_sides():
    case = paper()
    rows = trades_from_results(case.results["trades"])
    assert len(rows) == 12
    block = case.block()
    first = block.body["trades"][0]
    assert first["buyer_charge"] == -first["seller_charge"]
    assert from_fixed(first["buyer_power"]) == case.results["trades"][0]["buyer_power"]
