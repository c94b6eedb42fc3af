"""Scenario files (TOML): one source of truth for the launcher, the role processes and compose.

Every error names the file, the field and the reason, e.g.
``configs/x.toml: agents[2] (S3).a: must be > 0 (got -1.0)``; unknown keys are errors.

- :mod:`.schema`: the models, one per TOML section (the keys, types, defaults, ranges);
- :mod:`.validation`: :func:`load_scenario` / :func:`parse_scenario`, and the checks across
  sections (pairs, what partners can absorb, the coalition);
- :mod:`.errors`: :class:`FieldError`, :class:`ScenarioError` and the message format.

How a ``market.pairs`` spec becomes pairs is market logic: :mod:`privgrid.market.pairs`.
This package's public names are importable from here.
"""

from privgrid.market.pairs import Role
from privgrid.scenario.errors import FieldError, FieldValueError, ScenarioError
from privgrid.scenario.schema import (
    ID_PATTERN,
    LM_ID,
    MIN_EPSILON,
    MO_ID,
    RESERVED_IDS,
    AgentSection,
    AttackSection,
    LedgerSection,
    MarketOperatorSection,
    MarketSection,
    NearestPairs,
    NetworkSection,
    PairsSpec,
    PrivacyNoise,
    PrivacySection,
    Scenario,
    ScenarioInfo,
    StrictBool,
    TimeoutsSection,
)
from privgrid.scenario.validation import load_scenario, parse_scenario

__all__ = [
    "ID_PATTERN",
    "LM_ID",
    "MIN_EPSILON",
    "MO_ID",
    "RESERVED_IDS",
    "AgentSection",
    "AttackSection",
    "FieldError",
    "FieldValueError",
    "LedgerSection",
    "MarketOperatorSection",
    "MarketSection",
    "NearestPairs",
    "NetworkSection",
    "PairsSpec",
    "PrivacyNoise",
    "PrivacySection",
    "Role",
    "Scenario",
    "ScenarioError",
    "ScenarioInfo",
    "StrictBool",
    "TimeoutsSection",
    "load_scenario",
    "parse_scenario",
]
