"""``privgrid keys init``: the pinned roster and one private identity key per participant.

Writes ``DIR/roster.json`` (id → Ed25519 public key) and ``DIR/<id>.key`` (mode 0600) for every
agent, the LM and the MO. Existing keys that match the roster are kept, so regenerating a
compose file does not rotate identities; ``force`` makes new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from privgrid.crypto.errors import IdentityError
from privgrid.crypto.identity import Identity, Roster
from privgrid.scenario import LM_ID, MO_ID, Scenario


def participants(scenario: Scenario) -> list[str]:
    return [*scenario.agent_ids, LM_ID, MO_ID]


def init_keys(scenario: Scenario, folder: Path, *, force: bool = False) -> Roster:
    return init_participant_keys(participants(scenario), folder, force=force)


def init_participant_keys(ids: Sequence[str], folder: Path, *, force: bool = False) -> Roster:
    """:func:`init_keys` for a list of participant ids (a day's agents, the LM and the MO)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    roster_path = folder / "roster.json"
    old = Roster.load(roster_path) if roster_path.exists() and not force else Roster()
    roster = Roster()
    for pid in ids:
        key_path = folder / f"{pid}.key"
        identity = None
        if key_path.exists() and not force and pid in old:
            try:
                identity = Identity.load(key_path)
                old.check_identity(pid, identity)
            except IdentityError:
                identity = None
        if identity is None:
            key_path.unlink(missing_ok=True)
            identity = Identity.generate()
            identity.save(key_path)
        roster.add(pid, identity.public_b64)
    roster.save(roster_path)
    return roster
