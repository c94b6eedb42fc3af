"""Proof-of-Solution votes: a participant's signed verdict on one proposed block.

After checking its own part of the KKT conditions on a block, each participant signs
``accept`` or ``reject`` plus the failed checks (condition, subject, measured value,
tolerance — :meth:`privgrid.market.kkt.Check.as_dict`). A reject therefore always says why.

Signed bytes: the canonical msgpack array ``[VOTE_DOMAIN, voter, block_hash, accept,
failures]``. The domain string keeps a vote signature from ever being valid as an envelope
signature (those sign an array that starts with an integer) or anything else the same key
signs. The block hash binds the height, the run and — through ``prev_hash`` — the whole chain
down to genesis. Measured values and tolerances are stored as the ``repr`` of the float, not
fixed point: a failing check can measure anything, including ``inf`` or values beyond 2^31,
and a vote must still say what was measured.

:func:`commit_decision` is the commit rule: the MO appends a block only if no valid vote
rejects it and enough required voters (all, by default) accepted it with a valid signature.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from privgrid.crypto.errors import CryptoError
from privgrid.crypto.identity import SIGNATURE_BYTES, Identity, Roster, verify_signature
from privgrid.ledger import schema
from privgrid.ledger.encoding import HASH_BYTES, decode, encode
from privgrid.ledger.errors import BlockError, EncodingError, VoteError
from privgrid.ledger.genesis import Quorum

VOTE_DOMAIN = "privgrid/ledger/vote/v1"
VOTE_VERSION = 1
MAX_VOTE_BYTES = 1 << 20
_VOTE_KEYS = frozenset({"v", "voter", "block", "accept", "failures", "sig"})
_FAILURE_KEYS = frozenset({"condition", "subject", "value", "tolerance"})


class CheckLike(Protocol):
    """Anything shaped like :class:`privgrid.market.kkt.Check`."""

    # Read-only members: a frozen Check (or any other record) fits.
    @property
    def condition(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def tolerance(self) -> float: ...


def _real_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise VoteError(f"failure value {value!r} is not a number")
    try:
        return repr(float(value))
    except (TypeError, ValueError) as exc:
        raise VoteError(f"failure value {value!r} is not a number") from exc


@dataclass(frozen=True)
class Failure:
    """One failed check as a vote records it."""

    condition: str
    subject: str
    value: str
    tolerance: str

    @classmethod
    def of(cls, check: CheckLike | Mapping[str, Any]) -> Failure:
        """From a ``Check`` or its ``as_dict()`` (extra keys such as ``passed`` are ignored)."""
        get = check.get if isinstance(check, Mapping) else lambda k: getattr(check, k, None)
        condition, subject = get("condition"), get("subject")
        if not isinstance(condition, str) or not condition or not isinstance(subject, str):
            raise VoteError(f"a failed check needs a condition and a subject, got {check!r}")
        return cls(condition, subject, _real_text(get("value")), _real_text(get("tolerance")))

    def as_dict(self) -> dict[str, str]:
        return {
            "condition": self.condition,
            "subject": self.subject,
            "value": self.value,
            "tolerance": self.tolerance,
        }

    def __str__(self) -> str:
        return f"{self.condition} on {self.subject}: {self.value} > {self.tolerance}"


@dataclass(frozen=True)
class Vote:
    """A signed verdict on the block with hash ``block_hash``."""

    voter: str
    block_hash: bytes
    accept: bool
    failures: tuple[Failure, ...] = field(default_factory=tuple)
    signature: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "failures", tuple(self.failures))  # lists compare unequal
        if not isinstance(self.voter, str) or not self.voter:
            raise VoteError("vote.voter must be a non-empty string")
        if not isinstance(self.block_hash, bytes) or len(self.block_hash) != HASH_BYTES:
            raise VoteError(f"vote.block must be {HASH_BYTES} bytes")
        if not isinstance(self.accept, bool):
            raise VoteError("vote.accept must be a boolean")
        if not all(isinstance(f, Failure) for f in self.failures):
            raise VoteError("vote.failures must be Failure records")
        if self.accept and self.failures:
            raise VoteError(f"vote by {self.voter}: an accept vote lists failed checks")
        if not self.accept and not self.failures:
            raise VoteError(f"vote by {self.voter}: a reject vote must list what failed")
        if not isinstance(self.signature, bytes):
            raise VoteError("vote.sig must be bytes")

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers."""
        failures = [f.as_dict() for f in self.failures]
        return encode([VOTE_DOMAIN, self.voter, self.block_hash, self.accept, failures])

    def to_bytes(self) -> bytes:
        """Canonical wire and storage form (includes the signature)."""
        return encode(
            {
                "v": VOTE_VERSION,
                "voter": self.voter,
                "block": self.block_hash,
                "accept": self.accept,
                "failures": [f.as_dict() for f in self.failures],
                "sig": self.signature,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Vote:
        """Strict decoding; the signature is *not* checked here (see :func:`verify_vote`)."""
        try:
            value = decode(data, max_bytes=MAX_VOTE_BYTES)
            fields = schema.expect_map(value, _VOTE_KEYS, "vote")
            if fields["v"] != VOTE_VERSION:
                raise VoteError(f"vote version {fields['v']!r} is not {VOTE_VERSION}")
            failures = []
            for i, entry in enumerate(schema.expect_list(fields["failures"], "vote.failures")):
                item = schema.expect_map(entry, _FAILURE_KEYS, f"vote.failures[{i}]")
                if not all(isinstance(item[k], str) for k in _FAILURE_KEYS):
                    raise VoteError(f"vote.failures[{i}]: every field must be a string")
                failures.append(Failure(**item))
        except EncodingError as exc:
            raise VoteError(f"vote is not canonical: {exc.reason}") from exc
        except BlockError as exc:
            raise VoteError(exc.reason) from exc
        return cls(
            fields["voter"], fields["block"], fields["accept"], tuple(failures), fields["sig"]
        )


def sign_vote(
    identity: Identity,
    voter: str,
    block_hash: bytes,
    accept: bool,
    failures: Iterable[CheckLike | Mapping[str, Any]] = (),
) -> Vote:
    """``voter``'s signed verdict. ``failures``: the failed checks (empty to accept)."""
    unsigned = Vote(voter, block_hash, accept, tuple(Failure.of(f) for f in failures))
    signature = identity.sign(unsigned.signed_bytes())
    return Vote(voter, block_hash, accept, unsigned.failures, signature)


def verify_vote(
    key: Roster | Ed25519PublicKey | str, vote: Vote, *, block_hash: bytes | None = None
) -> None:
    """Raise :class:`VoteError` unless ``vote`` is signed by its voter (looked up in a
    roster, or the given public key) and, if ``block_hash`` is given, is for that block."""
    if block_hash is not None and vote.block_hash != block_hash:
        raise VoteError(
            f"vote by {vote.voter} is for block {vote.block_hash.hex()[:16]}…, "
            f"not {block_hash.hex()[:16]}…"
        )
    if len(vote.signature) != SIGNATURE_BYTES:
        raise VoteError(f"vote by {vote.voter} has no valid signature field")
    try:
        if isinstance(key, Roster):
            key.verify(vote.voter, vote.signed_bytes(), vote.signature)
        else:
            verify_signature(key, vote.signed_bytes(), vote.signature)
    except CryptoError as exc:
        raise VoteError(f"vote by {vote.voter}: {exc.reason}") from exc


@dataclass(frozen=True)
class Decision:
    """The commit rule's verdict on one block, with everything needed to explain it."""

    commit: bool
    needed: int
    accepted: tuple[Vote, ...]
    missing: tuple[str, ...]
    rejected: dict[str, tuple[Failure, ...]]
    invalid: dict[str, str]

    @property
    def accepted_voters(self) -> tuple[str, ...]:
        return tuple(v.voter for v in self.accepted)

    def summary(self) -> str:
        """One line: who accepted, who rejected and why, who is missing, what was invalid."""
        parts = [f"{len(self.accepted)} of {self.needed} needed accept votes"]
        for voter, failures in self.rejected.items():
            parts.append(f"rejected by {voter}: " + "; ".join(str(f) for f in failures))
        if self.missing:
            parts.append(f"no valid vote from {', '.join(self.missing)}")
        for voter, reason in self.invalid.items():
            parts.append(f"invalid vote from {voter}: {reason}")
        return " | ".join(parts)


def needed_votes(required_voters: Sequence[str], quorum: Quorum) -> int:
    """How many accept votes the quorum asks for."""
    if quorum == "all":
        return len(required_voters)
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
        raise VoteError(f"quorum must be 'all' or a positive integer, got {quorum!r}")
    return min(quorum, len(required_voters))


def commit_decision(
    votes: Iterable[Vote],
    required_voters: Sequence[str],
    quorum: Quorum = "all",
    *,
    block_hash: bytes,
    roster: Roster,
) -> Decision:
    """Apply the commit rule to the votes received for the block ``block_hash``.

    A vote counts only if its voter is required, its signature verifies against ``roster``
    and it is for ``block_hash``; other votes are listed in ``invalid`` and ignored (so
    nobody can block a commit by sending garbage in someone's name). Any counted reject
    blocks the commit; otherwise it needs ``quorum`` counted accepts (``"all"``: every
    required voter).
    """
    required = tuple(dict.fromkeys(required_voters))
    accepts: dict[str, Vote] = {}
    rejected: dict[str, tuple[Failure, ...]] = {}
    invalid: dict[str, str] = {}
    for vote in votes:
        if vote.voter not in required:
            invalid[vote.voter] = "not a required voter of this ledger"
            continue
        try:
            verify_vote(roster, vote, block_hash=block_hash)
        except VoteError as exc:
            invalid[vote.voter] = exc.reason
            continue
        if vote.accept:
            accepts[vote.voter] = vote
        else:
            rejected[vote.voter] = rejected.get(vote.voter, ()) + vote.failures
    for voter in rejected:
        accepts.pop(voter, None)  # a voter who also rejected does not count as accepting
    accepted = tuple(accepts[v] for v in required if v in accepts)
    missing = tuple(v for v in required if v not in accepts and v not in rejected)
    commit = not rejected and len(accepted) >= needed_votes(required, quorum)
    return Decision(commit, needed_votes(required, quorum), accepted, missing, rejected, invalid)
