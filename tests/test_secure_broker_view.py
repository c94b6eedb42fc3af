"""What the broker sees of a run: no private datum, no trade, no price, no line flow or line
price — except the ledger block.

The run is on the in-process bus (tests/bus.py: every participant the product's runtime and
node, every message through the real channel), whose broker keeps every payload published in
the run — what a real broker relays, and what a subscriber to ``privgrid/<run>/#`` with the
broker's own view would see (the broker is untrusted, protocol.md §7). The test takes every
payload from the first announcement until the MO's ``closed``, decodes each one as far as it goes
(msgpack inside msgpack inside bytes) and compares every number in it with every sensitive
value of the run, replayed exactly in one process:

- each agent's private cost a, b and limits Pmin, Pmax;
- every round's trades P, extrapolated trades P̄ (what the price update and the LM leg are fed),
  prices λ, congestion charges and price shares A, B;
- every round's line quantities (the default masked LM leg): the line prices η, the flows F̄
  of the extrapolated trades and F of the trades on each limited line, the LM's relaxed flows,
  and each agent's own, unmasked flow contribution.

The masked leg's traffic is also checked directly: every agent's masked flow shares and every
line-prices message cross the broker as direct, sealed messages — one per agent per round — so
the broker can neither read the line prices nor add the shares up to the line flows.

A float is compared as it is; an integer as a fixed-point value at scale 2^32 (how every real
travels, :mod:`privgrid.market.fixedpoint`); both within a few fixed-point quanta, so a value
sent unquantised, or quantised differently, is caught too. Opaque byte strings (ciphertexts,
sealed bodies, signatures) are searched for every sensitive value packed as a big- or
little-endian int64 or float64.

The one message that carries cleared values is the ledger's ``block``: the MO broadcasts the
final trades and prices to every participant for the Proof-of-Solution vote (issue 6), so the
broker sees them too (docs/protocol.md, "Who can read what"). The test allows exactly that:
the block carries the cleared point and public network data, and nothing of the run before
it, and no other message carries anything.

Run in both modes: secure (1024-bit test keys) and plain, which seals every private body, so
the broker sees no price, trade, line flow or line price in either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from privgrid.market.fixedpoint import RESOLUTION, encode
from privgrid.market.line_step import flow_contribution
from privgrid.market.negotiation import negotiate
from privgrid.market.price import price_shares
from privgrid.market.setup import agent_costs, build_setup
from privgrid.scenario import LM_ID, MO_ID, load_scenario
from privgrid.wire import topics

pytestmark = pytest.mark.timeout(600)

#: Values nearer zero than this are left out: zero is everywhere (round numbers, flags, idle
#: pairs) and small integers read as fixed point land here; neither carries information.
MIN_SENSITIVE = 1e-6
#: "The same value": within four fixed-point quanta (2^-30 ≈ 9.3e-10), plus float64 rounding.
ATOL, RTOL = 4 * RESOLUTION, 1e-12
MODES = {
    "paillier": {"mode": "paillier", "key_bits": 1024, "insecure_test_keys": True},
    "plain": {"mode": "plain"},
}


def until_closed(grid) -> list[tuple[str, bytes]]:
    """Every payload of the run, as the broker relays it, until the MO's ``closed``."""
    closed = topics.broadcast(grid.run_id, MO_ID, "closed")
    payloads = grid.broker.published
    end = next(i for i, (topic, _) in enumerate(payloads) if topic == closed)
    return payloads[: end + 1]


def leaves(value: Any, out: list) -> None:
    """Every number and every bytes leaf of a msgpack structure (bytes decoded if they parse)."""
    if isinstance(value, dict):
        for v in value.values():
            leaves(v, out)
    elif isinstance(value, list | tuple):
        for v in value:
            leaves(v, out)
    elif isinstance(value, bytes):
        try:
            inner = msgpack.unpackb(value, strict_map_key=False)
        except Exception:
            out.append(value)
            return
        leaves(inner, out)
    else:
        out.append(value)


@dataclass
class Seen:
    """What one payload shows the broker: its kind, its numbers as reals, its opaque bytes."""

    topic: str
    kind: str
    reals: np.ndarray
    blobs: list[bytes]


