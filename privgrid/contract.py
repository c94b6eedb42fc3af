"""The "smart contract" of the pair computation (protocol.md §4.2).

The paper calls it a smart contract; in privgrid it is this one deterministic, pure function,
and **no third party runs it**. Both parties of a direction n→m evaluate it themselves:

- the owner n, on the ``c_A`` it encrypted (message 1) and the ``c_B`` it received (message 2);
- the peer m, on the ``c_A`` it received and the ``c_B`` it sent.

Both get the same ``c = c_A · c_B mod N²`` (an encryption of ``A + B`` under n's key), so **c
never travels**: the peer verifies the owner's proof of decryption (§5) against the c it
computed itself, which is what stops the owner from proving the decryption of some other
ciphertext. Being pure and deterministic is the whole point: any divergence between the two
evaluations would be a bug, not a matter of trust.

Input checks: each share must be an ``int`` with ``0 < c < N²`` and ``gcd(c, N) = 1``. A failure
raises :class:`~privgrid.crypto.errors.ContractError` naming the share, which the caller treats
as a protocol violation (§4.3).
"""

from __future__ import annotations

import gmpy2

from privgrid.crypto.errors import CiphertextError, ContractError
from privgrid.crypto.paillier import PublicKey, check_ciphertext


def pair_contract(owner_key: PublicKey, c_A: int, c_B: int) -> int:
    """``c = c_A · c_B mod N²`` under the owner's key, after checking both shares.

    ``c_A`` is the owner's share ``E_n(A_nm)``, ``c_B`` the peer's share ``E_n(B_mn)``.
    """
    for name, share in (("c_A", c_A), ("c_B", c_B)):
        try:
            check_ciphertext(owner_key, share, name)
        except CiphertextError as exc:
            raise ContractError(f"contract input rejected: {exc.reason}") from exc
    return int(gmpy2.mul(c_A, c_B) % owner_key.nsquare)
