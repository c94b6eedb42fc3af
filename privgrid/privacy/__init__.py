"""Privacy modes: chosen once at start-up, behind one interface.

A :class:`PrivacyMode` gives a process everything that depends on how private values travel:
the extra fields of its key announcement and the checks of its peers', the agents' price
exchange (:mod:`.exchange`), and the LM leg (:mod:`.lmleg`). Role code holds a mode object and
never branches on which one it is.

- ``plain``: sealed shares and sealed trades/charges (:mod:`.plain`);
- ``paillier`` (default): the two-party computation with decryption proofs, trades and charges
  packed into Paillier ciphertexts (:mod:`.paillier`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from privgrid.crypto.framing import int_from_bytes, int_to_bytes
from privgrid.logs import ParticipantLog
from privgrid.market.setup import MarketSetup
from privgrid.privacy.exchange import CryptoCounters, PriceExchange, Violation
from privgrid.privacy.lmleg import LmLeg, SealedLeg
from privgrid.scenario import Scenario
from privgrid.wire.kinds import KeyAnnouncement

if TYPE_CHECKING:
    from privgrid.privacy.paillier.exchange import ExchangeOptions

__all__ = ["CryptoCounters", "LmLeg", "PriceExchange", "PrivacyMode", "Violation", "make_mode"]


class PrivacyMode:
    """Plain mode; the base every mode refines."""

    name = "plain"

    def __init__(self, scenario: Scenario, me: str, run: str, log: ParticipantLog) -> None:
        self.scenario = scenario
        self.me = me
        self.run = run
        self.log = log
        self.counters = CryptoCounters()

    @property
    def crypto_threads(self) -> int:
        """Worker threads for the exchange's heavy steps (``privacy.crypto_threads``). Plain
        mode has no heavy step to hand out, so none, whatever the scenario says."""
        return 0

    def announcement(self, base: KeyAnnouncement) -> KeyAnnouncement:
        """Our key announcement: plain mode adds nothing to the agreement key."""
        return base

    def accept_announcement(self, sender: str, body: KeyAnnouncement) -> None:
        """Plain mode needs nothing beyond the X25519 key the channel already checked."""

    def session_secrets(self) -> dict[str, bytes]:
        """This session's private keys beyond the X25519 key, for the sealed checkpoint."""
        return {}

    def stats(self) -> dict[str, float]:
        """The participant's figures that live in the mode, not in one market's exchange: its
        crypto time per phase and proof counts (:attr:`counters`, shared by every exchange the
        participant runs — a day's intervals'), running totals since the process began. A
        day's participant reads them here once instead of adding up every interval's
        exchange, each of which reports the shared totals
        (:meth:`privgrid.roles.daylayer.DayLayer.counters`)."""
        return self.counters.as_stats()

    def restore_session_secrets(self, secrets: Mapping[str, bytes]) -> bool:
        """Reuse checkpointed session keys after a restart; True if a key was replaced."""
        return False

    def precomputes(self) -> bool:
        """Whether :meth:`fill_ahead` has anything to do (plain mode: never)."""
        return False

    def fill_ahead(self, me: str, scenario: Scenario, budget_s: float) -> int:
        """Spare time before ``me``'s market of ``scenario`` (a day's next interval): do what
        its price exchange will need, for at most about ``budget_s``; return the work items
        done (0: nothing left to do). Plain mode precomputes nothing."""
        return 0

    def exchange(self, partners: Sequence[str]) -> PriceExchange:
        from privgrid.privacy.plain import PlainExchange

        return PlainExchange(self.me, partners)

    def lm_leg(
        self,
        setup: Callable[[], MarketSetup] | None = None,
        mask_keys: Callable[[], dict[str, bytes]] | None = None,
    ) -> LmLeg:
        """The leg of ``privacy.lm_leg``. ``setup`` and ``mask_keys`` are called lazily (the
        masked leg needs the flow matrix and the pairwise mask keys of the announcements)."""
        leg = self.scenario.privacy.lm_leg
        if leg == "masked":
            if setup is None or mask_keys is None:
                raise ValueError("the masked LM leg needs the market setup and the mask keys")
            from privgrid.privacy.masked import MaskedLeg

            return MaskedLeg(self.me, self.run, setup, mask_keys)
        if leg == "paillier":
            return self._paillier_leg()
        return SealedLeg()

    def _paillier_leg(self) -> LmLeg:
        raise ValueError("privacy.lm_leg = 'paillier' needs privacy.mode = 'paillier'")


