"""The market block of a cleared market, built from the fixed-point vectors the parties hold.

Shared by the Market Operator (from the parties' final reports, which carry exactly these
int64 vectors) and the in-process day (from the negotiation's final state, whose values are on
the 2^-32 grid already), so both build the same block from the same numbers. The block stores
fixed point too, so the trade records are the reported integers themselves — no detour
through floats; only the line flows are computed (``G·P``, from the block's own trades) and
rounded onto the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privgrid.ledger.block import Block
from privgrid.ledger.encoding import to_fixed
from privgrid.ledger.market import market_block_of_records
from privgrid.market.fixedpoint import decode, encode
from privgrid.market.line_step import LinePrices
from privgrid.market.setup import MarketSetup


@dataclass(frozen=True)
class Cleared:
    """A cleared market in the block's units: int64 at scale 2^32.

    ``trades``, ``prices`` and ``charges`` per trade in the trade graph's canonical order (both
    sides of every pair, as each side reported); ``eta_up`` and ``eta_down`` per limited line.
    """

    rounds: int
    trades: np.ndarray
    prices: np.ndarray
    charges: np.ndarray
    eta_up: np.ndarray
    eta_down: np.ndarray

    @classmethod
    def from_reals(
        cls,
        rounds: int,
        trades: np.ndarray,
        prices: np.ndarray,
        charges: np.ndarray,
        line_prices: LinePrices,
    ) -> Cleared:
        """From real values that crossed a process already (on the 2^-32 grid: exact)."""
        return cls(
            rounds,
            encode(trades),
            encode(prices),
            encode(charges),
            encode(line_prices.up),
            encode(line_prices.down),
        )


def seller_side(trades: np.ndarray, pair: int) -> int:
    """The trade index of pair ``pair``'s seller side: the first side unless it buys."""
    first = 2 * pair
    return first if trades[first] >= 0 else first + 1


def trade_records(setup: MarketSetup, cleared: Cleared) -> list[dict[str, Any]]:
    """One record per pair, seller side first, in the block's fixed point (the buyer's charge
    is ``−seller_charge``: charges are antisymmetric)."""
    g = setup.graph
    records = []
    for pair in range(g.n_trades // 2):
        side = seller_side(cleared.trades, pair)
        other = int(g.mirror[side])
        charge = int(cleared.charges[side])
        records.append(
            {
                "seller": g.agent_ids[g.owner[side]],
                "buyer": g.agent_ids[g.partner[side]],
                "power": int(cleared.trades[side]),
                "price": int(cleared.prices[side]),
                "seller_charge": charge,
                "buyer_power": int(cleared.trades[other]),
                "buyer_price": int(cleared.prices[other]),
                "buyer_charge": -charge,
            }
        )
    return records


def line_records(setup: MarketSetup, cleared: Cleared) -> list[dict[str, Any]]:
    """Every network line: the flow the block's trades cause, its limit and line prices."""
    flows = setup.flows(decode(cleared.trades))
    limited = {int(b): r for r, b in enumerate(setup.limited)}
    records = []
    for i, name in enumerate(setup.line_names):
        r = limited.get(i)
        records.append(
            {
                "id": name,
                "flow": to_fixed(float(flows[i]), f"line {name} flow"),
                "limit": None if r is None else to_fixed(float(setup.fmax[r]), f"line {name}"),
                "price_up": 0 if r is None else int(cleared.eta_up[r]),
                "price_down": 0 if r is None else int(cleared.eta_down[r]),
            }
        )
    return records


def cleared_block(
    setup: MarketSetup,
    cleared: Cleared,
    *,
    height: int,
    prev_hash: bytes,
    run: str,
    timestamp: int | None = None,
) -> Block:
    """The block of ``cleared`` (trades, prices, charges, line prices) at ``height``.

    Raises:
        BlockError: a vector does not fit the market (wrong length), or a value is out of the
            int64 range the block allows.
    """
    _check_lengths(setup, cleared)
    return market_block_of_records(
        height,
        prev_hash,
        run,
        cleared.rounds,
        trade_records(setup, cleared),
        line_records(setup, cleared),
        timestamp,
    )


def _check_lengths(setup: MarketSetup, cleared: Cleared) -> None:
    from privgrid.ledger.errors import BlockError

    expected: Sequence[tuple[str, np.ndarray, int]] = (
        ("trades", cleared.trades, setup.graph.n_trades),
        ("prices", cleared.prices, setup.graph.n_trades),
        ("charges", cleared.charges, setup.graph.n_trades),
        ("eta_up", cleared.eta_up, len(setup.limited)),
        ("eta_down", cleared.eta_down, len(setup.limited)),
    )
    for name, values, n in expected:
        if len(values) != n:
            raise BlockError(f"cleared {name}: {len(values)} values where the market has {n}")
