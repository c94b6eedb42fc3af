"""privgrid's cryptography: pure functions, no I/O except the identity key files.

Modules (each has one job; the wire and process layers call them):

- ``errors``   — :class:`CryptoError` and its subclasses; every failure carries a ``reason``.
- ``framing``  — ``lp()`` length-prefixing and integer ↔ bytes conventions (protocol.md §1).
- ``codec``    — fixed-point plaintexts at scale 2^32: real ↔ X ↔ ``X mod N``, range checks (§3).
- ``paillier`` — key generation, CRT helpers, encryption with pooled obfuscators, CRT
  decryption, fixed-length wire format, phe interop with the fixed exponent −8 (§3, §10).
- ``zkp``      — Damgård–Jurik–Nielsen proof of correct decryption, Fiat–Shamir and
  interactive forms, honest-verifier simulator (§5).
- ``keyproof`` — acceptance checks for an announced Paillier key and the gcd(N, φ(N)) = 1
  key proof (§2).
- ``packing``  — many fixed-point values per Paillier plaintext, 96-bit slots (§3).
- ``identity`` — Ed25519 identity keys (0600 files), signatures, the pinned roster (§2).
- ``sealing``  — X25519 pair keys, ChaCha20-Poly1305 sealed fields, LM mask keys and masks (§6).
- ``tls``      — the run CA and the broker's and participants' TLS certificates (0600 keys),
  the checks a participant makes before connecting (docs/deploy.md).

The pair contract (§4.2) lives in :mod:`privgrid.contract` so a reader finds it at once.
"""

from privgrid.crypto.codec import (
    MAX_ABS_PLAINTEXT,
    check_range,
    decode_real,
    decode_residue,
    encode_real,
    from_residue,
    to_residue,
)
from privgrid.crypto.errors import (
    CiphertextError,
    ContractError,
    CryptoError,
    IdentityError,
    KeyCheckError,
    PackingError,
    PlaintextError,
    ProofError,
    SealError,
    SignatureError,
)
from privgrid.crypto.framing import int_from_bytes, int_to_bytes, int_to_fixed, lp, lp_all
from privgrid.crypto.identity import (
    Identity,
    Roster,
    public_key_from_b64,
    public_key_to_b64,
    verify_signature,
)
from privgrid.crypto.keyproof import (
    KEY_PROOF_ROOTS,
    check_announced_key,
    check_modulus,
    key_proof_challenges,
    key_proof_from_bytes,
    key_proof_to_bytes,
    make_key_proof,
    verify_key_proof,
)
from privgrid.crypto.packing import (
    decrypt_packed,
    encrypt_packed,
    pack,
    slots_per_ciphertext,
    unpack,
)
from privgrid.crypto.paillier import (
    FIXED_EXPONENT,
    Obfuscator,
    ObfuscatorPool,
    PaillierKeyPair,
    PublicKey,
    add,
    check_ciphertext,
    ciphertext_from_bytes,
    ciphertext_length,
    ciphertext_to_bytes,
    encoded_number,
    encrypt,
    encrypt_int,
    encrypt_residue,
    from_encrypted_number,
    generate_keypair,
    keypair_from_primes,
    modulus_length,
    new_obfuscator,
    public_key_from_bytes,
    public_key_from_n,
    public_key_to_bytes,
    random_unit,
    rerandomise,
    to_encrypted_number,
)
from privgrid.crypto.sealing import (
    AgreementKey,
    associated_data,
    mask_key,
    masks,
    net_masks,
    pair_key,
    seal,
    unseal,
)
from privgrid.crypto.zkp import (
    DecryptionProof,
    ProofContext,
    fiat_shamir_challenge,
    prove_decryption,
    recover_randomness,
    simulate_transcript,
    verify_decryption,
    verify_transcript,
)

__all__ = [
    "FIXED_EXPONENT",
    "KEY_PROOF_ROOTS",
    "MAX_ABS_PLAINTEXT",
    "AgreementKey",
    "CiphertextError",
    "ContractError",
    "CryptoError",
    "DecryptionProof",
    "Identity",
    "IdentityError",
    "KeyCheckError",
    "Obfuscator",
    "ObfuscatorPool",
    "PackingError",
    "PaillierKeyPair",
    "PlaintextError",
    "ProofContext",
    "ProofError",
    "PublicKey",
    "Roster",
    "SealError",
    "SignatureError",
    "add",
    "associated_data",
    "check_announced_key",
    "check_ciphertext",
    "check_modulus",
    "check_range",
    "ciphertext_from_bytes",
    "ciphertext_length",
    "ciphertext_to_bytes",
    "decode_real",
    "decode_residue",
    "decrypt_packed",
    "encode_real",
    "encoded_number",
    "encrypt",
    "encrypt_int",
    "encrypt_packed",
    "encrypt_residue",
    "fiat_shamir_challenge",
    "from_encrypted_number",
    "from_residue",
    "generate_keypair",
    "int_from_bytes",
    "int_to_bytes",
    "int_to_fixed",
    "key_proof_challenges",
    "key_proof_from_bytes",
    "key_proof_to_bytes",
    "keypair_from_primes",
    "lp",
    "lp_all",
    "make_key_proof",
    "mask_key",
    "masks",
    "modulus_length",
    "net_masks",
    "new_obfuscator",
    "pack",
    "pair_key",
    "prove_decryption",
    "public_key_from_b64",
    "public_key_from_bytes",
    "public_key_from_n",
    "public_key_to_b64",
    "public_key_to_bytes",
    "random_unit",
    "recover_randomness",
    "rerandomise",
    "seal",
    "simulate_transcript",
    "slots_per_ciphertext",
    "to_encrypted_number",
    "to_residue",
    "unpack",
    "unseal",
    "verify_decryption",
    "verify_key_proof",
    "verify_signature",
    "verify_transcript",
]
