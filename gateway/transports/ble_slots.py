"""Who gets the gateway's BLE connection slots: pure policy, no I/O and no clock of its own.

Anything can advertise the civicedge service UUID, so a slot is not given for that alone
(docs/ble.md, "Connection slots"):

* :class:`NameFilter` admits only advertisers whose local name is a registered, non-revoked
  device id, or, for a shortened name, the first :data:`SHORT_NAME_BYTES` bytes of one;
* :class:`SlotPolicy` orders candidates by whether the address ever delivered a verified frame,
  then least recently served first (ties in random order: never by address), keeps one slot
  for addresses that did when there are several, and sets each address's reconnect backoff,
  much longer after a link that was dropped for delivering no verified frame, or whose device
  the registry no longer vouches for (:meth:`SlotPolicy.distrust`): a pause that doubles per such
  drop in a row up to :data:`UNVERIFIED_BACKOFF_MAX_S` and ends with a verified frame;
* :class:`DropNotices` decides which of those drops deserve a WARNING: an address's first one, and
  the one that brings its pause to the cap, not every drop of a board that is paused for good.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Callable, Literal

# Firmware (civic.uplink.ble.advertising_payloads): an id longer than this does not fit a 31-byte
# scan response and is advertised as a shortened local name of its first 29 bytes.
SHORT_NAME_BYTES = 29

BACKOFF_MIN_S = 0.5  # after a link that stayed up STABLE_S, or a first failure
BACKOFF_MAX_S = 30.0
STABLE_S = 10.0
# After a link dropped for delivering no verified frame (exponential per consecutive drop):
# an address that never delivered one waits 30 s, 60 s, 120 s...; one that did (a board that
# connected with nothing to send) 5 s, 10 s... A streetlight whose UART delivers (to this gateway
# or another) sends nothing over BLE, so without a cap it would be dropped for ever; the pause
# grows to UNVERIFIED_BACKOFF_MAX_S, which bounds how long BLE waits to take over once its UART
# stops (its 64-entry outbox holds 16 h of reports at one per 15-min window: none is lost meanwhile;
# 15 min, not more: a lamp alarm waits at most that long, and a board paused while the store failed
# is served again soon after it recovers). At the cap: ~4 links of 20 s an hour, was ~25.
UNVERIFIED_BACKOFF_S = 30.0
KNOWN_IDLE_BACKOFF_S = 5.0
UNVERIFIED_BACKOFF_MAX_S = 900.0
# Peers remembered; beyond this, half the never-verified ones are forgotten, fewest strikes first
# (SlotPolicy._prune): a flood of new addresses does not reset a long pause.
MAX_PEERS = 4096
# DropNotices: at most this many WARNINGs per DROP_WARN_WINDOW_S in all (addresses made up by a
# scanner without a registry are new devices each time); the others are owed and told later.
DROP_WARN_BURST = 10
DROP_WARN_WINDOW_S = 60.0
# Addresses whose notices are remembered; beyond this the memory starts afresh.
MAX_NOTICE_KEYS = 4096


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
        unverified_backoff_s: first pause after a link dropped without a verified frame, for an
            address that never delivered one.
        known_idle_backoff_s: the same for an address that did.
        pause_max_s: the cap of that pause, which doubles per such drop in a row.
    """

    def __init__(self, max_connections: int, *, rng: random.Random | None = None,
                 unverified_backoff_s: float = UNVERIFIED_BACKOFF_S, known_idle_backoff_s: float = KNOWN_IDLE_BACKOFF_S,
                 pause_max_s: float = UNVERIFIED_BACKOFF_MAX_S) -> None:
        if not 0 < unverified_backoff_s <= pause_max_s or not 0 < known_idle_backoff_s <= pause_max_s:
            raise ValueError("SlotPolicy: the first pauses (%r, %r) must be above 0 and at most pause_max_s (%r)"
                             % (unverified_backoff_s, known_idle_backoff_s, pause_max_s))
        self.max_connections = max_connections
        self.unverified_backoff_s = unverified_backoff_s
        self.known_idle_backoff_s = known_idle_backoff_s
        self.pause_max_s = pause_max_s
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
        """Forget half the never-verified peers (addresses a scanner made up), known boards only when
        there is no stranger left to forget.

        The fewest strikes go first, then the least recently served: a flood of made-up addresses,
        each dropped once (30 s), goes before a board paused for long (a streetlight whose UART
        delivers has many strikes), which would otherwise come back unpaused and start again from 30 s.
        """
        strangers = sorted((p.strikes, p.last_served, a) for a, p in self._peers.items() if not p.verified)
        if strangers:
            victims = [a for _, _, a in strangers[:max(1, len(strangers) // 2)]]
        else:  # a fleet of known boards alone beyond MAX_PEERS: still bounded
            known = sorted((p.last_served, a) for a, p in self._peers.items())
            victims = [a for _, a in known[:max(1, len(known) // 2)]]
        for address in victims:
            del self._peers[address]

    def attempt(self, address: str, now: float) -> None:
        """A connection to ``address`` is being opened (it goes to the back of the queue)."""
        self._peer(address).last_served = now

    def strikes(self, address: str) -> int:
        """Links to ``address`` in a row dropped for delivering no verified frame."""
        peer = self._peers.get(address)
        return 0 if peer is None else peer.strikes

    def verified(self, address: str) -> None:
        """The ingest accepted a frame from the link to ``address``: its pause is over.

        The frame may be committed just after its link was dropped at the auth timeout; the board
        then had frames to send, so the pause that drop set is lifted too.
        """
        peer = self._peer(address)
        peer.verified = True
        peer.strikes = 0
        peer.not_before = 0.0

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
            base = self.known_idle_backoff_s if peer.verified else self.unverified_backoff_s
            delay = min(self.pause_max_s, base * float(2 ** min(peer.strikes - 1, 16)))
        elif up_for >= STABLE_S:
            delay = BACKOFF_MIN_S
        else:
            delay = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, 2 * peer.delay))
        peer.delay = delay
        peer.not_before = now + delay
        return delay


Notice = Literal["start", "cap"]


class DropNotices:
    """Which links dropped for delivering no verified frame deserve a WARNING, per paused address.

    A paused address (the key the pause has in :class:`SlotPolicy`; the log lines name the address
    and the advertised name) is told about once when its pause starts and once when the pause
    reaches the cap, so a board that changes its address, or two boards with one name, are told
    about per pause and the lines match the pause they speak of; the drops in between and after are for DEBUG. A verified
    frame from it ends the streak, so the next drop starts a new one. At most
    :data:`DROP_WARN_BURST` WARNINGs per :data:`DROP_WARN_WINDOW_S` in all: a notice held back then
    is owed and given at the device's next drop.

    Args:
        pause_max_s: the pause's cap (:attr:`SlotPolicy.pause_max_s`).
        clock: monotonic time source.
    """

    def __init__(self, pause_max_s: float, clock: Callable[[], float]) -> None:
        self.pause_max_s = pause_max_s
        self._clock = clock
        self._told: dict[str, Notice] = {}
        self._window_start: float | None = None
        self._in_window = 0
        self._held = 0  # drops not told at WARNING since the last WARNING

    def dropped(self, key: str, delay: float) -> tuple[Notice, int] | None:
        """A link of ``key`` was dropped and paused for ``delay`` seconds.

        Returns:
            ``(notice, held)`` to log a WARNING now: ``"start"`` for the first of a streak,
            ``"cap"`` once ``delay`` reached the cap; ``held`` counts the drops (of any device) not
            told at WARNING since the last one. None: log it at DEBUG.
        """
        told = self._told.get(key)
        notice: Notice = "cap" if delay >= self.pause_max_s else "start"
        if (told is not None and (told == "cap" or notice == "start")) or not self._allow():
            self._held += 1
            return None
        if key not in self._told and len(self._told) >= MAX_NOTICE_KEYS:
            self._told.clear()
        self._told[key] = notice
        held, self._held = self._held, 0
        return notice, held

    def verified(self, key: str) -> bool:
        """A frame from ``key`` verified: its streak is over. True if a WARNING told of it."""
        return self._told.pop(key, None) is not None

    def _allow(self) -> bool:
        now = self._clock()
        if self._window_start is None or now - self._window_start >= DROP_WARN_WINDOW_S:
            self._window_start, self._in_window = now, 0
        if self._in_window >= DROP_WARN_BURST:
            return False
        self._in_window += 1
        return True
