"""TLS to a real Mosquitto: client certificates are the logins, and bad ones are refused.

Mosquitto is started as ``privgrid run --tls`` starts it (TLS only, ``require_certificate``,
``use_identity_as_username``); the clients are the product's own :class:`MqttSession` with
certificates made by ``privgrid.crypto.tls``. The refusals go around the participant's
pre-flight check (tests/test_tls_certificates.py) on purpose: here the broker is the judge, and
the participant's log must say what it refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from privgrid.broker.config import BrokerUsers
from privgrid.broker.local import LocalBroker, start_broker
from privgrid.crypto import tls
from privgrid.wire import topics
from privgrid.wire.session import (
    NO_DELAY,
    BrokerRefusedError,
    BrokerUrl,
    MqttSession,
    client_id,
)

pytestmark = pytest.mark.timeout(120)
RUN = "tls-test"


@dataclass
class TlsBroker:
    local: LocalBroker
    folder: Path  # the run's tls/ folder (CA key included, to make bad certificates)

    def url(self, host: str | None = None) -> BrokerUrl:
        return BrokerUrl.parse(f"mqtts://{host or self.local.host}:{self.local.port}")

    def session(
        self,
        account: str,
        log: logging.Logger,
        files: tls.TlsFiles | None = None,
        *,
        host: str | None = None,
        identifier: str | None = None,
    ) -> MqttSession:
        files = files or tls.TlsFiles.in_dir(self.folder, account)
        return MqttSession(
            self.url(host).with_tls(files),
            identifier or client_id(RUN, account),
            [topics.inbox_filter(RUN, account)],
            log,
            max_backoff=0.5,
        )

    @property
    def log(self) -> str:
        return self.local.log_path.read_text(errors="replace")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TlsBroker]:
    assert shutil.which("mosquitto"), "Debian's mosquitto must be installed for this test"
    folder = tmp_path / "tls"
    tls.init_tls(folder, ["S1", "B1", "B2", "monitor"])
    users = BrokerUsers.generate(["S1", "B1", "B2"])
    local = start_broker(tmp_path / "broker", RUN, users, prefer="mosquitto", tls=folder)
    assert local.tls and local.url("S1") == f"mqtts://127.0.0.1:{local.port}"
    yield TlsBroker(local, folder)
    local.stop()


def participant_log(name: str) -> logging.Logger:
    return logging.getLogger(f"test.tls.{name}")


async def receive(session: MqttSession, timeout: float = 10) -> tuple[str, bytes]:
    return await asyncio.wait_for(session.inbox.get(), timeout)


# --- the configuration ----------------------------------------------------------------------------
def test_the_broker_has_one_listener_speaking_tls_only_and_no_password_file(broker: TlsBroker):
    conf = (broker.local.log_path.parent / "mosquitto.conf").read_text()
    lines = [line.strip() for line in conf.splitlines() if line and not line.startswith("#")]
    assert [line for line in lines if line.startswith("listener")] == [
        f"listener {broker.local.port} 127.0.0.1"
    ]
    for setting in (
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
        f"cafile {broker.folder.resolve() / 'ca.pem'}",
    ):
        assert setting in lines, setting
    assert not any(line.startswith("password_file") for line in lines)
    assert not (broker.local.log_path.parent / "passwd").exists()


def test_plain_mqtt_with_a_password_gets_nowhere_on_the_tls_port(broker: TlsBroker):
    async def plain() -> str:
        client = aiomqtt.Client(
            "127.0.0.1",
            broker.local.port,
            username="S1",
            password="anything",
            identifier="plain",
            timeout=3,
            socket_options=NO_DELAY,
        )
        with pytest.raises(aiomqtt.MqttError) as caught:
            async with client:
                pass
        return str(caught.value)

    asyncio.run(plain())
    assert "New client connected" not in broker.log


# --- certificates as logins -----------------------------------------------------------------------
def test_participants_log_in_with_their_certificates_and_the_acl_holds(broker: TlsBroker):
    """B2 sends B1 a message over TLS; B1 gets it. The broker names each client by its
    certificate's account (``u'B1'``), and the client id it asked for is replaced by it."""

    async def scenario() -> tuple[str, bytes]:
        b1 = broker.session("B1", participant_log("B1"))
        b2 = broker.session("B2", participant_log("B2"))
        await b1.start(30)
        await b2.start(30)
        try:
            await b2.publish(topics.direct(RUN, "B1", "B2", "share"), b"from B2")
            # B2 writing in S1's name is outside its ACL: dropped by the broker.
            await b2.publish(topics.direct(RUN, "B1", "S1", "share"), b"forged")
            got = await receive(b1)
            with pytest.raises(TimeoutError):
                await receive(b1, timeout=1.5)
            return got
        finally:
            await b1.close()
            await b2.close()

    topic, payload = asyncio.run(scenario())
    assert (topic, payload) == (topics.direct(RUN, "B1", "B2", "share"), b"from B2")
    assert re.search(r"New client connected from 127\.0\.0\.1:\d+ as B1 \(.*u'B1'\)", broker.log)
    assert re.search(r"New client connected from 127\.0\.0\.1:\d+ as B2 \(.*u'B2'\)", broker.log)


