"""TLS certificates for the broker connection: a run CA, a broker certificate, one client
certificate per broker account.

Why: envelopes are signed and sealed end to end, but the broker login, the topic structure
(who talks to whom, and when) and every message's size cross a network nobody controls. With
TLS the connection is encrypted, and the broker checks each client's certificate and takes
the account from its Common Name (Mosquitto's ``use_identity_as_username``), so no password
ever crosses the wire and the ACL applies unchanged.

One folder holds a run's files (``privgrid keys init --tls`` writes ``secrets/tls/``):

- ``ca.pem`` — the run CA's certificate. Public: every host needs it.
- ``ca.key`` — the CA's private key. Stays on the machine that made the certificates.
- ``broker.pem`` / ``broker.key`` — the broker's certificate (its subject alternative names
  are the host names and addresses clients use to reach it) and key.
- ``<account>.pem`` / ``<account>.key`` — one per participant (Common Name = its id) and per
  observer account (``monitor``).

Keys are ECDSA P-256, PKCS#8 PEM, written atomically with mode 0600. Certificates that are
still good (right names, signed by this CA, valid for more than a day) are kept when the set
is made again, like the identity keys; ``force`` makes everything new. Pure functions and file
I/O only: the broker configuration and the MQTT client use what this module checks and loads.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The folder below a keys folder (``secrets/tls``) that roles use unless told otherwise.
TLS_DIR = "tls"
CA_CERT, CA_KEY = "ca.pem", "ca.key"
BROKER = "broker"
#: Names in the broker's certificate unless configured: enough for a broker on this machine.
DEFAULT_BROKER_NAMES = ("localhost", "127.0.0.1")
DEFAULT_DAYS = 365
#: A certificate valid for less than this is made again (and refused at start-up when older).
RENEW_BEFORE = dt.timedelta(days=1)
#: Hosts' clocks differ: a certificate made now is valid from a few minutes ago.
CLOCK_SKEW = dt.timedelta(minutes=5)
PRIVATE_MODE = 0o600
ORGANISATION = "privgrid"

_DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*$")


class TlsError(ValueError):
    """A TLS file is missing, unreadable or wrong; the message names the file and the reason."""


@dataclass(frozen=True)
class TlsFiles:
    """What one TLS endpoint needs: the CA that signs the other side, its certificate, its key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, folder: Path, account: str) -> TlsFiles:
        """``folder/ca.pem``, ``folder/<account>.pem``, ``folder/<account>.key``."""
        return cls(folder / CA_CERT, folder / f"{account}.pem", folder / f"{account}.key")


@dataclass
class TlsSet:
    """What :func:`init_tls` wrote: which certificates are new and which were kept."""

    folder: Path
    made: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    new_ca: bool = False


# --- names ----------------------------------------------------------------------------------------
def parse_host_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """Broker host names and addresses → subject alternative names (IP or DNS).

    Raises:
        TlsError: a name that is neither an IP address nor a valid DNS name.
    """
    if not names:
        raise TlsError("the broker certificate needs at least one host name or address")
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        if not _DNS_NAME.match(name):
            raise TlsError(f"broker name {name!r} is neither an IP address nor a DNS host name")
        out.append(x509.DNSName(name.lower()))
    return out


def host_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a server certificate is valid for, as strings."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(san.get_values_for_type(x509.DNSName))
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


