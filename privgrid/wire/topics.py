"""MQTT topic names (architecture.md §3). One place builds them and one place parses them.

- ``privgrid/<run>/to/<recipient>/<sender>/<kind>`` — direct messages
- ``privgrid/<run>/bcast/<sender>/<kind>`` — broadcasts (round clock, departures)
- ``privgrid/<run>/keys/<participant>`` — retained, signed key announcements
- ``privgrid/<run>/collusion/<coalition>`` — colluders only (the attack experiment)

The broker's ACL lets a participant publish only with its own id in the sender slot and read
only its own inbox, so the topic is part of the authentication story; receivers still check
that the signed envelope says the same as the topic.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "privgrid"
BROADCAST = "*"


@dataclass(frozen=True)
class Topic:
    """A parsed topic: which run, who sends to whom, what kind."""

    run: str
    sender: str
    recipient: str  # BROADCAST for broadcasts and key announcements
    kind: str


def direct(run: str, recipient: str, sender: str, kind: str) -> str:
    return f"{PREFIX}/{run}/to/{recipient}/{sender}/{kind}"


def broadcast(run: str, sender: str, kind: str) -> str:
    return f"{PREFIX}/{run}/bcast/{sender}/{kind}"


def keys(run: str, participant: str) -> str:
    return f"{PREFIX}/{run}/keys/{participant}"


def collusion(run: str, coalition: str) -> str:
    return f"{PREFIX}/{run}/collusion/{coalition}"


def inbox_filter(run: str, me: str) -> str:
    return f"{PREFIX}/{run}/to/{me}/#"


def broadcast_filter(run: str, sender: str = "+") -> str:
    """Broadcasts of one sender, or of everyone."""
    return f"{PREFIX}/{run}/bcast/{sender}/+"


def keys_filter(run: str) -> str:
    return f"{PREFIX}/{run}/keys/#"


def run_filter(run: str) -> str:
    return f"{PREFIX}/{run}/#"


def parse(topic: str) -> Topic | None:
    """Parse a privgrid topic; ``None`` for anything that is not one of ours."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != PREFIX:
        return None
    run, channel, rest = parts[1], parts[2], parts[3:]
    if channel == "to" and len(rest) == 3:
        return Topic(run, sender=rest[1], recipient=rest[0], kind=rest[2])
    if channel == "bcast" and len(rest) == 2:
        return Topic(run, sender=rest[0], recipient=BROADCAST, kind=rest[1])
    if channel == "keys" and len(rest) == 1:
        return Topic(run, sender=rest[0], recipient=BROADCAST, kind="key")
    if channel == "collusion" and len(rest) == 1:
        return Topic(run, sender="", recipient=BROADCAST, kind="collusion")
    return None