def test_a_certificate_cannot_take_over_another_accounts_session(broker: TlsBroker):
    """S1 (its own certificate) asks for B1's client id, while B1 is connected and again
    while B1 is away with three messages queued: Mosquitto replaces the id with S1's account,
    so B1 is never cut off, S1 gets none of B1's messages, and B1 gets all of them when it
    returns — the binding of tests/test_broker_binding.py, under TLS."""
    share = topics.direct(RUN, "B1", "B2", "share")
    barrier = topics.direct(RUN, "S1", "B2", "share")  # B2 → S1, after what B2 sent B1

    def intruder() -> MqttSession:
        session = broker.session("S1", participant_log("S1"), identifier=client_id(RUN, "B1"))
        session.subscriptions = [topics.inbox_filter(RUN, "B1"), topics.inbox_filter(RUN, "S1")]
        return session

    async def got_nothing_of_b1s(thief: MqttSession, b2: MqttSession) -> list[bytes]:
        """What the intruder got before B2's next message to S1 (the broker delivers one
        sender's messages in order, so anything of B1's would have come first)."""
        await b2.publish(barrier, b"barrier")
        seen = []
        while True:
            topic, payload = await receive(thief)
            if topic == barrier:
                return seen
            seen.append(payload)

    async def scenario() -> tuple[int, list[bytes], list[bytes], list[bytes]]:
        b1 = broker.session("B1", participant_log("B1"))
        b2 = broker.session("B2", participant_log("B2"))
        await b1.start(30)
        await b2.start(30)
        thief = intruder()
        await thief.start(30)
        try:
            await b2.publish(share, b"live")
            live = [(await receive(b1))[1]]
            stolen_live = await got_nothing_of_b1s(thief, b2)
            connects = b1.connects  # 1: never cut off
        finally:
            await thief.close()
            await b1.close()  # away, its persistent session keeps what comes
        try:
            for n in range(3):
                await b2.publish(share, f"queued {n}".encode())
            thief = intruder()
            await thief.start(30)
            stolen_queued = await got_nothing_of_b1s(thief, b2)
            await thief.close()
            back = broker.session("B1", participant_log("B1"))
            await back.start(30)
            queued = [(await receive(back))[1] for _ in range(3)]
            await back.close()
        finally:
            await b2.close()
        return connects, live + queued, stolen_live, stolen_queued

    connects, received, stolen_live, stolen_queued = asyncio.run(scenario())
    assert connects == 1
    assert received == [b"live", b"queued 0", b"queued 1", b"queued 2"]
    assert stolen_live == [] and stolen_queued == []
    assert len(re.findall(r"as S1 \(.*u'S1'\)", broker.log)) == 2
    assert f"as {client_id(RUN, 'B1')}" not in broker.log


# --- refusals -------------------------------------------------------------------------------------
def bad_files(broker: TlsBroker, where: Path, how: str) -> tls.TlsFiles:
    """S1's files with one thing wrong: ``expired`` or ``foreign`` (another CA signed it)."""
    where.mkdir()
    ca_key, ca = tls.load_key(broker.folder / "ca.key"), tls.load_cert(broker.folder / "ca.pem")
    shutil.copy(broker.folder / "ca.pem", where / "ca.pem")
    now = dt.datetime.now(dt.UTC)
    if how == "expired":
        pair = tls.issue(
            ca_key,
            ca,
            "S1",
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(1),
        )
    else:
        other_key, other_ca = tls.make_ca(name="another CA")
        pair = tls.issue(other_key, other_ca, "S1")
    tls.save_pair(where, "S1", *pair)
    return tls.TlsFiles.in_dir(where, "S1")


REFUSALS = {
    "expired": "the broker refused our TLS certificate: it has expired (or is not valid yet)",
    "foreign": "the broker refused our TLS certificate: it is not signed by the CA the broker "
    "trusts",
}


@pytest.mark.parametrize("how", list(REFUSALS))
def test_the_broker_refuses_a_bad_client_certificate_and_the_participant_says_why(
    broker: TlsBroker, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
):
    files = bad_files(broker, tmp_path / how, how)
    session = broker.session("S1", participant_log("S1"), files)
    with (
        caplog.at_level(logging.ERROR, logger="test.tls.S1"),
        pytest.raises(BrokerRefusedError) as caught,
    ):
        asyncio.run(session.start(60))
    assert str(caught.value).startswith(REFUSALS[how])
    lines = [r.getMessage() for r in caplog.records if r.name == "test.tls.S1"]
    assert len(lines) == 1 and lines[0].startswith(REFUSALS[how])
    assert "certificate verify failed" in broker.log  # the broker's side of it
    assert "as S1" not in broker.log


def test_a_participant_refuses_a_broker_it_does_not_trust_or_that_has_another_name(
    broker: TlsBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    untrusting = tmp_path / "untrusting"
    shutil.copytree(broker.folder, untrusting)
    _, other_ca = tls.make_ca(name="another CA")
    (untrusting / "ca.pem").write_bytes(tls.cert_pem(other_ca))
    with pytest.raises(BrokerRefusedError, match=r"^the broker's TLS certificate is not trusted: "):
        asyncio.run(
            broker.session(
                "S1", participant_log("S1"), tls.TlsFiles.in_dir(untrusting, "S1")
            ).start(60)
        )


@pytest.mark.broker
def test_a_participant_refuses_a_broker_whose_certificate_names_another_host(tmp_path: Path):
    folder = tmp_path / "tls"
    tls.init_tls(folder, ["S1"], broker_names=["broker.lan"])
    local = start_broker(
        tmp_path / "broker", RUN, BrokerUsers.generate(["S1"]), prefer="mosquitto", tls=folder
    )
    try:
        session = TlsBroker(local, folder).session("S1", participant_log("S1"))
        with pytest.raises(BrokerRefusedError) as caught:
            asyncio.run(session.start(60))
    finally:
        local.stop()
    assert str(caught.value).startswith(
        "the broker's TLS certificate does not name the host in the broker URL (make it with "
        "privgrid keys init --tls --broker-name HOST)"
    )