# --- making certificates --------------------------------------------------------------------------
def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _subject(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(
    *, name: str = "privgrid run CA", days: int = DEFAULT_DAYS, now: dt.datetime | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    now = now or _now()
    key = new_key()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(name))
        .issuer_name(_subject(name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    account: str,
    *,
    server_names: Sequence[str] | None = None,
    days: int = DEFAULT_DAYS,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and its certificate, signed by the CA: Common Name ``account``; a server
    certificate (``server_names`` as its subject alternative names) or a client one.

    ``not_before``/``not_after`` override the validity (tests make expired certificates)."""
    now = now or _now()
    key = new_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(account))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - CLOCK_SKEW)
        .not_valid_after(not_after or now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(parse_host_names(server_names)), critical=False
        )
    return key, builder.sign(ca_key, hashes.SHA256())


# --- files ----------------------------------------------------------------------------------------
def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically to a file of mode 0600 (a temporary sibling, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)  # the umask may only clear bits; make it exact
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def save_pair(
    folder: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    """``folder/<name>.key`` (0600) and ``folder/<name>.pem`` (0644: a certificate is public)."""
    write_private(folder / f"{name}.key", key_pem(key))
    write_private(folder / f"{name}.pem", cert_pem(cert))
    (folder / f"{name}.pem").chmod(0o644)


def load_cert(path: Path) -> x509.Certificate:
    """Raises :class:`TlsError` naming the file if it is missing or not a PEM certificate."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TlsError(f"{path} is not a PEM certificate") from None


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Raises :class:`TlsError` if the file is missing, readable by others, or not an EC key."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise TlsError(
            f"{path} has mode {mode:04o}; a private key must not be accessible to group or "
            "others (chmod 600)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise TlsError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{path} does not hold an elliptic-curve key")
    return key


def _same_key(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bool:
    encoding, fmt = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(encoding, fmt) == cert.public_key().public_bytes(
        encoding, fmt
    )


# --- checks ---------------------------------------------------------------------------------------
def certificate_problem(
    cert: x509.Certificate,
    ca: x509.Certificate,
    *,
    account: str | None = None,
    server_names: Sequence[str] | None = None,
    now: dt.datetime | None = None,
    margin: dt.timedelta = dt.timedelta(0),
) -> str | None:
    """Why ``cert`` is not good for ``account`` (or as a server for ``server_names``) under
    ``ca``, or ``None``. ``margin``: it must stay valid at least this long."""
    now = now or _now()
    if account is not None and common_name(cert) != account:
        return f"it is the certificate of {common_name(cert)!r}, not of {account!r}"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return f"it is not signed by the run CA {ca.subject.rfc4514_string()!r}"
    if now < cert.not_valid_before_utc:
        return f"it is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if now + margin >= cert.not_valid_after_utc:
        when = "expired" if now >= cert.not_valid_after_utc else "expires"
        return f"it {when} on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if server_names is not None and sorted(host_names(cert)) != sorted(
        str(n.value) for n in parse_host_names(server_names)
    ):
        return f"it names {', '.join(host_names(cert)) or 'no host'}"
    return None


def check_ca(path: Path, now: dt.datetime | None = None) -> x509.Certificate:
    """The CA certificate at ``path``, checked to be a CA that is valid now."""
    ca = load_cert(path)
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise TlsError(f"{path} is not a CA certificate")
    now = now or _now()
    if not ca.not_valid_before_utc <= now < ca.not_valid_after_utc:
        raise TlsError(
            f"{path}: the CA certificate is valid from {ca.not_valid_before_utc:%Y-%m-%d} to "
            f"{ca.not_valid_after_utc:%Y-%m-%d}, not now"
        )
    return ca


def check_client_files(files: TlsFiles, account: str, now: dt.datetime | None = None) -> None:
    """Pre-flight check of a client's TLS files before it connects.

    Raises:
        TlsError: naming the file and what is wrong — missing, not a certificate, another
            account's certificate, not signed by the CA, expired, or a key that does not
            belong to it.
    """
    ca = check_ca(files.ca, now)
    cert = load_cert(files.cert)
    problem = certificate_problem(cert, ca, account=account, now=now)
    if problem is not None:
        raise TlsError(f"{files.cert}: {problem}")
    key = load_key(files.key)
    if not _same_key(key, cert):
        raise TlsError(f"{files.key} is not the key of the certificate {files.cert}")


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """An SSL context that trusts only the run CA, checks the broker's host name and presents
    our certificate; TLS 1.2 at least."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


# --- the set of a run -----------------------------------------------------------------------------
def _load_ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    try:
        cert = check_ca(folder / CA_CERT)
        key = load_key(folder / CA_KEY)
    except TlsError:
        return None
    if not _same_key(key, cert) or _now() + RENEW_BEFORE >= cert.not_valid_after_utc:
        return None
    return key, cert


def _good(
    folder: Path,
    name: str,
    ca: x509.Certificate,
    server_names: Sequence[str] | None,
) -> bool:
    try:
        cert = load_cert(folder / f"{name}.pem")
        key = load_key(folder / f"{name}.key")
    except TlsError:
        return False
    account = None if server_names else name
    problem = certificate_problem(
        cert, ca, account=account, server_names=server_names, margin=RENEW_BEFORE
    )
    return problem is None and _same_key(key, cert)


def init_tls(
    folder: Path,
    accounts: Sequence[str],
    *,
    broker_names: Sequence[str] = DEFAULT_BROKER_NAMES,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> TlsSet:
    """Make (or keep) the run CA, the broker's certificate and one client certificate per
    account in ``folder`` (mode 0700).

    Raises:
        TlsError: a bad broker name, an account name that is also a file of the set, or a
            validity of less than one day.
    """
    parse_host_names(broker_names)  # a bad name fails before anything is written
    if days < 1:
        raise TlsError(f"certificate validity must be at least 1 day, not {days}")
    reserved = {BROKER, "ca"}
    clash = sorted(reserved & set(accounts))
    if clash:
        raise TlsError(f"account {clash[0]!r} would overwrite the {clash[0]} files of the TLS set")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    result = TlsSet(folder)
    loaded = None if force else _load_ca(folder)
    if loaded is None:
        ca_key, ca_cert = make_ca(days=max(days, 2))
        write_private(folder / CA_KEY, key_pem(ca_key))
        write_private(folder / CA_CERT, cert_pem(ca_cert))
        (folder / CA_CERT).chmod(0o644)
        result.new_ca = True
    else:
        ca_key, ca_cert = loaded
    wanted: list[tuple[str, Sequence[str] | None]] = [(BROKER, list(broker_names))]
    wanted += [(account, None) for account in accounts]
    for name, names in wanted:
        if not result.new_ca and _good(folder, name, ca_cert, names):
            result.kept.append(name)
            continue
        key, cert = issue(ca_key, ca_cert, name, server_names=names, days=days)
        save_pair(folder, name, key, cert)
        result.made.append(name)
    return result


# --- what a failed handshake means ----------------------------------------------------------------
#: OpenSSL's words in a failed handshake → what they mean for a participant. "alert" errors
#: are the broker's verdict on our certificate; "verify failed" is ours on the broker's.
_REFUSALS = (
    ("alert certificate expired", "it has expired (or is not valid yet)"),
    ("alert unknown ca", "it is not signed by the CA the broker trusts"),
    ("alert bad certificate", "the broker could not verify it"),
    ("alert certificate required", "we sent none and the broker requires one"),
    ("alert certificate unknown", "the broker does not accept it"),
    ("alert unsupported certificate", "the broker does not accept its type or usage"),
    ("alert handshake failure", "the handshake failed (no common TLS version or cipher)"),
    ("alert protocol version", "the broker does not speak our TLS version"),
)


def explain_handshake_error(message: str) -> str | None:
    """A clear sentence for an SSL error seen while connecting, or ``None`` if it is not one.

    ``the broker refused our TLS certificate: …`` when the broker sent a TLS alert about it;
    ``the broker's TLS certificate is not trusted: …`` when our own check of the broker failed.
    """
    lowered = message.lower()
    for words, meaning in _REFUSALS:
        if words in lowered:
            return f"the broker refused our TLS certificate: {meaning} ({message.strip()})"
    if "hostname mismatch" in lowered or "address mismatch" in lowered:
        return (
            "the broker's TLS certificate does not name the host in the broker URL (make it "
            f"with privgrid keys init --tls --broker-name HOST): {message.strip()}"
        )
    if "certificate verify failed" in lowered:
        return f"the broker's TLS certificate is not trusted: {message.strip()}"
    return None
