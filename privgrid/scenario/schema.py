"""The scenario schema: every key of a scenario file, its type, default and range.

One pydantic model per TOML section; a model checks what it can see by itself (a value's
range, the keys of one section that depend on each other, ids unique across ``agents``).
Checks across sections that need derived structure (the pairs, what partners can absorb, the
coalition) are :mod:`.validation`'s; how errors read is :mod:`.errors`'s. Keeping the schema
alone keeps it readable as the reference of the file format (docs/scenarios.md) and easy to
extend: a new key is a field here, a row in tests/test_scenario_fields.py, and a line in the
docs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from privgrid.market.fixedpoint import RESOLUTION
from privgrid.market.pairs import Role, nearest_on_network, resolve_pairs
from privgrid.scenario.errors import PAIRS_TAG, FieldValueError

#: Participant ids reserved for the Line Manager and the Market Operator.
LM_ID = "LM"
MO_ID = "MO"
RESERVED_IDS = frozenset({LM_ID, MO_ID})

#: Ids travel in MQTT topics and file names: keep them to a safe alphabet.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"


#: Booleans must be TOML booleans: pydantic would otherwise read "yes" or "off" as one.
StrictBool = Annotated[bool, Field(strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioInfo(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    seed: int = 0


class NetworkSection(_Strict):
    case: str = "ieee14"
    line_limits: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = {}


class PrivacyNoise(_Strict):
    """I6 (protocol.md §8): ã = a(1 + U[−r, r]), b̃ = b + Laplace(σ_b),
    P̃max = Pmax − U[0, w], P̃min = Pmin + U[0, w]."""

    sigma_b: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    r: Annotated[float, Field(ge=0, lt=1)] = 0.0
    w: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0


class AgentSection(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    bus: int
    a: Annotated[float, Field(allow_inf_nan=False)]
    b: Annotated[float, Field(allow_inf_nan=False)]
    pmin: Annotated[float, Field(allow_inf_nan=False)]
    pmax: Annotated[float, Field(allow_inf_nan=False)]
    behaviour: Literal["honest", "lying-decryptor"] = "honest"
    #: I6 (protocol.md §8): the agent perturbs its own objective once per session.
    privacy_noise: PrivacyNoise | None = None
    #: lying-decryptor: report decrypted prices off by ``lie`` $/kW from round ``lie_from_round``.
    lie: Annotated[float, Field(allow_inf_nan=False)] = 0.05
    lie_from_round: Annotated[int, Field(ge=1)] = 1

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.upper() in RESERVED_IDS:
            raise ValueError(f"id {value!r} is reserved for the {value.upper()} process")
        return value

    @field_validator("a")
    @classmethod
    def _positive_a(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be > 0 (got {value}): the cost must be strictly convex")
        return value

    @model_validator(mode="after")
    def _behaviour_options(self) -> AgentSection:
        options = {"lie", "lie_from_round"} & self.model_fields_set
        if options and self.behaviour != "lying-decryptor":
            raise FieldValueError(
                sorted(options)[0],
                f"{sorted(options)} apply only to behaviour 'lying-decryptor' "
                f"(behaviour is {self.behaviour!r})",
            )
        if self.behaviour == "lying-decryptor" and self.lie == 0:
            raise FieldValueError("lie", "a lying-decryptor needs a non-zero lie")
        return self

    @model_validator(mode="after")
    def _bounds(self) -> AgentSection:
        if self.pmin > self.pmax:
            raise FieldValueError("pmin", f"pmin ({self.pmin}) must not exceed pmax ({self.pmax})")
        if self.pmin == 0 and self.pmax == 0:
            raise FieldValueError("pmax", "pmin = pmax = 0: the agent can neither sell nor buy")
        return self

    @property
    def role(self) -> Role:
        if self.pmin >= 0:
            return Role.SELLER
        if self.pmax <= 0:
            return Role.BUYER
        return Role.PROSUMER


class NearestPairs(_Strict):
    """``pairs = {nearest = k}``: each buyer trades with its k electrically nearest sellers.

    Distance is the DC Thevenin reactance between the two buses
    (:mod:`privgrid.grid.distance`); see :func:`privgrid.market.pairs.nearest_pairs` for ties,
    prosumers and sellers that no buyer picked.
    """

    nearest: int

    @field_validator("nearest")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be ≥ 1 (got {value}): every buyer needs a seller")
        return value


def _pairs_kind(value: Any) -> str | None:
    """Pick the one ``market.pairs`` form to validate against, so errors name only that one."""
    if isinstance(value, str):
        return f"{PAIRS_TAG}name"
    if isinstance(value, dict | NearestPairs):
        return f"{PAIRS_TAG}nearest"
    if isinstance(value, list | tuple):
        return f"{PAIRS_TAG}list"
    return None


PairsSpec = Annotated[
    Annotated[Literal["sellers-buyers"], Tag(f"{PAIRS_TAG}name")]
    | Annotated[list[tuple[str, str]], Tag(f"{PAIRS_TAG}list")]
    | Annotated[NearestPairs, Tag(f"{PAIRS_TAG}nearest")],
    Discriminator(
        _pairs_kind,
        custom_error_type="pairs_form",
        custom_error_message="must be 'sellers-buyers', a list of [seller, buyer] pairs "
        "or {nearest = k}",
    ),
]


#: The smallest stopping tolerance the fixed-point wire format allows (algorithm.md §7).
MIN_EPSILON = 100 * RESOLUTION


class MarketSection(_Strict):
    """Negotiation parameters. The step defaults are the fastest safe settings measured
    (docs/market.md "Step sizes", docs/performance.md); algorithm.md §5.1's published ones
    are ``steps = "fixed"``, ``tau = 1``, ``alpha = 0.2``, ``rho = 1``."""

    pairs: PairsSpec = "sellers-buyers"
    alpha: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.225
    beta: Annotated[float, Field(gt=0, lt=1)] = 0.25
    tau: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2.0
    rho: Annotated[float, Field(ge=1, lt=2)] = 1.5
    #: "adaptive": the MO rescales τ, α, σ during the run (docs/market.md "Step sizes");
    #: "fixed": constant steps and σ by algorithm.md §5.1 (the published method).
    steps: Literal["adaptive", "fixed"] = "adaptive"
    lambda0: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    epsilon_p: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-4
    epsilon_lambda: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-4
    max_rounds: Annotated[int, Field(ge=1)] = 5000

    @field_validator("epsilon_p", "epsilon_lambda")
    @classmethod
    def _above_resolution(cls, value: float) -> float:
        """algorithm.md §7: values cross processes rounded to q; keep q ≤ ε/100, else the
        rounding noise is as large as the stopping test and the run never stops."""
        if 0 < value < MIN_EPSILON:
            raise ValueError(
                f"must be ≥ {MIN_EPSILON:.3g} (got {value:g}): 100 × the fixed-point resolution "
                "q = 2^-32 of every value that crosses a process (algorithm.md §7: q ≤ ε/100)"
            )
        return value

    @model_validator(mode="after")
    def _convergence_condition(self) -> MarketSection:
        # Chambolle–Pock: τ·max(2α, 2σ‖G‖²) < 1 (adaptive steps; the sum τ(2α + 2σ‖G‖²) < 1
        # with fixed steps). The LM picks σ inside its part; what remains for the scenario is
        # τα < ½, which the adaptive steps' rescaling τ·2^e, α·2^-e keeps (docs/market.md).
        if self.tau * self.alpha >= 0.5:
            raise FieldValueError(
                "tau",
                f"tau * alpha = {self.tau * self.alpha:g} must be < 0.5 "
                "(convergence condition of algorithm.md §5.1)",
            )
        return self


class PrivacySection(_Strict):
    """How prices and private values travel (protocol.md)."""

    mode: Literal["plain", "paillier"] = "paillier"
    key_bits: Annotated[int, Field(ge=1024, le=8192)] = 2048
    insecure_test_keys: StrictBool = False
    #: What a failed check against a partner does: end the run naming the offender, or
    #: remove the pair from the market and go on.
    on_violation: Literal["abort", "drop_pair"] = "abort"
    #: I4 (protocol.md §4.4): after each round, check the pair's price invariant and that the
    #: partner's derived trade lies in its registered range. Stops price injection; free.
    pair_checks: StrictBool = True
    #: How trades reach the LM: "masked" (I5: masked aggregation, the LM learns line flows
    #: only), "paillier" (the published design: trades under the LM's key), "sealed".
    lm_leg: Literal["masked", "paillier", "sealed"] = "masked"
    #: Paillier mode: rounds' worth of precomputed obfuscators r^N and proof commitments per
    #: partner, filled before the session (offline) and topped up in idle time; 0: none
    #: (docs/performance.md says what they buy). Capped at ``market.max_rounds``.
    pool_rounds: Annotated[int, Field(ge=0)] = 0
    #: Paillier mode: check each decryption proof when it arrives ("every_round"), or check
    #: a partner's proofs together in idle time and before the final report ("batch"; a lie
    #: is still caught before anything is committed, but after the round it was told in).
    verify: Literal["every_round", "batch"] = "every_round"
    #: Paillier mode: worker threads per agent process for the heavy steps (decrypt + prove,
    #: a proof's check), so one pair's crypto does not wait for another's; 0: all on the
    #: event loop. One pool per process, shared by the agents it hosts (docs/performance.md).
    crypto_threads: Annotated[int, Field(ge=0, le=64)] = 0

    @model_validator(mode="after")
    def _leg_needs_keys(self) -> PrivacySection:
        if self.lm_leg == "paillier" and self.mode != "paillier":
            raise FieldValueError("lm_leg", "lm_leg = 'paillier' needs mode = 'paillier'")
        return self

    @model_validator(mode="after")
    def _key_size(self) -> PrivacySection:
        if self.key_bits < 2048 and not self.insecure_test_keys:
            raise FieldValueError(
                "key_bits",
                f"key_bits = {self.key_bits} is below 2048; set insecure_test_keys = true "
                "to allow small test keys",
            )
        return self


class TimeoutsSection(_Strict):
    """Seconds, and the failure policy. ``start``: every participant announced; ``round``: one
    round's messages; ``finish``: the final reports after the stop. ``on_missing``: what a
    participant leaving the run does — "abort" ends the run naming it; "wait" pauses the round
    clock until it rejoins from its checkpoint (``--state``), for at most ``missing`` seconds
    (docs/reliability.md)."""

    start: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    round: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    finish: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30.0
    on_missing: Literal["abort", "wait"] = "abort"
    missing: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 120.0


class AttackSection(_Strict):
    """The collusion experiment (protocol.md §9.1)."""

    target: str
    colluders: Annotated[list[str], Field(min_length=1)]
    strategy: Literal["passive", "probe"] = "passive"
    start_round: Annotated[int, Field(ge=1)] = 20
    ramp_step: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.25
    plateau_window: Annotated[int, Field(ge=2)] = 8
    plateau_tol: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-6
    hold_rounds: Annotated[int, Field(ge=2)] = 25
    probe_levels: Annotated[int, Field(ge=2)] = 4
    probe_prices: list[float] | None = None
    shares: Literal["compliant", "free"] = "compliant"
    release: StrictBool = True
    compare_honest: StrictBool = False
    coalition: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "coalition"


class MarketOperatorSection(_Strict):
    """The MO's behaviour: honest, or proposing a bad block (the Proof-of-Solution experiment)."""

    behaviour: Literal["honest", "tamper-trade", "tamper-price", "suboptimal"] = "honest"


