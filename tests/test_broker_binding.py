"""Client ids are bound to broker accounts: no account can take over another's MQTT session.

The attack (issue 14, item 5): client ids are predictable (``pg-<sha256(run/ID)[:12]>-ID``), and
MQTT gives a session to whoever connects with its id — the broker disconnects the holder, and
a persistent session with its queued QoS 1 messages moves to the newcomer. S1 connecting with
B1's id for 3 s from round 5 cut B1 off 10 times and the run never finished.

The fix, on both brokers (privgrid/broker/binding.py): Mosquitto replaces every client id with
the account's name (``use_username_as_clientid``), so the attacker only ever reaches its own
session; the embedded broker refuses the connection before it can touch any session. Real
brokers started as ``privgrid run`` starts them, real clients, and a real grid (plain mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from privgrid.broker.binding import bound_client_ids, refusal
from privgrid.broker.config import MONITOR, BrokerUsers, mosquitto_conf
from privgrid.broker.local import LocalBroker, start_broker
from privgrid.market.setup import build_setup
from privgrid.scenario import MO_ID, load_scenario
from privgrid.solve import solve
from privgrid.wire import topics
from privgrid.wire.session import NO_DELAY, BrokerUrl, MqttSession, client_id
from tests.grid_harness import Grid

pytestmark = pytest.mark.timeout(300)
RUN = "binding-test"
BROKERS = ["mosquitto", "embedded"]
log = logging.getLogger("test.binding")


# --- the rule ---------------------------------------------------------------------------------
def test_the_binding_gives_each_participant_one_client_id_and_observers_only_free_ones():
    users = BrokerUsers.generate(["S1", "B1"])
    bound = bound_client_ids(RUN, users)
    assert bound == {"S1": client_id(RUN, "S1"), "B1": client_id(RUN, "B1")}
    assert refusal("B1", bound["B1"], bound) is None
    assert "must use its own client id" in str(refusal("S1", bound["B1"], bound))
    assert "must use its own client id" in str(refusal("S1", "anything-else", bound))
    assert "belongs to account B1" in str(refusal(MONITOR, bound["B1"], bound))
    assert refusal(MONITOR, "dashboard-1", bound) is None
    assert refusal(None, bound["B1"], bound) == "no account"


def test_mosquittos_listener_replaces_every_client_id_with_the_account_name():
    conf = mosquitto_conf(port=1883, bind="0.0.0.0", config_dir="/c", data_dir="/d")
    lines = [line.strip() for line in conf.splitlines() if not line.startswith("#")]
    listener = lines.index("listener 1883 0.0.0.0")
    assert "use_username_as_clientid true" in lines[listener:]  # a listener setting


# --- a real broker, real clients ----------------------------------------------------------------
@dataclass
class Broker:
    local: LocalBroker
    users: BrokerUsers

    def url(self, user: str, password: str | None = None) -> BrokerUrl:
        secret = self.users.passwords[user] if password is None else password
        return BrokerUrl(self.local.host, self.local.port, user, secret)

    def client(
        self, user: str, identifier: str, *, password: str | None = None, clean: bool = False
    ) -> aiomqtt.Client:
        url = self.url(user, password)
        return aiomqtt.Client(
            url.host,
            url.port,
            username=url.username,
            password=url.password,
            identifier=identifier,
            clean_session=clean,
            socket_options=NO_DELAY,
        )

    def session(self, user: str) -> MqttSession:
        """``user``'s product session: its own client id, persistent, its inbox."""
        inbox = [topics.inbox_filter(RUN, user)]
        return MqttSession(self.url(user), client_id(RUN, user), inbox, log, max_backoff=0.5)

    @property
    def log(self) -> str:
        return self.local.log_path.read_text(errors="replace")


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    users = BrokerUsers.generate(["S1", "B1", "B2"])
    local = start_broker(tmp_path / "broker", RUN, users, prefer=request.param)
    assert local.kind == request.param
    yield Broker(local, users)
    local.stop()


@dataclass
class Attempt:
    """One connection with someone else's client id: refused, or what it received."""

    refused: str | None = None
    received: list[bytes] | None = None


@contextlib.asynccontextmanager
async def attack(client: aiomqtt.Client) -> AsyncIterator[Attempt]:
    """Connect ``client`` and collect whatever the broker delivers to it until the block ends."""
    attempt = Attempt()
    try:
        async with client:
            attempt.received = []

            async def collect() -> None:
                async for message in client.messages:
                    attempt.received.append(bytes(message.payload))  # type: ignore[union-attr]

            task = asyncio.create_task(collect())
            try:
                yield attempt
            finally:
                task.cancel()
    except aiomqtt.MqttError as exc:
        if attempt.received is not None:
            raise  # lost after connecting: not a refusal
        attempt.refused = str(exc)
        yield attempt


