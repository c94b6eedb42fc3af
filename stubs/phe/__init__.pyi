# Type stubs for the part of phe (python-paillier) that privgrid uses: phe ships no type
# information. Signatures follow phe 1.5 (phe/paillier.py, phe/encoding.py); only what
# privgrid.crypto.paillier calls is declared, so a new use must be added here first.

class PaillierPublicKey:
    g: int
    n: int
    nsquare: int
    max_int: int
    def __init__(self, n: int) -> None: ...
    def raw_encrypt(self, plaintext: int, r_value: int | None = None) -> int: ...
    def get_random_lt_n(self) -> int: ...

class PaillierPrivateKey:
    public_key: PaillierPublicKey
    p: int
    q: int
    def __init__(self, public_key: PaillierPublicKey, p: int, q: int) -> None: ...
    def raw_decrypt(self, ciphertext: int) -> int: ...

class EncodedNumber:
    BASE: int
    public_key: PaillierPublicKey
    encoding: int
    exponent: int
    def __init__(self, public_key: PaillierPublicKey, encoding: int, exponent: int) -> None: ...
    def decode(self) -> int | float: ...

class EncryptedNumber:
    public_key: PaillierPublicKey
    exponent: int
    def __init__(
        self, public_key: PaillierPublicKey, ciphertext: int, exponent: int = 0
    ) -> None: ...
    def ciphertext(self, be_secure: bool = True) -> int: ...
    def obfuscate(self) -> None: ...

def generate_paillier_keypair(
    private_keyring: object | None = None, n_length: int = ...
) -> tuple[PaillierPublicKey, PaillierPrivateKey]: ...
