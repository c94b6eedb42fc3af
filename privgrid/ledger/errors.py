"""Exceptions raised by the ledger package.

Why a hierarchy: the MO, a voting participant and ``privgrid ledger verify`` all handle data
that somebody else produced (a proposed block, a vote off the wire, a file on disk). Each
catches :class:`LedgerError` once and reports ``reason``; a caller that must tell failures
apart (the CLI's exit codes, the MO's "reject ends the run") catches a subclass. Every error
names the check that failed, never just "invalid".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from privgrid.ledger.votes import Decision


class LedgerError(ValueError):
    """Base class. ``reason`` is a human-readable account of what failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncodingError(LedgerError):
    """Bytes are not canonical msgpack of an allowed value (or a value cannot be encoded)."""


class BlockError(LedgerError):
    """A block (or its body) breaks a structural or semantic rule of the ledger."""


class VoteError(LedgerError):
    """A Proof-of-Solution vote is malformed, for another block, or its signature fails."""


class CommitRefused(LedgerError):  # noqa: N818 — a verdict, like wire.envelope.Rejected
    """The commit rule was not met; ``decision`` says who rejected, who is missing and why."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"block not committed: {decision.summary()}")
        self.decision = decision


class ChainError(LedgerError):
    """Appending would break the chain: wrong height, wrong ``prev_hash``, or a corrupt head."""


class LedgerExistsError(LedgerError):
    """``Ledger.create`` found a file at the path (never overwritten)."""


class LedgerFormatError(LedgerError):
    """A path is not a readable privgrid ledger (missing, not SQLite, wrong schema)."""
