"""Throttling of admin calls with a wrong token: per client, and for all clients together.

Without it a client guessed admin tokens as fast as the gateway answered (a security audit measured
about 2,700 a second), and the only trace was one log line per 10 s. The decision is taken before the
presented token is compared: a throttled call is answered 429 ``admin_throttled`` with ``Retry-After``
whatever its token, so a guess sent meanwhile learns nothing (were a right token still let through, a
429 would say "wrong" as well as a 401 does, and the throttle would not slow guessing at all).

* **Per client** (its address, behind a proxy of ``[http] trusted_proxies`` the one the proxy names; an
  IPv6 client by its /64, the block one machine is usually given, a link-local one by its own address, as
  every link-local host is in fe80::/64): :data:`FREE_WRONG_TOKENS` wrong tokens
  are answered 401 as before; the last of them starts a pause of :data:`FIRST_PAUSE_S`, and each wrong token
  after a pause starts one twice as long, up to :data:`MAX_PAUSE_S`. A guesser at one address then gets
  one guess a minute. A right token ends it for that client; a client that sent no wrong token for
  :data:`FORGET_AFTER_S` starts afresh.
* **All clients** (guessing from many addresses): at most :data:`GLOBAL_WRONG_PER_S` wrong tokens a
  second (bursts of :data:`GLOBAL_BURST`) are compared. Of these, :data:`RESERVE_PER_S` (bursts of
  :data:`RESERVE_BURST`) are kept for *quiet networks*: a client's coarse network (IPv4 /24, IPv6 /48, a
  link-local client's whole link-local range, as gateway.web.auth names it) from which no wrong token was
  compared for :data:`QUIET_AFTER_S`. Beyond that, a call is answered 429 without its token being compared, **except** from a client that presented the
  right token within :data:`KNOWN_GOOD_S` and since the token last changed
  (:meth:`AdminThrottle.forget_known_good`), or one exempt (``[http] admin_networks``): the operator's own
  machine keeps working while someone guesses from elsewhere (its wrong tokens still count, and its own
  per-client throttle still applies). A guesser cannot join those clients without the token. The reserve is
  why an operator at a new address still gets in during a distributed attack (review MEDIUM-1: 1,200
  addresses held the whole budget, and a new client got 429 for as long as the attack lasted): the
  guesser's networks are busy and draw only on the rest, so a right token from a network that sent no wrong
  one within the minute is compared at once. Only a guesser that itself spreads over networks quiet for a
  minute (at most :data:`RESERVE_PER_S` a second of them, so hundreds of /24s) can take the reserve too;
  then ``admin_networks`` and known-good clients are the way in.

Memory is bounded: at most :data:`MAX_CLIENTS` clients are tracked (the one idle longest is forgotten
first), :data:`MAX_KNOWN_GOOD` known-good ones and :data:`MAX_CLIENTS` busy networks (one forgotten early
is quiet: it may draw on the reserve once more). The global budget bounds how fast new clients can be
added (each needs a compared wrong token), so forgetting one early does not let a guesser out-run it; an
exempt client new to a full table spends the budget too (:meth:`AdminThrottle._may_skip_budget`).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Literal

FREE_WRONG_TOKENS = 5
FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 60.0
FORGET_AFTER_S = 900.0
MAX_CLIENTS = 4096
GLOBAL_WRONG_PER_S = 10.0
GLOBAL_BURST = 20.0
KNOWN_GOOD_S = 86400.0
MAX_KNOWN_GOOD = 256
RESERVE_PER_S = 2.0  # of GLOBAL_WRONG_PER_S: kept for networks with no wrong token compared lately
RESERVE_BURST = 4.0  # of GLOBAL_BURST
QUIET_AFTER_S = 60.0
_SHARED_PER_S = GLOBAL_WRONG_PER_S - RESERVE_PER_S
_SHARED_BURST = GLOBAL_BURST - RESERVE_BURST

Scope = Literal["client", "global"]
SCOPES: tuple[Scope, ...] = ("client", "global")


@dataclass(frozen=True)
class Refusal:
    """Why a call is not checked now: its client's pause (``client``) or the global budget (``global``),
    and in how many whole seconds (at least 1) to try again."""

    scope: Scope
    retry_after_s: int
    wrong_tokens: int  # the client's wrong tokens in a row (``client``); 0 for ``global``


@dataclass
class _Client:
    wrong: int = 0  # wrong tokens since the client was last forgotten or sent the right one
    pause_s: float = FIRST_PAUSE_S  # the next pause
    until: float = 0.0  # no token of this client is compared before this time
    last: float = 0.0  # its last wrong token


class AdminThrottle:
    """Decides whether an admin call's token may be compared now (module doc), on a monotonic ``clock``.

    Call :meth:`refusal` before comparing; then :meth:`wrong` or :meth:`right` with the outcome. Clients
    are opaque keys (gateway.web.auth makes them from the address), as are their ``network`` (the coarse
    network the reserve of the global budget is shared by; the client itself when not given). An ``exempt``
    client (``[http] admin_networks``) is never refused by the global budget and does not draw on it; its
    own wrong tokens still pause it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()  # oldest wrong token first
        self._known_good: OrderedDict[str, float] = OrderedDict()  # when each last presented the right token
        self._busy: OrderedDict[str, float] = OrderedDict()  # network -> its last compared wrong token, oldest first
        self._shared = _SHARED_BURST  # the budget any client draws on
        self._reserve = RESERVE_BURST  # the budget only quiet networks draw on, once the shared one is spent
        self._budget_at = clock()

    def refusal(self, client: str, network: str | None = None, *, exempt: bool = False) -> Refusal | None:
        """None when ``client``'s token may be compared now, else why not and for how long. Changes no
        count (also what decides whether to send ``100 Continue``)."""
        now = self._clock()
        record = self._record(client, now)
        if record is not None and now < record.until:
            return Refusal("client", max(1, math.ceil(record.until - now)), record.wrong)
        self._refill(now)
        exempt = exempt and self._may_skip_budget(record)
        if self._shared >= 1.0 or exempt or self._is_known_good(client, now):
            return None
        if self._reserve >= 1.0 and self._is_quiet(network or client, now):
            return None
        return Refusal("global", max(1, math.ceil((1.0 - self._shared) / _SHARED_PER_S)), 0)

    def wrong(self, client: str, network: str | None = None, *, exempt: bool = False) -> None:
        """``client`` presented a wrong token (it was compared): count it; the last free one starts a pause.
        It draws on the global budget (the reserve when the rest is spent and its ``network`` is quiet), and
        its network is busy for :data:`QUIET_AFTER_S`."""
        now = self._clock()
        if not (exempt and self._may_skip_budget(self._record(client, now))):
            self._refill(now)
            network = network or client
            if self._shared < 1.0 and self._reserve >= 1.0 and self._is_quiet(network, now):
                self._reserve -= 1.0
            else:  # a known-good client's wrong token past the budget: the budget stays at 0
                self._shared = max(0.0, self._shared - 1.0)
            self._busy.pop(network, None)
            while len(self._busy) >= MAX_CLIENTS:
                self._busy.popitem(last=False)
            self._busy[network] = now
        record = self._record(client, now)
        if record is None:
            while len(self._clients) >= MAX_CLIENTS:
                self._clients.popitem(last=False)
            record = self._clients[client] = _Client()
        self._clients.move_to_end(client)
        record.wrong += 1
        record.last = now
        if record.wrong >= FREE_WRONG_TOKENS:
            record.until = now + record.pause_s
            record.pause_s = min(record.pause_s * 2.0, MAX_PAUSE_S)

    def right(self, client: str) -> None:
        """``client`` presented the right token: its count ends, and it is known good for :data:`KNOWN_GOOD_S`."""
        self._clients.pop(client, None)
        self._known_good.pop(client, None)
        while len(self._known_good) >= MAX_KNOWN_GOOD:
            self._known_good.popitem(last=False)
        self._known_good[client] = self._clock()

    def forget_known_good(self) -> None:
        """No client is known good any more: the admin token changed (gateway.web.auth), and a client that
        presented the old one (perhaps the leak the token was replaced for) has not shown it knows the new one."""
        self._known_good.clear()

    def tracked(self) -> int:
        """How many clients have a count of wrong tokens (at most :data:`MAX_CLIENTS`)."""
        return len(self._clients)

    def _record(self, client: str, now: float) -> _Client | None:
        """``client``'s count, or None (never counted, or forgotten: idle for :data:`FORGET_AFTER_S`). Forgets the
        idle ones at the front on the way (the dict is in order of the last wrong token)."""
        while self._clients:
            oldest = next(iter(self._clients.values()))
            if now - oldest.last < FORGET_AFTER_S:
                break
            self._clients.popitem(last=False)
        return self._clients.get(client)

    def _may_skip_budget(self, record: _Client | None) -> bool:
        """Whether an exempt client (``admin_networks``) may skip the global budget: it is counted already, or
        there is room to count it. With the table full a new one spends the budget like anyone else: else a
        guesser cycling through more than :data:`MAX_CLIENTS` exempt addresses would push its own counts out
        before their fifth wrong token, and no pause would ever hold it (review: ~1,100 guesses a second)."""
        return record is not None or len(self._clients) < MAX_CLIENTS

    def _is_known_good(self, client: str, now: float) -> bool:
        at = self._known_good.get(client)
        return at is not None and now - at < KNOWN_GOOD_S

    def _is_quiet(self, network: str, now: float) -> bool:
        """No wrong token from ``network`` was compared within :data:`QUIET_AFTER_S` (forgets the stale ones
        at the front on the way: the dict is in order of the last wrong token)."""
        while self._busy:
            oldest = next(iter(self._busy.values()))
            if now - oldest < QUIET_AFTER_S:
                break
            self._busy.popitem(last=False)
        return network not in self._busy

    def _refill(self, now: float) -> None:
        """Refill both parts of the global budget for the time since the last look."""
        elapsed = max(0.0, now - self._budget_at)
        self._shared = min(_SHARED_BURST, self._shared + elapsed * _SHARED_PER_S)
        self._reserve = min(RESERVE_BURST, self._reserve + elapsed * RESERVE_PER_S)
        self._budget_at = now
