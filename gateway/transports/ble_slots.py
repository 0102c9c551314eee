"""Who gets the gateway's BLE connection slots: pure policy, no I/O and no clock of its own.

Anything can advertise the civicedge service UUID, so a slot is not given for that alone
(docs/ble.md, "Connection slots"):

* :class:`NameFilter` admits only advertisers whose local name is a registered, non-revoked
  device id, or, for a shortened name, the first :data:`SHORT_NAME_BYTES` bytes of one;
* :class:`SlotPolicy` orders candidates by whether the address ever delivered a verified frame,
  then least recently served first (ties in random order: never by address), keeps one slot
  for addresses that did when there are several, and sets each address's reconnect backoff,
  much longer after a link that was dropped for delivering no verified frame, or whose device
  the registry no longer vouches for (:meth:`SlotPolicy.distrust`).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass

# Firmware (civic.uplink.ble.advertising_payloads): an id longer than this does not fit a 31-byte
# scan response and is advertised as a shortened local name of its first 29 bytes.
SHORT_NAME_BYTES = 29

BACKOFF_MIN_S = 0.5  # after a link that stayed up STABLE_S, or a first failure
BACKOFF_MAX_S = 30.0
STABLE_S = 10.0
# After a link dropped for delivering no verified frame (exponential per consecutive drop):
# an address that never delivered one waits 30 s, 60 s, 120 s...; one that did (a board that
# connected with nothing to send) 5 s, 10 s... Capped at UNVERIFIED_BACKOFF_MAX_S.
UNVERIFIED_BACKOFF_S = 30.0
KNOWN_IDLE_BACKOFF_S = 5.0
UNVERIFIED_BACKOFF_MAX_S = 120.0
# Peers remembered; beyond this, never-verified ones whose backoff is over are forgotten first.
MAX_PEERS = 4096


class NameFilter:
    """Advertised local names that may get a slot.

    Args:
        device_ids: the registered, non-revoked device ids.
    """

    def __init__(self, device_ids: Iterable[str]) -> None:
        self._ids = frozenset(device_ids)
        self._prefixes = frozenset(i.encode()[:SHORT_NAME_BYTES] for i in self._ids
                                   if len(i.encode()) > SHORT_NAME_BYTES)

    def __len__(self) -> int:
        return len(self._ids)

    def admits(self, name: str | None) -> bool:
        """True if ``name`` is a device id, or the shortened form of one (exactly its first 29 bytes).

        bleak does not say whether a name was complete or shortened, so a 29-byte name that starts
        a longer registered id is taken for the shortened one; no other prefix is.
        """
        if not name:
            return False
        if name in self._ids:
            return True
        raw = name.encode("utf-8", "replace")
        return len(raw) == SHORT_NAME_BYTES and raw in self._prefixes


@dataclass
class _Peer:
    last_served: float = 0.0  # monotonic time of the last connection attempt; 0 = never tried
    verified: bool = False  # delivered a frame the ingest accepted, on some link of this run
    strikes: int = 0  # links in a row dropped for delivering no verified frame
    not_before: float = 0.0
    delay: float = 0.0  # the last reconnect delay (doubles on repeated failures)


class SlotPolicy:
    """Candidate order and reconnect backoff per address.

    Args:
        max_connections: slots in all.
        rng: tie-break among equally ranked candidates (seedable for tests).
    """

    def __init__(self, max_connections: int, *, rng: random.Random | None = None) -> None:
        self.max_connections = max_connections
        # With several slots, one is kept for addresses that delivered a verified frame before, so
        # a known board that comes back finds a slot even while strangers hold the others.
        self.stranger_slots = max(1, max_connections - 1)
        self._rng = rng if rng is not None else random.Random()
        self._peers: dict[str, _Peer] = {}

    def known(self, address: str) -> bool:
        """True if ``address`` delivered a verified frame on some link (since the gateway started)."""
        peer = self._peers.get(address)
        return peer is not None and peer.verified

    def not_before(self, address: str) -> float:
        """Monotonic time before which ``address`` is not connected again (0.0: any time)."""
        peer = self._peers.get(address)
        return 0.0 if peer is None else peer.not_before

    def choose(self, candidates: Iterable[str], *, open_links: Collection[str], now: float) -> list[str]:
        """Return the candidates to connect now, in order.

        Args:
            candidates: addresses seen advertising (already filtered by service and name).
            open_links: addresses with a connection open or being opened.
            now: monotonic time.
        """
        free = self.max_connections - len(open_links)
        if free <= 0:
            return []
        eligible = [a for a in dict.fromkeys(candidates) if a not in open_links and self.not_before(a) <= now]
        self._rng.shuffle(eligible)  # equal rank: random, so no address wins every time
        eligible.sort(key=lambda a: (not self.known(a), self._last_served(a)))
        strangers = self.stranger_slots - sum(1 for a in open_links if not self.known(a))
        chosen: list[str] = []
        for address in eligible:
            if len(chosen) >= free:
                break
            if not self.known(address):
                if strangers <= 0:
                    continue
                strangers -= 1
            chosen.append(address)
        return chosen

    def _last_served(self, address: str) -> float:
        peer = self._peers.get(address)
        return 0.0 if peer is None else peer.last_served

    def _peer(self, address: str) -> _Peer:
        peer = self._peers.get(address)
        if peer is None:
            if len(self._peers) >= MAX_PEERS:
                self._prune()
            peer = self._peers[address] = _Peer()
        return peer

    def _prune(self) -> None:
        """Forget the least recently served never-verified peers (addresses a scanner made up)."""
        strangers = sorted((p.last_served, a) for a, p in self._peers.items() if not p.verified)
        for _, address in strangers[:max(1, len(strangers) // 2)]:
            del self._peers[address]

    def attempt(self, address: str, now: float) -> None:
        """A connection to ``address`` is being opened (it goes to the back of the queue)."""
        self._peer(address).last_served = now

    def verified(self, address: str) -> None:
        """The ingest accepted a frame from the link to ``address``."""
        peer = self._peer(address)
        peer.verified = True
        peer.strikes = 0

    def distrust(self, address: str) -> None:
        """The device the link to ``address`` authenticated as was revoked, unregistered or re-keyed.

        The frames that verified on it vouch for nothing now, so the address is a stranger again:
        no kept slot, and (ended as an ``unverified_drop``) a stranger's backoff from the first strike.
        """
        peer = self._peers.get(address)
        if peer is not None:
            peer.verified = False
            peer.strikes = 0

    def ended(self, address: str, now: float, *, up_for: float, unverified_drop: bool) -> float:
        """A connection attempt or link to ``address`` ended; set and return its reconnect delay.

        Args:
            address: the peer.
            now: monotonic time.
            up_for: seconds since the attempt started.
            unverified_drop: the gateway dropped the link because no frame verified in time (or
                closed it because the registry no longer vouches for its device).
        """
        peer = self._peer(address)
        delay: float
        if unverified_drop:
            peer.strikes += 1
            base = KNOWN_IDLE_BACKOFF_S if peer.verified else UNVERIFIED_BACKOFF_S
            delay = min(UNVERIFIED_BACKOFF_MAX_S, base * float(2 ** min(peer.strikes - 1, 16)))
        elif up_for >= STABLE_S:
            delay = BACKOFF_MIN_S
        else:
            delay = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, 2 * peer.delay))
        peer.delay = delay
        peer.not_before = now + delay
        return delay
