"""The market block of a cleared market: what the MO proposes, built from the cleared state.

Shared by the Market Operator (from the parties' final reports) and the in-process day (from
the negotiation's final state), so both build the same block from the same numbers. ``edit``
lets the Proof-of-Solution experiment's adversarial MO alter the trade rows first; the block's
line flows then follow from the altered rows, as a consistent forgery's would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from privgrid.ledger.block import Block
from privgrid.ledger.market import market_block, trades_from_results
from privgrid.market.setup import MarketSetup
from privgrid.results import Outcome, line_rows, trade_rows

TradeRows = list[dict[str, Any]]


def trade_vectors(
    setup: MarketSetup, trades: TradeRows
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trade, price and charge vectors (canonical order) of block trade rows."""
    g = setup.graph
    P, lam, c = (np.zeros(g.n_trades) for _ in range(3))
    for row in trades:
        t, m = g.trade(row["seller"], row["buyer"]), g.trade(row["buyer"], row["seller"])
        P[t], P[m] = row["power"], row["buyer_power"]
        lam[t], lam[m] = row["price"], row["buyer_price"]
        c[t], c[m] = row["seller_charge"], -row["seller_charge"]
    return P, lam, c


def cleared_block(
    setup: MarketSetup,
    cleared: Outcome,
    *,
    height: int,
    prev_hash: bytes,
    run: str,
    edit: Callable[[TradeRows], TradeRows] | None = None,
    timestamp: int | None = None,
) -> Block:
    """The block of ``cleared`` (trades, prices, charges, line prices) at ``height``."""
    trades = trades_from_results(trade_rows(setup, cleared))
    if edit is not None:
        trades = edit(trades)
    shown = Outcome(True, cleared.rounds, *trade_vectors(setup, trades), cleared.line_prices)
    lines = line_rows(setup, shown)
    return market_block(height, prev_hash, run, cleared.rounds, trades, lines, timestamp)