async def takeover_attempts(b: Broker) -> dict[str, object]:
    b1_id = client_id(RUN, "B1")
    share = topics.direct(RUN, "B1", "B2", "share")
    victim = b.session("B1")
    await victim.start(timeout=60)
    attempts: dict[str, Attempt] = {}
    tries = {
        "S1 persistent": b.client("S1", b1_id),
        "S1 clean": b.client("S1", b1_id, clean=True),
        "monitor": b.client(MONITOR, b1_id),
        "B1 wrong password": b.client("B1", b1_id, password="not-the-password"),
    }
    for name, client in tries.items():
        async with attack(client) as attempt:
            attempts[name] = attempt
    async with b.client("B2", client_id(RUN, "B2"), clean=True) as b2:
        await b2.publish(share, b"live", qos=1)
        live = await asyncio.wait_for(victim.inbox.get(), 60)
        live_connects = victim.connects
        await victim.close()  # B1 away: its persistent session queues what comes now
        for i in range(3):
            await b2.publish(share, f"queued-{i}".encode(), qos=1)
        async with attack(b.client("S1", b1_id)) as thief:
            back = b.session("B1")
            await back.start(timeout=60)
            queued = [(await asyncio.wait_for(back.inbox.get(), 60))[1] for _ in range(3)]
            await back.close()
    return {
        "attempts": attempts,
        "live": live[1],
        "live connects": live_connects,
        "queued": queued,
        "thief": thief,
    }


def test_no_account_can_take_over_a_participants_session_or_its_queued_messages(broker: Broker):
    seen = asyncio.run(takeover_attempts(broker))
    attempts = seen["attempts"]
    assert isinstance(attempts, dict)
    # B1 was never cut off, and its persistent session kept the messages queued for it.
    assert seen["live"] == b"live" and seen["live connects"] == 1
    assert seen["queued"] == [b"queued-0", b"queued-1", b"queued-2"]
    thief = seen["thief"]
    assert isinstance(thief, Attempt) and not thief.received
    assert attempts["B1 wrong password"].refused is not None
    if broker.local.kind == "embedded":  # refused before the broker looked at any session
        for name, attempt in attempts.items():
            assert attempt.refused is not None and "authori" in attempt.refused.lower(), name
        assert thief.refused is not None
        assert "account S1 must use its own client id" in broker.log
        assert "client id pg-" in broker.log and "belongs to account B1, not monitor" in broker.log
    else:  # accepted, but as the attacker's own account
        for name in ("S1 persistent", "S1 clean", "monitor"):
            assert attempts[name].refused is None and attempts[name].received == [], name
        assert re.search(r"as S1 \(.*u'S1'\)", broker.log)
        assert re.search(r"as monitor \(.*u'monitor'\)", broker.log)
        assert re.search(r"as B1 \(.*u'B1'\)", broker.log)  # B1's own session: "B1"
        assert "as pg-" not in broker.log  # no connection kept the id it asked for


# --- a real grid --------------------------------------------------------------------------------
ATTEMPTS = 10


async def hammer(grid: Grid, attacker: str, victim: str) -> list[Attempt]:
    """``attacker`` connects with its own password and ``victim``'s client id, ``ATTEMPTS``
    times, each connection held 0.3 s (the attack of the issue: about 3 s)."""
    outcomes = []
    for _ in range(ATTEMPTS):
        client = grid.client(attacker, client_id(grid.run, victim), clean_session=False)
        async with attack(client) as attempt:
            if attempt.refused is None:
                await asyncio.sleep(0.3)  # holding the stolen session is the attack, no wait
        outcomes.append(attempt)
    return outcomes


@pytest.mark.parametrize(
    ("broker", "attacker"),
    [("mosquitto", MONITOR), ("embedded", "S1")],
    ids=["mosquitto-monitor", "embedded-S1"],
)
def test_a_takeover_attempt_on_b1_from_round_5_leaves_b1_connected_and_the_result_unchanged(
    grid_factory, broker: str, attacker: str
):
    """On Mosquitto the attacker is ``monitor``: a participant's second client with its own
    account would replace that participant's own connection (the binding makes each account
    one session), which only the participant itself can do to itself — and a participant can
    always stall a run by leaving it. The embedded broker refuses S1 outright."""
    grid = grid_factory(privacy={"mode": "plain"}, broker=broker)
    grid.start_all()
    grid.wait_for_round(5, timeout=180)
    outcomes = asyncio.run(hammer(grid, attacker, "B1"))
    assert grid.wait(MO_ID, timeout=240) == 0, grid.log(MO_ID)[-2000:]
    if broker == "embedded":
        assert all(o.refused and "authori" in o.refused.lower() for o in outcomes), outcomes
    else:
        assert all(o.refused is None and o.received == [] for o in outcomes), outcomes
    for pid in ("B1", attacker if attacker != MONITOR else "S1"):
        assert "lost the broker" not in grid.log(pid), pid
    reference = solve(build_setup(load_scenario(grid.scenario_file)))
    results = grid.results()
    assert results["converged"] and results["rounds"] == reference["rounds"]
    for ours, theirs in zip(results["trades"], reference["trades"], strict=True):
        assert ours["power"] == theirs["power"] and ours["price"] == theirs["price"]
    assert results["error"] is None and results["ledger"]["committed"]
