"""Every message kind: who may send it to whom, whether its body is sealed, its body schema.

One table instead of checks scattered through the roles. A receiver accepts a message only if
its kind is registered, the sender's and recipient's roles fit, and the (unsealed) body matches
the schema exactly. Values that are reals travel as int64 fixed point at scale 2^32
(:mod:`privgrid.market.fixedpoint`); big integers (ciphertexts, proofs) as bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from privgrid.wire import schema as s

AGENT, LM, MO = "agent", "lm", "mo"
ANY = frozenset({AGENT, LM, MO})
EVERYONE = "*"


@dataclass(frozen=True)
class KindSpec:
    name: str
    senders: frozenset[str]
    recipients: frozenset[str]  # roles, or {EVERYONE} for broadcasts
    sealed: bool
    body: Mapping[str, s.Spec] = field(default_factory=dict)
    coalition: bool = False  # travels on the coalition topic (colluders only, by ACL)
    #: Several different messages of this kind may go from one sender to one recipient in one
    #: round (one violation report per offender): not a replay or an equivocation.
    repeatable: bool = False

    @property
    def is_broadcast(self) -> bool:
        return EVERYONE in self.recipients


KINDS: dict[str, KindSpec] = {}


def register(spec: KindSpec) -> KindSpec:
    """Add a kind (secure-mode modules register theirs on import)."""
    existing = KINDS.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"message kind {spec.name!r} registered twice with different specs")
    KINDS[spec.name] = spec
    return spec


def _kind(
    name: str,
    senders: Iterable[str],
    recipients: Iterable[str],
    sealed: bool,
    body: Mapping[str, s.Spec],
    **options: bool,
) -> KindSpec:
    return register(
        KindSpec(name, frozenset(senders), frozenset(recipients), sealed, body, **options)
    )


# --- set-up and control -------------------------------------------------------------------
KEY = _kind(
    "key",
    ANY,
    {EVERYONE},
    False,
    {
        "x25519": s.X25519_PUBLIC,
        "created": s.NUMBER,
        "paillier_n": s.optional(s.blob(max_len=1024)),
        "paillier_bits": s.optional(s.NON_NEGATIVE),
        "key_proof": s.optional(s.blob_list(16, 1024)),
        # A restart (docs/reliability.md): the sender's incarnation (0 at first start, +1 at
        # each restart from its checkpoint) and the last round it completed.
        "incarnation": s.optional(s.NON_NEGATIVE),
        "completed": s.optional(s.NON_NEGATIVE),
    },
)
#: After a peer's restart: "everything I send you from now on is fresh". The restarted
#: participant ignores the sender's directed messages until this arrives (they may be stale).
RESYNC = _kind("resync", ANY, ANY, False, {"incarnation": s.NON_NEGATIVE})
#: ``steps``: the round's step exponent e with adaptive steps (τ·2^e, α·2^-e, σ·2^-e;
#: privgrid.market.steps, which never goes beyond ±16); absent with fixed steps (e = 0). The
#: range only keeps 2^e a normal float.
STEP_EXPONENT_LIMIT = 60
ROUND = _kind(
    "round",
    {MO},
    {EVERYONE},
    False,
    {
        "dropped": s.optional(s.Spec(s.pair_list)),
        "steps": s.optional(s.int_range(-STEP_EXPONENT_LIMIT, STEP_EXPONENT_LIMIT)),
    },
)
STOP = _kind("stop", {MO}, {EVERYONE}, False, {"converged": s.BOOL, "reason": s.TEXT})
GONE = _kind("gone", ANY, {EVERYONE}, False, {"incarnation": s.optional(s.NON_NEGATIVE)})
#: The MO's last word: the run is over (block committed or not); participants may exit.
CLOSED = _kind("closed", {MO}, {EVERYONE}, False, {"committed": s.BOOL, "reason": s.TEXT})
VIOLATION = _kind(
    "violation",
    ANY,
    {MO},
    True,
    {
        "offender": s.ID,
        "reason": s.TEXT,
        "evidence": s.blob_list(),
    },
    repeatable=True,  # a reporter may accuse several offenders in one round
)

# --- plain-mode price exchange (sealed per pair) -------------------------------------------
SHARE = _kind("share", {AGENT}, {AGENT}, True, {"x": s.INT64})
PRICE = _kind("price", {AGENT}, {AGENT}, True, {"x": s.INT64})

# --- the LM leg and the MO's residuals ----------------------------------------------------
TRADES = _kind("trades", {AGENT}, {LM}, True, {"x": s.INT64_LIST})
CHARGES = _kind("charges", {LM}, {AGENT}, True, {"x": s.INT64_LIST})
RESIDUALS = _kind(
    "residuals",
    {AGENT},
    {MO},
    True,
    {
        "r_d": s.NON_NEGATIVE,
        "r_C": s.NON_NEGATIVE,
        "r_P": s.optional(s.NON_NEGATIVE),
    },
)
LM_RESIDUALS = _kind(
    "lm_residuals", {LM}, {MO}, True, {"r_P": s.optional(s.NON_NEGATIVE), "r_L": s.NON_NEGATIVE}
)

# --- after the stop: what the MO needs for the results and the block ------------------------
FINAL = _kind(
    "final",
    {AGENT},
    {MO},
    True,
    {
        "P": s.INT64_LIST,
        "lam": s.INT64_LIST,
        "lam_peer": s.INT64_LIST,
        "c": s.INT64_LIST,
        "kkt": s.MAP_LIST,
        "stats": s.NUMBER_MAP,
    },
)
LM_FINAL = _kind(
    "lm_final",
    {LM},
    {MO},
    True,
    {
        "eta_up": s.INT64_LIST,
        "eta_down": s.INT64_LIST,
        "kkt": s.MAP_LIST,
        "stats": s.NUMBER_MAP,
    },
)

# --- Paillier mode: the two-party computation per direction n→m (protocol.md §4.1) ----------
# Ciphertexts are fixed-length bytes (2|N|/8) and need no sealing; the decrypted price and its
# proof are sealed (the proof reveals x to anyone who can guess it, protocol.md §5.4).
_PAIR = s.text_list(2)
SHARE_OWN = _kind("share_own", {AGENT}, {AGENT}, False, {"pair": _PAIR, "c": s.blob(max_len=4096)})
SHARE_PEER = _kind(
    "share_peer", {AGENT}, {AGENT}, False, {"pair": _PAIR, "c": s.blob(max_len=4096)}
)
PRICE_PROOF = _kind(
    "price_proof",
    {AGENT},
    {AGENT},
    True,
    {
        "pair": _PAIR,
        "x": s.blob(max_len=2048),
        "a": s.blob(max_len=4096),
        "z": s.blob(max_len=2048),
    },
)

# --- Paillier LM leg: packed ciphertexts under the LM's key, and back under the agent's -------
TRADES_ENC = _kind("trades_enc", {AGENT}, {LM}, False, {"c": s.blob_list(4096, 4096)})
CHARGES_ENC = _kind("charges_enc", {LM}, {AGENT}, False, {"c": s.blob_list(4096, 4096)})

# --- the ledger: the MO's block proposal and each participant's signed vote ------------------
BLOCK = _kind("block", {MO}, {EVERYONE}, False, {"block": s.blob(max_len=1 << 20)})
VOTE = _kind("vote", {AGENT, LM}, {MO}, True, {"vote": s.blob(max_len=1 << 20)})

# --- I5 masked aggregation: masked flow shares to the LM, line prices back to each agent ------
# Both sealed: the masks hide one agent's share, not the sum, so unsealed shares would let the
# broker add them up to the line flows every round; the line prices go to each agent, sealed,
# instead of one broadcast (docs/privacy.md, "What the broker sees").
FLOWS_MASKED = _kind("flows_masked", {AGENT}, {LM}, True, {"y": s.UINT64_LIST})
LINE_PRICES = _kind("line_prices", {LM}, {AGENT}, True, {"up": s.INT64_LIST, "down": s.INT64_LIST})

# --- the collusion experiment: colluders share on their coalition topic only (ACL) ------------
_RECORD_FIELDS = ("price", "charge", "previous", "target", "extrapolated", "own", "new_price")
COALITION_RECORD = register(
    KindSpec(
        "coalition_record",
        frozenset({AGENT}),
        frozenset({AGENT}),
        True,
        {"r": s.NON_NEGATIVE, **dict.fromkeys(_RECORD_FIELDS, s.INT64)},
        coalition=True,
    )
)
COALITION_ORDER = register(
    KindSpec(
        "coalition_order",
        frozenset({AGENT}),
        frozenset({AGENT}),
        True,
        {"r": s.NON_NEGATIVE, "phase": s.TEXT, "price": s.optional(s.INT64)},
        coalition=True,
    )
)
