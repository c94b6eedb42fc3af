"""Helpers shared by the ledger tests (no tests here): identities, small ledgers, the paper case.

Kept in a ``test_ledger*`` module so the ledger's tests stay in their own files; pytest
collects it and finds nothing to run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privgrid.crypto.identity import Identity, Roster
from privgrid.ledger import Block, Ledger, Vote, genesis_block, market_block, sign_vote
from privgrid.ledger.genesis import participants_from_scenario

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
AGENTS = {
    "S1": ("seller", 2, 1.0, 7.0),
    "S2": ("seller", 5, 1.0, 4.0),
    "B1": ("buyer", 3, -7.0, -1.0),
    "B2": ("buyer", 4, -6.0, -1.0),
}


@dataclass
class Parties:
    """Everyone's identity and the genesis block that registers them."""

    identities: dict[str, Identity]
    genesis: Block

    def votes(self, block: Block, *, skip: tuple[str, ...] = ()) -> list[Vote]:
        return [
            sign_vote(key, pid, block.hash, True)
            for pid, key in self.identities.items()
            if pid not in skip
        ]

    def save_keys(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for pid, key in self.identities.items():
            key.save(folder / f"{pid}.key")


def make_parties(quorum: str | int = "all", timestamp: int = 1_700_000_000_000) -> Parties:
    identities = {pid: Identity.generate() for pid in [*AGENTS, "LM", "MO"]}
    participants: list[dict[str, Any]] = [
        {
            "id": pid,
            "role": role,
            "public_key": identities[pid].public_b64,
            "bus": bus,
            "pmin": lo,
            "pmax": hi,
        }
        for pid, (role, bus, lo, hi) in AGENTS.items()
    ]
    participants += [
        {"id": "LM", "role": "lm", "public_key": identities["LM"].public_b64},
        {"id": "MO", "role": "mo", "public_key": identities["MO"].public_b64},
    ]
    return Parties(
        identities, genesis_block("test", participants, quorum=quorum, timestamp=timestamp)
    )


def small_trades(seed: int = 0) -> list[dict[str, Any]]:
    """Four seller-buyer trades with prices and charges on the 2^-32 grid."""
    rng = np.random.default_rng(seed)
    out = []
    for seller in ("S1", "S2"):
        for buyer in ("B1", "B2"):
            power = float(np.round(rng.uniform(0, 3), 6))
            price = float(np.round(rng.uniform(1, 3), 6))
            charge = float(np.round(rng.uniform(-0.5, 0.9), 6))
            out.append(
                {
                    "seller": seller,
                    "buyer": buyer,
                    "power": power,
                    "price": price,
                    "seller_charge": charge,
                    "buyer_power": -power,
                    "buyer_price": price,
                }
            )
    return out


SMALL_LINES = [
    {"id": "1-2", "flow": -0.5, "limit": None, "price_up": 0.0, "price_down": 0.0},
    {"id": "2-3", "flow": 3.0, "limit": 3.0, "price_up": 2.2396, "price_down": 0.0},
    {"id": "4-5", "flow": -3.5, "limit": 3.5, "price_up": 0.0, "price_down": 1.1855},
]


def next_block(ledger: Ledger, seed: int = 0, timestamp: int = 1_700_000_100_000) -> Block:
    head = ledger.head()
    return market_block(
        head.height + 1,
        head.hash,
        f"run-{head.height + 1}",
        195,
        small_trades(seed),
        SMALL_LINES,
        timestamp + head.height,
    )


def build_ledger(path: Path, blocks: int, parties: Parties | None = None) -> Parties:
    """A ledger file with ``blocks`` committed market blocks after genesis."""
    parties = parties or make_parties()
    with Ledger.create(path, parties.genesis) as ledger:
        for i in range(blocks):
            block = next_block(ledger, seed=i)
            ledger.append(block, parties.votes(block))
    return parties


@dataclass(frozen=True)
class Paper:
    """The paper case (configs/paper.toml) solved in-process, with every party's key."""

    setup: Any
    results: dict[str, Any]
    identities: dict[str, Identity]
    genesis: Block

    def block(self, height: int = 1, prev_hash: bytes | None = None) -> Block:
        from privgrid.ledger import trades_from_results

        return market_block(
            height,
            prev_hash or self.genesis.hash,
            "paper-run",
            self.results["rounds"],
            trades_from_results(self.results["trades"]),
            self.results["lines"],
            timestamp=1_700_000_200_000,
        )

    def held(self, agent: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The agent's own final (trades, prices, charges) in slot order, from the results."""
        g = self.setup.graph
        vectors = [np.full(g.n_trades, np.nan) for _ in range(3)]
        for row in self.results["trades"]:
            t, m = g.trade(row["seller"], row["buyer"]), g.trade(row["buyer"], row["seller"])
            for vec, a, b in zip(
                vectors,
                ("power", "price", "charge"),
                ("buyer_power", "buyer_price", None),
                strict=True,
            ):
                vec[t] = row[a]
                vec[m] = -row["charge"] if b is None else row[b]
        slots = g.slots[g.index(agent)]
        return vectors[0][slots], vectors[1][slots], vectors[2][slots]

    def theta(self, agent: str) -> float:
        return next(a["theta"] for a in self.results["agents"] if a["id"] == agent)


@functools.cache
def paper() -> Paper:
    from privgrid.keys import participants
    from privgrid.solve import prepare, solve

    scenario, setup = prepare(CONFIGS / "paper.toml")
    results = solve(setup)
    identities = {pid: Identity.generate() for pid in participants(scenario)}
    roster = Roster({pid: key.public_b64 for pid, key in identities.items()})
    genesis = genesis_block(
        scenario.name, participants_from_scenario(scenario, roster), timestamp=1_700_000_000_000
    )
    return Paper(setup, results, identities, genesis)
