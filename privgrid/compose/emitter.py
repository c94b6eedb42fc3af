"""A small YAML emitter for compose files, written by hand so that the output is byte-for-byte
deterministic.

The checked-in compose files are compared byte for byte with what the generator makes
(tests/test_compose.py), and a reader diffs them in review: the output must not depend on a
YAML library's version or defaults. Block style throughout, flow lists for commands, quotes
only where YAML would otherwise read a value as something else ("on", "1883", "${X:-y}").
Apart from the compose document because it knows nothing of Compose: plain dicts, lists,
strings, numbers and booleans in, text out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z_/.][A-Za-z0-9_./-]*$")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED:
            return value
        return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _flow(items: Sequence[object]) -> str:
    return "[" + ", ".join(json.dumps(i) if isinstance(i, str) else _scalar(i) for i in items) + "]"


#: Lists written one item a line (paths read better so); other short lists are flow style.
_BLOCK_LISTS = {"volumes"}


def _yaml_lines(data: Mapping[str, Any], indent: int = 0) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for key, value in data.items():
        head = f"{pad}{_scalar(key)}:"
        if isinstance(value, Mapping):
            lines += [head, *_yaml_lines(value, indent + 1)] if value else [f"{head} {{}}"]
        elif isinstance(value, list):
            scalars = all(not isinstance(v, Mapping | list) for v in value)
            flow = f"{head} {_flow(value)}" if scalars else ""
            if value and scalars and key not in _BLOCK_LISTS and len(flow) <= 100:
                lines.append(flow)
            else:
                lines.append(head)
                for item in value:
                    if isinstance(item, Mapping):  # "- key: value" and the rest below it
                        first, *rest = _yaml_lines(item)
                        lines += [f"{pad}  - {first}", *(f"{pad}    {line}" for line in rest)]
                    else:
                        lines.append(f"{pad}  - {_scalar(item)}")
        else:
            lines.append(f"{head} {_scalar(value)}")
    return lines


def to_yaml(document: Mapping[str, Any], header: str = "") -> str:
    """Block-style YAML for compose: flow lists for commands, quotes only where needed."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    body = _yaml_lines(document)
    spaced: list[str] = []
    for line in body:
        depth = len(line) - len(line.lstrip(" "))
        previous = len(spaced[-1]) - len(spaced[-1].lstrip(" ")) if spaced else 0
        if spaced and (depth == 0 or (depth == 2 and previous > 2)):
            spaced.append("")  # a blank line between sections and between services
        spaced.append(line)
    return "\n".join(lines + spaced) + "\n"
