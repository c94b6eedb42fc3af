"""``privgrid keys init``: the pinned roster and one private identity key per participant.

Writes ``DIR/roster.json`` (id → Ed25519 public key) and ``DIR/<id>.key`` (mode 0600) for every
agent, the LM and the MO. Existing keys that match the roster are kept, so regenerating a
compose file does not rotate identities; ``force`` makes new ones.

With TLS (``privgrid keys init --tls``) also ``DIR/tls/``: a run CA, the broker's certificate
and one client certificate per participant and for the ``monitor`` account
(:mod:`privgrid.crypto.tls`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from privgrid.broker.config import MONITOR
from privgrid.crypto.errors import IdentityError
from privgrid.crypto.identity import Identity, Roster
from privgrid.crypto.tls import DEFAULT_BROKER_NAMES, DEFAULT_DAYS, TLS_DIR, TlsSet, init_tls
from privgrid.scenario import LM_ID, MO_ID, Scenario


def participants(scenario: Scenario) -> list[str]:
    return [*scenario.agent_ids, LM_ID, MO_ID]


def tls_accounts(scenario: Scenario) -> list[str]:
    """Who gets a client certificate: every participant and the read-only ``monitor``."""
    return [*participants(scenario), MONITOR]


def init_run_tls(
    scenario: Scenario,
    folder: Path,
    *,
    broker_names: Sequence[str] = DEFAULT_BROKER_NAMES,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> TlsSet:
    """The run's TLS set in ``folder/tls`` (:func:`privgrid.crypto.tls.init_tls`)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return init_tls(
        folder / TLS_DIR, tls_accounts(scenario), broker_names=broker_names, days=days, force=force
    )


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
