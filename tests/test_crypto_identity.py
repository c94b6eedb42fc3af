"""Ed25519 identities, private key files and the pinned roster (protocol.md §2)."""

import base64
import json
import os
import stat

import pytest

from privgrid.crypto import identity as identity_module
from privgrid.crypto.errors import IdentityError, SignatureError
from privgrid.crypto.identity import (
    Identity,
    Roster,
    public_key_from_b64,
    public_key_to_b64,
    verify_signature,
)

MESSAGE = b"envelope bytes to sign"


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_key_file_is_created_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        Identity.generate().save(tmp_path / "S1.key")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "S1.key") == 0o600


def test_key_file_is_never_created_with_a_wider_mode(tmp_path, monkeypatch):
    calls = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        calls.append((flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(identity_module.os, "open", spy)
    ident = Identity.generate()
    ident.save(tmp_path / "a.key")
    ident.save(tmp_path / "a.key", overwrite=True)
    assert len(calls) == 2
    for flags, mode in calls:
        assert mode == 0o600
        assert flags & os.O_CREAT and flags & os.O_EXCL


def test_save_load_round_trip(tmp_path):
    ident = Identity.generate()
    path = tmp_path / "id.pem"
    ident.save(path)
    loaded = Identity.load(path)
    assert loaded.public_b64 == ident.public_b64
    verify_signature(ident.public_key, MESSAGE, loaded.sign(MESSAGE))
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_save_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "id.pem"
    Identity.generate().save(path)
    second = Identity.generate()
    with pytest.raises(IdentityError, match="exists"):
        second.save(path)
    second.save(path, overwrite=True)
    assert Identity.load(path).public_b64 == second.public_b64
    assert _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["id.pem"]  # no temporary left behind


def test_load_refuses_a_group_or_world_readable_file(tmp_path):
    path = tmp_path / "id.pem"
    ident = Identity.generate()
    ident.save(path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        Identity.load(path)
    assert Identity.load(path, require_private_mode=False).public_b64 == ident.public_b64


def test_load_rejects_missing_or_garbage_files(tmp_path):
    with pytest.raises(IdentityError, match="cannot read"):
        Identity.load(tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(IdentityError, match="PEM"):
        Identity.load(bad)


def test_sign_and_verify():
    ident = Identity.generate()
    sig = ident.sign(MESSAGE)
    assert len(sig) == 64
    verify_signature(ident.public_key, MESSAGE, sig)
    verify_signature(ident.public_b64, MESSAGE, sig)


def test_signatures_are_rfc8032_ed25519_and_agree_with_openssl():
    """Sign and verify run on libsodium (PyNaCl, for speed); keys stay ``cryptography``
    objects. The two must be the same Ed25519: RFC 8032's first test vector, and each
    library's signature accepted by the other."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    ident = Identity(Ed25519PrivateKey.from_private_bytes(seed))
    assert base64.b64decode(ident.public_b64).hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    assert ident.sign(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    key = Ed25519PrivateKey.generate()
    ours = Identity(key)
    assert ours.sign(MESSAGE) == key.sign(MESSAGE)  # deterministic: the very same bytes
    key.public_key().verify(ours.sign(MESSAGE), MESSAGE)  # OpenSSL accepts ours
    verify_signature(key.public_key(), MESSAGE, key.sign(MESSAGE))  # we accept OpenSSL's


def test_tampered_signature_message_or_key_is_rejected():
    ident, other = Identity.generate(), Identity.generate()
    sig = ident.sign(MESSAGE)
    for i in (0, 31, 63):
        tampered = bytearray(sig)
        tampered[i] ^= 0x01
        with pytest.raises(SignatureError, match="does not verify"):
            verify_signature(ident.public_key, MESSAGE, bytes(tampered))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(ident.public_key, MESSAGE + b"!", sig)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(other.public_key, MESSAGE, sig)
    with pytest.raises(SignatureError, match="64 bytes"):
        verify_signature(ident.public_key, MESSAGE, sig[:-1])


def test_public_key_encoding():
    ident = Identity.generate()
    text = ident.public_b64
    assert len(base64.b64decode(text)) == 32 and len(text) == 44
    assert public_key_to_b64(public_key_from_b64(text)) == text
    with pytest.raises(SignatureError, match="base64"):
        public_key_from_b64("not base64!")
    with pytest.raises(SignatureError, match="32 bytes"):
        public_key_from_b64(base64.b64encode(b"\x01" * 31).decode())


def test_roster_round_trip_and_verification(tmp_path):
    a, b = Identity.generate(), Identity.generate()
    roster = Roster({"S1": a.public_b64})
    roster.add("B1", b.public_key)
    path = tmp_path / "roster.json"
    roster.save(path)
    data = json.loads(path.read_text())
    assert data == {"version": 1, "participants": {"B1": b.public_b64, "S1": a.public_b64}}
    loaded = Roster.load(path)
    assert dict(loaded) == dict(roster) and len(loaded) == 2 and "S1" in loaded
    loaded.verify("S1", MESSAGE, a.sign(MESSAGE))
    with pytest.raises(SignatureError):
        loaded.verify("B1", MESSAGE, a.sign(MESSAGE))


def test_private_key_must_match_its_roster_entry():
    a, b = Identity.generate(), Identity.generate()
    roster = Roster({"S1": a.public_b64, "B1": b.public_b64})
    roster.check_identity("S1", a)
    with pytest.raises(IdentityError, match="does not match"):
        roster.check_identity("S1", b)
    with pytest.raises(IdentityError, match="not in the roster"):
        roster.check_identity("X9", a)


def test_roster_rejects_bad_entries(tmp_path):
    a, b = Identity.generate(), Identity.generate()
    roster = Roster({"S1": a.public_b64})
    roster.add("S1", a.public_b64)  # the same key again is fine
    with pytest.raises(IdentityError, match="different key"):
        roster.add("S1", b.public_b64)
    with pytest.raises(IdentityError, match="non-empty"):
        roster.add("", a.public_b64)
    with pytest.raises(IdentityError, match="S2"):
        Roster({"S2": "abc"})
    for text in ("{", '{"participants": {}}', '{"version": 1, "participants": []}'):
        with pytest.raises(IdentityError):
            Roster.from_json(text)
    with pytest.raises(IdentityError, match="cannot read"):
        Roster.load(tmp_path / "nope.json")