def decode_payload(topic: str, payload: bytes) -> Seen:
    envelope = msgpack.unpackb(payload, strict_map_key=False)
    found: list = []
    leaves(envelope, found)
    reals = [float(x) for x in found if isinstance(x, float)]
    reals += [x * RESOLUTION for x in found if isinstance(x, int) and not isinstance(x, bool)]
    blobs = [x for x in found if isinstance(x, bytes)]
    return Seen(topic, envelope["kind"], np.array(reals, dtype=float), blobs)


@dataclass
class RunValues:
    """Sorted arrays of reals, each with |v| ≥ MIN_SENSITIVE."""

    secret: np.ndarray  # every private datum and every value of every round
    cleared: np.ndarray  # the final point: what the ledger block publishes by design
    public: np.ndarray  # public scenario data the block also carries (line limits)


def significant(values: list[float] | np.ndarray) -> np.ndarray:
    arr = np.unique(np.asarray(values, dtype=float))
    return arr[np.abs(arr) >= MIN_SENSITIVE]


def run_values(scenario_path: Path, results: dict[str, Any]) -> RunValues:
    """The run's sensitive values, replayed in one process (the same fixed-point codec as the
    processes, so the same bits), and its cleared point from its own results."""
    scenario = load_scenario(scenario_path)
    setup, costs = build_setup(scenario), agent_costs(scenario)
    m = scenario.market
    secret: list[float] = []
    previous = {"prices": np.full(setup.graph.n_trades, m.lambda0)}
    last: dict[str, np.ndarray] = {}

    g, G = setup.graph, setup.G

    def collect(_k: int, state, bar: np.ndarray) -> None:
        own, peer = price_shares(previous["prices"], bar, m.alpha, m.beta, m.rho)
        for values in (state.trades, bar, state.prices, state.charges, own, peer):
            secret.extend(values)
        eta = state.line_prices
        for values in (eta.up, eta.down, G @ bar, G @ state.trades, state.flows):
            secret.extend(values)
        for s in g.slots:  # each agent's flow contribution before its masks
            secret.extend(flow_contribution(G[:, s], bar[s]) * RESOLUTION)
        previous["prices"] = state.prices
        last.update(trades=state.trades, prices=state.prices, charges=state.charges)

    trace = negotiate(setup, costs, observe=collect)
    assert trace.rounds == results["rounds"]  # the replay is the run
    for cost in costs.values():
        secret += [cost.a, cost.b, cost.pmin, cost.pmax]
    cleared: list[float] = []
    for t in results["trades"]:
        cleared += [t[k] for k in ("power", "price", "charge", "buyer_power", "buyer_price")]
        cleared.append(-t["charge"])
    for name in ("trades", "prices", "charges"):
        cleared.extend(last[name])
    cleared += [float(np.sum(last["trades"][g.slots[i]])) for i in range(g.n_agents)]
    for line in results["lines"]:  # the final flows and line prices: the block has them
        cleared += [line["flow"], line["price_up"], line["price_down"]]
    public = list(scenario.network.line_limits.values())
    return RunValues(significant(secret), significant(cleared), significant(public))


