"""A message body as a frozen dataclass whose fields carry their own wire schema.

One way in and one way out: :meth:`Body.from_body` checks a decoded msgpack map against the
schema of the fields (:mod:`privgrid.wire.schema`, strict: exact key set, no coercion) and
builds the dataclass; :meth:`Body.to_body` gives the map back for msgpack. Lists travel as
msgpack arrays and live in the dataclass as tuples (immutable); optional fields are ``None``
when absent and left out of the map, so ``to_body(from_body(m)) == m`` for every map the
schema accepts, and the bytes on the wire are those of the map (field order = key order).

Each field declares its schema with :func:`wire`; :func:`privgrid.wire.kinds.message` makes a
class a dataclass and registers its kind, so the body schema and the routing table have one
source of truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, Field, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Self, overload

from privgrid.wire import schema as s

if TYPE_CHECKING:
    from privgrid.wire.kinds import Kind

_SPEC = "wire"


@overload
def wire(spec: s.Spec) -> Any: ...
@overload
def wire(spec: s.Spec, *, default: None) -> Any: ...
def wire(spec: s.Spec, *, default: Any = MISSING) -> Any:
    """A body field checked by ``spec``; ``default=None`` makes it optional on the wire."""
    if default is not MISSING and default is not None:
        raise ValueError("an optional body field defaults to None (absent from the map)")
    checked = s.optional(spec) if default is None else spec
    return field(default=default, metadata={_SPEC: checked})


def _freeze(value: Any) -> Any:
    """msgpack arrays → tuples, recursively (maps stay maps)."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """Tuples → lists, recursively: the form the schema checks and msgpack writes."""
    if isinstance(value, list | tuple):
        return [_thaw(item) for item in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


class Body:
    """Base of every message body (a frozen dataclass made by :func:`~.kinds.message`)."""

    #: The kind this body travels as (set when the class is registered).
    KIND: ClassVar[Kind]

    @classmethod
    def _fields(cls) -> tuple[Field[Any], ...]:
        return fields(cls)  # type: ignore[arg-type]  # a Body subclass is always a dataclass

    @classmethod
    def schema(cls) -> dict[str, s.Spec]:
        """Field name → its check, in field order (the table :func:`schema.check` uses)."""
        return {f.name: f.metadata[_SPEC] for f in cls._fields()}

    def to_body(self) -> dict[str, Any]:
        """The msgpack map of this body (optional fields that are ``None`` left out)."""
        out: dict[str, Any] = {}
        for f in self._fields():
            value = getattr(self, f.name)
            if value is None and f.metadata[_SPEC].optional:
                continue
            out[f.name] = _thaw(value)
        return out

    @classmethod
    def from_body(cls, body: Any, *, sender: str | None = None) -> Self:
        """Check a decoded map against the schema and build the body.

        Raises:
            Rejected: ``body`` is not a map, lacks or adds a field, or a value fails its check
                (the reason names the kind and the field; ``sender`` is who sent it).
        """
        checked = s.check(body, cls.schema(), kind=str(cls.KIND), sender=sender)
        return cls(**{name: _freeze(value) for name, value in checked.items()})
