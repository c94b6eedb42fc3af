"""Several fixed-point values in one Paillier plaintext (protocol.md §3, "Packing").

Why: one encryption costs one big exponentiation whatever the plaintext, so LM/MO messages
under one key put many values in one ciphertext (0.42 ms per value instead of 8.9 ms at 2048).

Layout: slots of w = 96 bits. A value X (fixed-point, scale 2^32) with ``|X| < 2^87`` is stored
as ``slot = X + 2^87`` ∈ (0, 2^88), and ``plaintext = Σ slot_i · 2^(96·i)``. Adding ciphertexts
adds slots; the 8 headroom bits above 2^88 absorb the carries of up to 256 packed terms, so
no slot spills into the next. Unpacking a sum of T packed terms subtracts ``T · 2^87`` per slot.

Choices where the spec is silent or loose:
- "after j homomorphic additions, unpack with slot − j·2^87" is read with j = the number of
  packed *terms* in the sum (a fresh ciphertext is 1 term and carries one offset; one addition
  of two ciphertexts gives 2 terms). The parameter is called ``terms`` to avoid the off-by-one.
- Slots per ciphertext: ``⌊(|N| − 1) / 96⌋``, so the packed plaintext is below
  ``2^(|N|−1) ≤ N`` and never wraps. That gives the spec's 10 / 21 / 31 at 1024 / 2048 / 3072
  (at 3072, a 32nd slot would reach 2^3072 > N).
- Unpacking checks that the bits above the last used slot are zero and that every slot lies in
  the range T terms can produce, and raises :class:`PackingError` otherwise (wrong value count,
  overflow, garbage). A wrong ``terms`` is caught only when it pushes a slot out of that range
  (an over-count usually is not), so ``terms`` must come from the protocol, never be guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

from privgrid.crypto.errors import PackingError
from privgrid.crypto.paillier import ObfuscatorPool, PaillierKeyPair, PublicKey, encrypt_residue

SLOT_BITS = 96
#: Bits of one value's slot before additions: |X| < 2^87, so X + 2^87 < 2^88.
VALUE_BITS = 88
HEADROOM_BITS = SLOT_BITS - VALUE_BITS
OFFSET = 1 << (VALUE_BITS - 1)
#: Largest accepted |X| per value (exclusive).
MAX_ABS_VALUE = OFFSET
#: Most packed terms a sum may have before slots could carry into each other.
MAX_TERMS = 1 << HEADROOM_BITS
_SLOT_MASK = (1 << SLOT_BITS) - 1


def slots_per_ciphertext(modulus_bits: int) -> int:
    """Values per ciphertext for an N of ``modulus_bits`` bits: ``⌊(|N| − 1) / 96⌋``."""
    slots = (modulus_bits - 1) // SLOT_BITS
    if slots < 1:
        raise PackingError(f"a {modulus_bits}-bit modulus cannot hold one 96-bit slot")
    return slots


def pack(values: Sequence[int], modulus_bits: int) -> int:
    """Pack fixed-point integers (``|X| < 2^87``) into one plaintext (value i in slot i)."""
    capacity = slots_per_ciphertext(modulus_bits)
    if not 0 < len(values) <= capacity:
        raise PackingError(f"need 1..{capacity} values per plaintext, got {len(values)}")
    plaintext = 0
    for i, value in enumerate(values):
        if not isinstance(value, int) or isinstance(value, bool):
            raise PackingError(f"value {i} must be an int (fixed-point), got {type(value)}")
        if abs(value) >= MAX_ABS_VALUE:
            raise PackingError(f"value {i} out of packing range: need |X| < 2^87")
        plaintext |= (value + OFFSET) << (SLOT_BITS * i)
    return plaintext


def unpack(plaintext: int, count: int, terms: int = 1) -> list[int]:
    """Recover ``count`` values from a plaintext that is the sum of ``terms`` packed plaintexts."""
    if not 1 <= terms <= MAX_TERMS:
        raise PackingError(f"terms must be in 1..{MAX_TERMS}, got {terms}")
    if count < 1:
        raise PackingError("count must be at least 1")
    if plaintext < 0 or plaintext >> (SLOT_BITS * count):
        raise PackingError("plaintext has bits above the last slot: wrong count or overflow")
    offset = terms * OFFSET
    values = []
    for i in range(count):
        slot = (plaintext >> (SLOT_BITS * i)) & _SLOT_MASK
        value = slot - offset
        if abs(value) >= offset:  # T terms with |X| < 2^87 each give |Σ X| < T·2^87
            raise PackingError(f"slot {i} is out of range for a sum of {terms} terms")
        values.append(value)
    return values


def encrypt_packed(
    key: PublicKey | PaillierKeyPair,
    values: Sequence[int],
    pool: ObfuscatorPool | None = None,
) -> list[int]:
    """Encrypt any number of values, ``slots_per_ciphertext`` per ciphertext, in order.

    With ``pool`` each ciphertext takes one pooled obfuscator; otherwise the owner (key pair)
    uses CRT and anyone else a full powmod.
    """
    public_key = key.public_key if isinstance(key, PaillierKeyPair) else key
    capacity = slots_per_ciphertext(public_key.n.bit_length())
    ciphertexts = []
    for start in range(0, len(values), capacity):
        plaintext = pack(values[start : start + capacity], public_key.n.bit_length())
        if pool is not None:
            rn: int | None = pool.take_rn()
        elif isinstance(key, PaillierKeyPair):
            rn = key.new_obfuscator().rn
        else:
            rn = None
        ciphertexts.append(encrypt_residue(public_key, plaintext, rn))
    return ciphertexts


def decrypt_packed(
    keypair: PaillierKeyPair, ciphertexts: Sequence[int], count: int, terms: int = 1
) -> list[int]:
    """Decrypt and unpack ``count`` values laid out as :func:`encrypt_packed` does."""
    capacity = slots_per_ciphertext(keypair.bits)
    expected = -(-count // capacity)
    if len(ciphertexts) != expected:
        raise PackingError(f"{count} values need {expected} ciphertexts, got {len(ciphertexts)}")
    values: list[int] = []
    for i, c in enumerate(ciphertexts):
        in_this = min(capacity, count - i * capacity)
        values.extend(unpack(keypair.decrypt_residue(c), in_this, terms))
    return values
