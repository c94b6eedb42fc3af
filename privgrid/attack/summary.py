"""Text of the end-of-run attack summary (pure, no I/O: the console prints it, tests read it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def detection_summary(detection: Mapping[str, Any]) -> str:
    """One line on the pair checks for the end-of-run summary.

    A run where no check fired has no first round; the line says "none" rather than
    printing the missing round.
    """
    failures = detection["pair_check_failures"]
    if not failures:
        return "pair-check failures: none"
    first = detection.get("first_round")
    where = "" if first is None else f" (first in round {first})"
    return f"pair-check failures: {failures}{where}"
