"""The run's TLS certificates (``privgrid keys init --tls``) and the checks a participant makes
before it connects: real keys and certificates made with ``cryptography``, real files, the real
``privgrid`` command and role process; no broker here (tests/test_tls_broker.py has one)."""

from __future__ import annotations

import datetime as dt
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from privgrid.crypto import tls
from privgrid.wire.session import BrokerUrl, BrokerUrlError

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "configs" / "paper.toml"
PRIVGRID = [sys.executable, "-m", "privgrid.cli"]
EVERYONE = ["S1", "S2", "S3", "S4", "B1", "B2", "B3", "LM", "MO"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def keys_init(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PRIVGRID, "keys", "init", str(PAPER), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture(scope="module")
def tls_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``privgrid keys init configs/paper.toml --tls`` with two broker names: its tls/ folder."""
    out = tmp_path_factory.mktemp("keys") / "secrets"
    proc = keys_init(out, "--tls", "--broker-name", "broker.example", "--broker-name", "10.9.0.1")
    assert proc.returncode == 0, proc.stderr
    assert "new run CA, 11 certificates made" in proc.stdout
    return out / "tls"


def test_keys_init_tls_writes_a_ca_a_broker_certificate_and_one_per_account_with_keys_0600(
    tls_set: Path,
):
    accounts = [*EVERYONE, "monitor"]
    expected = {"ca.pem", "ca.key", "broker.pem", "broker.key"}
    expected |= {f"{a}.pem" for a in accounts} | {f"{a}.key" for a in accounts}
    assert {p.name for p in tls_set.iterdir()} == expected
    assert mode(tls_set) == 0o700
    for path in tls_set.iterdir():
        assert mode(path) == (0o600 if path.suffix == ".key" else 0o644), path

    ca = tls.load_cert(tls_set / "ca.pem")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert constraints.ca and usage.key_cert_sign
    ca.verify_directly_issued_by(ca)  # self-signed

    broker = tls.load_cert(tls_set / "broker.pem")
    broker.verify_directly_issued_by(ca)
    assert sorted(tls.host_names(broker)) == ["10.9.0.1", "broker.example"]
    eku = broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    for account in accounts:
        cert = tls.load_cert(tls_set / f"{account}.pem")
        cert.verify_directly_issued_by(ca)  # raises if the chain does not verify
        assert tls.common_name(cert) == account
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert dt.timedelta(days=365) <= life <= dt.timedelta(days=366)
        tls.check_client_files(tls.TlsFiles.in_dir(tls_set, account), account)


def test_keys_init_tls_again_keeps_good_certificates_and_remakes_the_broker_one_for_new_names(
    tmp_path: Path,
):
    out = tmp_path / "secrets"
    assert keys_init(out, "--tls").returncode == 0
    before = {p.name: p.read_bytes() for p in (out / "tls").iterdir()}
    again = keys_init(out, "--tls")
    assert again.returncode == 0 and "kept the run CA, 0 certificates made, 11 kept" in again.stdout
    assert {p.name: p.read_bytes() for p in (out / "tls").iterdir()} == before

    renamed = keys_init(out, "--tls", "--broker-name", "grid-broker.lan")
    assert renamed.returncode == 0 and "1 certificates made, 10 kept" in renamed.stdout
    broker = tls.load_cert(out / "tls" / "broker.pem")
    assert tls.host_names(broker) == ["grid-broker.lan"]
    assert (out / "tls" / "S1.pem").read_bytes() == before["S1.pem"]

    forced = keys_init(out, "--tls", "--force")
    assert forced.returncode == 0 and "new run CA, 11 certificates made" in forced.stdout
    assert (out / "tls" / "ca.pem").read_bytes() != before["ca.pem"]


def test_keys_init_refuses_a_broker_name_that_is_not_a_host_name_or_address(tmp_path: Path):
    proc = keys_init(tmp_path / "secrets", "--tls", "--broker-name", "not a host")
    assert proc.returncode == 2
    assert "broker name 'not a host' is neither an IP address nor a DNS host name" in proc.stderr
    assert not (tmp_path / "secrets" / "tls").exists()
    without_tls = keys_init(tmp_path / "other", "--broker-name", "broker.lan")
    assert without_tls.returncode == 2 and "--broker-name needs --tls" in without_tls.stderr


# --- what a participant checks before connecting ------------------------------------------------
def copy_set(tls_set: Path, where: Path) -> Path:
    shutil.copytree(tls_set, where)
    return where


def test_the_pre_flight_check_names_the_file_and_what_is_wrong(tls_set: Path, tmp_path: Path):
    ca_key, ca = tls.load_key(tls_set / "ca.key"), tls.load_cert(tls_set / "ca.pem")
    now = dt.datetime.now(dt.UTC)

    def check(folder: Path, account: str = "S1") -> str:
        with pytest.raises(tls.TlsError) as caught:
            tls.check_client_files(tls.TlsFiles.in_dir(folder, account), account)
        return str(caught.value)

    expired = copy_set(tls_set, tmp_path / "expired")
    key, cert = tls.issue(
        ca_key, ca, "S1", not_before=now - dt.timedelta(days=9), not_after=now - dt.timedelta(1)
    )
    tls.save_pair(expired, "S1", key, cert)
    assert check(expired).startswith(f"{expired / 'S1.pem'}: it expired on ")

    foreign = copy_set(tls_set, tmp_path / "foreign")
    other_key, other_ca = tls.make_ca(name="someone else's CA")
    tls.save_pair(foreign, "S1", *tls.issue(other_key, other_ca, "S1"))
    assert check(foreign) == (
        f"{foreign / 'S1.pem'}: it is not signed by the run CA 'CN=privgrid run CA,O=privgrid'"
    )

    swapped = copy_set(tls_set, tmp_path / "swapped")
    shutil.copy(swapped / "B1.pem", swapped / "S1.pem")
    shutil.copy(swapped / "B1.key", swapped / "S1.key")
    assert check(swapped) == f"{swapped / 'S1.pem'}: it is the certificate of 'B1', not of 'S1'"

    mismatched = copy_set(tls_set, tmp_path / "mismatched")
    shutil.copy(mismatched / "B1.key", mismatched / "S1.key")
    assert check(mismatched) == (
        f"{mismatched / 'S1.key'} is not the key of the certificate {mismatched / 'S1.pem'}"
    )

    shared = copy_set(tls_set, tmp_path / "shared")
    (shared / "S1.key").chmod(0o644)
    assert "has mode 0644; a private key must not be accessible to group or others" in check(shared)

    missing = copy_set(tls_set, tmp_path / "missing")
    (missing / "S1.key").unlink()
    assert check(missing) == f"cannot read {missing / 'S1.key'}: No such file or directory"


def test_mqtts_urls_default_to_port_8883_and_refuse_a_password():
    url = BrokerUrl.parse("mqtts://broker.example")
    assert (url.scheme, url.host, url.port, url.is_tls) == ("mqtts", "broker.example", 8883, True)
    assert str(url) == "mqtts://broker.example:8883"
    assert BrokerUrl.parse("mqtt://S1:pw@h").port == 1883
    with pytest.raises(
        BrokerUrlError, match="certificate is the login; remove the pass"
    ):
        BrokerUrl.parse("mqtts://S1:secret@broker.example")
    with pytest.raises(BrokerUrlError, match="must start with mqtt:// or mqtts://"):
        BrokerUrl.parse("ssl://broker.example:8883")


def agent_process(
    env_url: str, keys: Path, *extra: str, run: str = "pre-flight"
) -> subprocess.CompletedProcess[str]:
    env = {"PRIVGRID_BROKER_URL": env_url, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "privgrid.cli",
            "agent",
            "--scenario",
            str(PAPER),
            "--id",
            "S1",
            "--run",
            run,
            "--keys",
            str(keys),
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=90,
    )


def test_a_participant_with_mqtts_and_no_ca_exits_2_naming_what_is_missing(tmp_path: Path):
    keys = tmp_path / "secrets"
    assert keys_init(keys).returncode == 0  # identity keys, no TLS
    proc = agent_process("mqtts://127.0.0.1:1", keys)
    assert proc.returncode == 2, proc.stderr
    assert (
        f"broker URL mqtts://127.0.0.1:1 uses TLS, but the run CA {keys / 'tls' / 'ca.pem'} "
        "does not exist: make the certificates with `privgrid keys init SCENARIO --tls`"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_participant_given_another_participants_certificate_refuses_to_start(
    tls_set: Path, tmp_path: Path
):
    keys = tmp_path / "secrets"
    assert keys_init(keys).returncode == 0
    swapped = copy_set(tls_set, tmp_path / "swapped")
    shutil.copy(swapped / "B1.pem", swapped / "S1.pem")
    shutil.copy(swapped / "B1.key", swapped / "S1.key")
    proc = agent_process("mqtts://127.0.0.1:1", keys, "--tls-dir", str(swapped))
    assert proc.returncode == 2, proc.stderr
    assert f"{swapped / 'S1.pem'}: it is the certificate of 'B1', not of 'S1'" in proc.stderr
    assert "Traceback" not in proc.stderr