class PaillierMode(PrivacyMode):
    name = "paillier"

    def __init__(self, scenario: Scenario, me: str, run: str, log: ParticipantLog) -> None:
        super().__init__(scenario, me, run, log)
        from privgrid.privacy.paillier import PaillierKeys
        from privgrid.privacy.paillier.pools import KeyPools

        privacy = scenario.privacy
        if privacy.key_bits < 2048:
            log.warning(
                "using insecure %d-bit Paillier test keys (privacy.insecure_test_keys)",
                privacy.key_bits,
            )
        self.keys = PaillierKeys(me, run, privacy.key_bits, privacy.key_bits)
        #: Obfuscator pools of our keys: one store for every exchange of the session, so a
        #: day's intervals share entries (and the time between them fills them ahead).
        self.pools = KeyPools(self.keys)

    @property
    def crypto_threads(self) -> int:
        return self.scenario.privacy.crypto_threads

    def stats(self) -> dict[str, float]:
        """Also the pool entries made ahead and on the spot (misses), drawn from the pools
        (hits) and, of those, made between a day's intervals (ahead hits), over the session's
        store, which every exchange of the session shares (pool_left is an exchange's own)."""
        made, misses = self.pools.totals()
        hits, ahead = self.pools.drawn()
        return {
            **super().stats(),
            "pool_made": float(made),
            "pool_misses": float(misses),
            "pool_hits": float(hits),
            "pool_ahead_hits": float(ahead),
        }

    def announcement(self, base: KeyAnnouncement) -> KeyAnnouncement:
        return self.keys.announcement(base)

    def accept_announcement(self, sender: str, body: KeyAnnouncement) -> None:
        self.keys.accept(sender, body)

    def session_secrets(self) -> dict[str, bytes]:
        key = self.keys.keypair.private_key
        return {"paillier_p": int_to_bytes(key.p), "paillier_q": int_to_bytes(key.q)}

    def restore_session_secrets(self, secrets: Mapping[str, bytes]) -> bool:
        from privgrid.crypto.paillier import keypair_from_primes

        if "paillier_p" not in secrets:
            return False
        p, q = (int_from_bytes(secrets[k]) for k in ("paillier_p", "paillier_q"))
        self.keys.keypair = keypair_from_primes(p, q)
        return True

    def precomputes(self) -> bool:
        return self.scenario.privacy.pool_rounds > 0

    def fill_ahead(self, me: str, scenario: Scenario, budget_s: float) -> int:
        """Fill the obfuscator pools of ``scenario``'s pairs of ``me`` (phase ``ahead``):
        the entries made."""
        from privgrid.privacy.paillier.pools import next_interval_targets

        targets = next_interval_targets(
            me, scenario.pairs, scenario.privacy.pool_rounds, scenario.market.max_rounds
        )
        made, seconds = self.pools.fill_toward(targets, budget_s)
        if made:
            self.counters.add_time("ahead", seconds)
        return made

    def exchange(self, partners: Sequence[str]) -> PriceExchange:
        from privgrid.privacy.paillier import PaillierExchange

        return PaillierExchange(self.me, partners, self.keys, **self.exchange_options())

    def exchange_options(self) -> ExchangeOptions:
        """The scenario's options of the pair computation (pools, verification, counters)."""
        from privgrid.privacy.paillier.exchange import ExchangeOptions

        privacy = self.scenario.privacy
        return ExchangeOptions(
            pool_rounds=privacy.pool_rounds,
            verify=privacy.verify,
            max_rounds=self.scenario.market.max_rounds,
            counters=self.counters,  # the offline pool fill in the constructor is counted too
            store=self.pools,
        )

    def _paillier_leg(self) -> LmLeg:
        from privgrid.privacy.paillier import PaillierLeg

        return PaillierLeg(self.keys, self.counters)


def make_mode(scenario: Scenario, me: str, run: str, log: ParticipantLog) -> PrivacyMode:
    """The mode the scenario asks for (``privacy.mode``)."""
    modes = {"plain": PrivacyMode, "paillier": PaillierMode}
    return modes[scenario.privacy.mode](scenario, me, run, log)