def near(xs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The elements of ``xs`` within ATOL + RTOL·|v| of some element of sorted ``values``."""
    if xs.size == 0 or values.size == 0:
        return xs[:0]
    i = np.searchsorted(values, xs)
    distance = np.full(xs.shape, np.inf)
    for j in (np.clip(i - 1, 0, values.size - 1), np.clip(i, 0, values.size - 1)):
        v = values[j]
        distance = np.minimum(distance, np.abs(xs - v) - (ATOL + RTOL * np.abs(v)))
    return xs[distance <= 0]


def packed_in(blobs: list[bytes], values: np.ndarray) -> list[float]:
    """Values found in the blobs as big- or little-endian int64 (fixed point) or float64,
    at any byte offset."""
    targets = np.unique(np.concatenate([encode(values).view(np.uint64), values.view(np.uint64)]))
    joined = b"\x00".join(blobs)
    hits: set[int] = set()
    for dtype in (">u8", "<u8"):
        for offset in range(8):
            count = (len(joined) - offset) // 8
            windows = np.frombuffer(joined, dtype=dtype, count=count, offset=offset)
            hits.update(int(w) for w in windows[np.isin(windows, targets)])
    by_bits: dict[int, float] = {}
    for bits in (encode(values).view(np.uint64), values.view(np.uint64)):
        by_bits.update({int(b): float(v) for v, b in zip(values, bits, strict=True)})
    return sorted(by_bits[h] for h in hits)


def opens_as_plaintext(body: bytes) -> bool:
    """The body decodes completely as a msgpack map: an unsealed body. A sealed one is
    ``nonce ‖ ciphertext ‖ tag``, random bytes that decode completely as a map practically
    never (tests/test_collusion.py ``readable``: none in 3 million random bodies)."""
    try:
        return isinstance(msgpack.unpackb(body, strict_map_key=False), dict)
    except Exception:
        return False


@pytest.mark.parametrize(
    "mode",
    [m if m == "plain" else pytest.param(m, marks=pytest.mark.slow) for m in sorted(MODES)],
)  # Paillier in one process is slow
def test_the_broker_sees_no_plaintext_price_trade_line_flow_or_private_datum(bus_factory, mode):
    grid = bus_factory(privacy=MODES[mode])
    assert grid.run(timeout=500) == 0, grid.log(MO_ID)[-3000:]
    payloads = until_closed(grid)
    results = grid.results()
    assert results["converged"] and results["mode"] == mode
    values = run_values(grid.scenario_file, results)
    assert values.secret.size > 1000 and values.cleared.size > 10

    seen = [decode_payload(t, p) for t, p in payloads]
    kinds = {s.kind for s in seen}
    # The whole run went past the monitor: set-up, every round, the finish and the ledger.
    assert {"key", "round", "stop", "block", "vote", "closed"} <= kinds, kinds
    assert len(seen) > 1000
    others = [s for s in seen if s.kind != "block"]
    numbers = np.concatenate([s.reals for s in others])
    blobs = [b for s in others for b in s.blobs]
    assert numbers.size > 1000 and blobs

    # Nothing but the block: no sensitive value as a float or as fixed point …
    leaked = {s.kind for s in others if near(s.reals, values.secret).size}
    assert not leaked, f"sensitive values in {sorted(leaked)}"
    # … nor packed inside any opaque byte string.
    assert not packed_in(blobs, values.secret)

    # The masked LM leg (the default): every agent's flow shares go to the LM and the line
    # prices come back to every agent as direct, sealed messages, one per agent per round —
    # no broadcast, nothing the broker could read or add up to the line flows.
    assert grid.scenario.privacy.lm_leg == "masked"
    # The lines are congested, so the line prices (checked above with the flows) are not zero.
    assert any(line["price_up"] + line["price_down"] > 0.1 for line in results["lines"])
    rounds, agents = results["rounds"], grid.scenario.agent_ids
    for kind, to_lm in (("flows_masked", True), ("line_prices", False)):
        sent = {(t, p) for t, p in payloads if t.endswith(f"/{kind}")}
        assert all(msgpack.unpackb(p)["kind"] == kind for _, p in sent)
        assert all(not opens_as_plaintext(msgpack.unpackb(p)["body"]) for _, p in sent), kind
        routes = [(LM_ID, a) if to_lm else (a, LM_ID) for a in agents]
        expected = [topics.direct(grid.run_id, to, by, kind) for to, by in routes] * rounds
        assert sorted(t for t, _ in sent) == sorted(expected), kind

    # The block: the cleared point (trades, prices, charges, each agent's total) and the
    # network's public line limits, nothing else of the run.
    blocks = [s for s in seen if s.kind == "block"]
    assert blocks
    for block in blocks:
        shown = near(block.reals, values.secret)
        assert shown.size, "the block carries the cleared trades and prices by design"
        beyond = near(shown, np.union1d(values.cleared, values.public))
        assert beyond.size == shown.size, sorted(set(shown) - set(beyond))
        trades = significant([t["power"] for t in results["trades"]])
        assert near(trades, np.sort(block.reals)).size == trades.size

    if mode == "paillier":  # ciphertexts are full-size: nothing small travels as one
        shares = [
            msgpack.unpackb(msgpack.unpackb(p)["body"])
            for t, p in payloads
            if t.endswith("/share_own") or t.endswith("/share_peer")
        ]
        assert shares and all(len(b["c"]) == 256 for b in shares)
        assert all(int.from_bytes(b["c"], "big").bit_length() > 1900 for b in shares)
    else:  # plain: one share per direction travels, sealed (opaque to the broker)
        assert "share" in kinds and "price" not in kinds
