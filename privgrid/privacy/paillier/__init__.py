"""Paillier mode: prices by two-party computation under Paillier keys, trades to the LM packed
under its key (protocol.md §2–§6).

- :mod:`.keys`: this process's key pair and the peers' accepted keys (announcement checks);
- :mod:`.exchange`: the pair computation of every price (:class:`PaillierExchange`);
- :mod:`.pools`: precomputed obfuscators and commitments (``privacy.pool_rounds``);
- :mod:`.batch`: decryption proofs checked together (``privacy.verify = "batch"``);
- :mod:`.workers`: the heavy steps on worker threads (``privacy.crypto_threads``);
- :mod:`.leg`: the LM leg under Paillier keys (``privacy.lm_leg = "paillier"``).

What :class:`privgrid.privacy.PaillierMode` builds is importable from here.
"""

from privgrid.privacy.paillier.batch import DeferredViolation
from privgrid.privacy.paillier.exchange import PaillierExchange
from privgrid.privacy.paillier.keys import PaillierKeys
from privgrid.privacy.paillier.leg import PaillierLeg

__all__ = ["DeferredViolation", "PaillierExchange", "PaillierKeys", "PaillierLeg"]
