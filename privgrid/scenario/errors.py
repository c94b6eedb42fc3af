"""Scenario errors and their one message format: ``file: field: reason``.

Every failure a scenario can have — a pydantic check, a cross-section check, a check that
needs the network (:mod:`privgrid.market.setup`) — becomes a :class:`FieldError`, so a user
sees one shape of message, e.g. ``configs/x.toml: agents[2] (S3).a: must be > 0 (got -1.0)``.
This module owns that shape: the error types and the translation of pydantic's error list
(locations like ``("agents", 2, "a")``, messages naming Python types) into TOML terms. It is
apart from the schema so the schema reads as the list of keys it is, and so code outside this
package can raise the same errors without importing the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

#: Tags of the ``market.pairs`` union (:data:`privgrid.scenario.schema.PairsSpec`): pydantic
#: puts the tag of the branch in an error's location; the rendering leaves it out.
PAIRS_TAG = "pairs:"


@dataclass(frozen=True)
class FieldError:
    """One validation failure: which field of which file, and why."""

    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.reason}"


class ScenarioError(ValueError):
    """A scenario file is invalid. ``errors`` lists every failure found."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    @classmethod
    def single(cls, file: str | Path, field: str, reason: str) -> ScenarioError:
        return cls([FieldError(str(file), field, reason)])


class FieldValueError(ValueError):
    """Raised by a model-level check to name the field it is about (pydantic would report the
    section only): :func:`pydantic_errors` appends ``field`` to the error's location."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def loc_to_field(loc: Sequence[int | str], data: dict[str, Any]) -> str:
    """Render a pydantic error location as ``agents[2] (S3).a`` — index plus the agent's id."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            try:
                node = node[item]
                if isinstance(node, dict) and "id" in node:
                    label += f" ({node['id']})"
            except (IndexError, KeyError, TypeError):
                node = None
            if parts:
                parts[-1] += label
            else:
                parts.append(label)
        else:
            if item.startswith(("function-after", PAIRS_TAG)) or item in {
                "tuple[str, str]",
                "list[...]",
            }:
                continue
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "<top level>"


def _shown(value: Any) -> bool:
    """Worth quoting in a message: a short scalar (not a whole table or list)."""
    return isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) < 60)


def pydantic_errors(exc: ValidationError, data: dict[str, Any], file: str) -> list[FieldError]:
    """pydantic's errors for the TOML document ``data`` of ``file``, one line per field."""
    errors = []
    for err in exc.errors():
        reason = err["msg"].removeprefix("Value error, ")
        loc = list(err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, FieldValueError):  # a model check that knows its field
            loc += [int(x) if x.isdigit() else x for x in cause.field.split(".")]
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        elif err["type"] == "missing":
            reason = "required field is missing"
        else:
            if err["type"] == "model_type":  # pydantic would name our class, not a TOML form
                reason = "must be a table"
            elif err["type"] == "list_type" and loc == ["agents"]:
                reason = "must be an array of tables ([[agents]])"
            if "(got " not in reason and _shown(err.get("input")):
                reason += f" (got {err['input']!r})"
        errors.append(FieldError(file, loc_to_field(loc, data), reason))
    # A union field reports one error per branch; keep one line per field.
    unique = {(e.field, e.reason): e for e in errors}
    return list(unique.values())
