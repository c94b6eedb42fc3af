"""One session per account: a broker account's MQTT client id can be used by that account only.

Why: MQTT lets a new connection with a client id take over the session of that id — the broker
disconnects the holder, and a persistent session with its queued QoS 1 messages moves to the
newcomer. Our client ids are predictable (``pg-<sha256(run/ID)[:12]>-ID``,
:func:`privgrid.wire.session.client_id`), so without a binding any account holder could cut a
participant off and swallow its messages, and the run would stall (issue 14, item 5).

The rule, on each broker:

- **Mosquitto** (``mosquitto.conf.template``): ``use_username_as_clientid true`` — the broker
  replaces whatever client id a connection asks for with its username, so an account only
  ever reaches its own session. A second client of one account replaces the first; observers
  that need several clients at once need several accounts.
- **Embedded broker** (amqtt): a participant account must connect with its own client id and
  no other; an observer account (``monitor``, ``dashboard``, or a test's account) may use any
  client id that is not a participant's. A connection breaking the rule is refused (CONNACK "not
  authorised") before it can touch any session (:mod:`privgrid.broker.embedded`).

Both leave every participant's session to the participant alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from privgrid.broker.config import OBSERVERS, BrokerUsers
from privgrid.wire.session import client_id


def bound_client_ids(run: str, users: BrokerUsers) -> dict[str, str]:
    """Participant account → the one client id it may use in ``run`` (observers are free)."""
    return {user: client_id(run, user) for user in users.passwords if user not in OBSERVERS}


def refusal(username: str | None, requested: str | None, bound: Mapping[str, str]) -> str | None:
    """Why a connection of account ``username`` asking for client id ``requested`` is refused,
    or ``None`` if the binding allows it (the password is checked elsewhere)."""
    if not username:
        return "no account"
    own = bound.get(username)
    if own is not None and requested != own:
        return f"account {username} must use its own client id {own}, not {requested}"
    if own is None and requested in bound.values():
        holder = next(user for user, cid in bound.items() if cid == requested)
        return f"client id {requested} belongs to account {holder}, not {username}"
    return None
