"""A ledger block: header fields plus a kind-specific body, hashed over its canonical bytes.

Why one generic type: the chain logic (heights, links, hashes, storage) is the same for the
registration block and for market blocks; only the body differs. The byte form is the
canonical msgpack map ``{v, height, prev_hash, kind, run, timestamp, body}``; the block's hash
is SHA-256 of exactly those bytes, so anything that changes any field changes the hash.

``from_bytes`` is the single entry point for blocks somebody else wrote (the database, the
MO's proposal): it decodes strictly and checks the header and the body's shape, so a
:class:`Block` in memory is always well formed. Builders live in :mod:`privgrid.ledger.genesis`
and :mod:`privgrid.ledger.market`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, Literal

from privgrid.ledger import schema
from privgrid.ledger.encoding import HASH_BYTES, decode, encode, sha256
from privgrid.ledger.errors import BlockError, EncodingError

FORMAT_VERSION = 1
GENESIS: Final = "genesis"
MARKET: Final = "market"
Kind = Literal["genesis", "market"]
ZERO_HASH = bytes(HASH_BYTES)
HEADER_KEYS = frozenset({"v", "height", "prev_hash", "kind", "run", "timestamp", "body"})
MAX_BLOCK_BYTES = 1 << 26  # 64 MiB: far above a 1000-agent market


def now_ms() -> int:
    """Wall-clock time as integer Unix milliseconds (the block timestamp's unit)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Block:
    """One block. ``body`` holds only canonical values (fixed-point ints, never floats)."""

    height: int
    prev_hash: bytes
    kind: Kind
    run: str
    timestamp: int
    body: dict[str, Any]

    def to_bytes(self) -> bytes:
        """The canonical bytes: what is hashed, stored and sent."""
        return encode(
            {
                "v": FORMAT_VERSION,
                "height": self.height,
                "prev_hash": self.prev_hash,
                "kind": self.kind,
                "run": self.run,
                "timestamp": self.timestamp,
                "body": self.body,
            }
        )

    @property
    def hash(self) -> bytes:
        """SHA-256 of :meth:`to_bytes` (32 bytes)."""
        return sha256(self.to_bytes())

    @property
    def hash_hex(self) -> str:
        return self.hash.hex()

    @classmethod
    def from_bytes(cls, data: bytes) -> Block:
        """Strictly decode and shape-check a block; raises :class:`BlockError`."""
        try:
            value = decode(data, max_bytes=MAX_BLOCK_BYTES)
        except EncodingError as exc:
            raise BlockError(f"non-canonical encoding: {exc.reason}") from exc
        header = schema.expect_map(value, HEADER_KEYS, "block")
        if header["v"] != FORMAT_VERSION:
            raise BlockError(f"block format version {header['v']!r} is not {FORMAT_VERSION}")
        return cls(
            height=header["height"],
            prev_hash=header["prev_hash"],
            kind=header["kind"],
            run=header["run"],
            timestamp=header["timestamp"],
            body=header["body"],
        )

    def __post_init__(self) -> None:
        """Header rules that need no other block, then the body's shape for its kind.

        Checked on construction so that every :class:`Block` in memory is well formed,
        whether it was built here, decoded from the database or received from the MO.
        """
        schema.expect_int(self.height, "block.height", 0)
        schema.check_hash(self.prev_hash, "block.prev_hash")
        schema.expect_int(self.timestamp, "block.timestamp", 0)
        if not isinstance(self.run, str):
            raise BlockError(f"block.run: expected a string, got {type(self.run).__name__}")
        if self.kind == GENESIS:
            if self.height != 0 or self.prev_hash != ZERO_HASH:
                raise BlockError("a genesis block must have height 0 and a zero prev_hash")
            schema.check_genesis_body(self.body)
        elif self.kind == MARKET:
            if self.height < 1:
                raise BlockError("a market block must have height >= 1")
            schema.expect_str(self.run, "block.run")
            schema.check_market_body(self.body)
        else:
            raise BlockError(f"block kind {self.kind!r} is not {GENESIS!r} or {MARKET!r}")