class LedgerSection(_Strict):
    """Accept votes a block needs: ``"all"`` participants (default) or a number."""

    quorum: Literal["all"] | int = "all"

    @field_validator("quorum", mode="before")
    @classmethod
    def _quorum(cls, value: Any) -> Any:
        """One message for both forms (pydantic would report each branch of the union)."""
        if value == "all" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f"must be 'all' or a whole number ≥ 1 (got {value!r})")


class Scenario(_Strict):
    """A validated scenario. ``source`` is the file it came from (for paths and messages)."""

    scenario: ScenarioInfo
    network: NetworkSection = NetworkSection()
    agents: Annotated[list[AgentSection], Field(min_length=2)]
    market: MarketSection = MarketSection()
    privacy: PrivacySection = PrivacySection()
    timeouts: TimeoutsSection = TimeoutsSection()
    market_operator: MarketOperatorSection = MarketOperatorSection()
    ledger: LedgerSection = LedgerSection()
    attack: AttackSection | None = None
    source: Path = Field(default=Path("<memory>"), exclude=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> Scenario:
        seen: set[str] = set()
        for i, agent in enumerate(self.agents):
            if agent.id in seen:
                raise FieldValueError(f"agents.{i}.id", f"duplicate agent id {agent.id!r}")
            seen.add(agent.id)
        return self

    @model_validator(mode="after")
    def _lies_need_proofs(self) -> Scenario:
        # Plain mode has no decryption to lie about: the agent would silently stay honest.
        for i, agent in enumerate(self.agents):
            if agent.behaviour == "lying-decryptor" and self.privacy.mode != "paillier":
                raise FieldValueError(
                    f"agents.{i}.behaviour",
                    "behaviour 'lying-decryptor' needs privacy.mode = 'paillier' "
                    f"(mode is {self.privacy.mode!r}: there is no decryption to lie about)",
                )
        return self

    # --- derived, public structure -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def agent_ids(self) -> list[str]:
        return [a.id for a in self.agents]

    def agent(self, agent_id: str) -> AgentSection:
        for a in self.agents:
            if a.id == agent_id:
                return a
        raise KeyError(agent_id)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Trading pairs in canonical order (see :mod:`privgrid.market.pairs`).

        ``{nearest = k}`` needs the network: it is loaded here (the shipped data of a named
        case loads in milliseconds) and the result is cached per agent set and k.
        """
        spec = self.market.pairs
        members = tuple((a.id, a.bus, a.role) for a in self.agents)
        if isinstance(spec, NearestPairs):
            case, base_dir = self.network.case, self.source.parent
            return list(nearest_on_network(case, base_dir, members, spec.nearest))
        return resolve_pairs(members, spec)
