"""Admin bearer-token check (constant-time; the token never reaches a log line), with the throttle of
wrong tokens (gateway.web.admin_throttle)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from gateway.config.loader import read_admin_token, token_placeholder, token_weakness
from gateway.errors import ConfigError
from gateway.log_limit import LogLimiter, more_since
from gateway.web.admin_throttle import GLOBAL_WRONG_PER_S, SCOPES, AdminThrottle, Refusal
from gateway.web.errors import Unauthorized, Unavailable, WebError
from gateway.web.forwarded import TRUSTED_PROXIES_KEY, VIA_PROXY, client_label
from gateway.web.logsafe import shown_path
from gateway.web.proxies import LINK_LOCAL, IpNetwork, admin_network_problem, client_address, network_of

logger = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
REFUSED_LOG_EVERY_S = 10.0
# The admin token file is looked at (one stat) at most this often, on an admin call or /healthz.
TOKEN_RECHECK_S = 1.0
# A changed token file is read once it has not changed for this long: an editor or `echo > file`
# writing it in place is not caught half-written (which would be refused as unusable). Counted from the
# file's last change (its change time, which only this host's clock sets) when that is in the past, else
# from when the gateway first saw the change: an idle gateway's first call after a rename takes the file.
TOKEN_SETTLE_S = 1.0


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be the admin token, or None (the config loader checks the same, and a token
    file read while the gateway runs is checked by the loader's :func:`read_admin_token`): too short, a
    placeholder, or easy to guess (:func:`gateway.config.token_strength.token_weakness`)."""
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        return "admin token must be at least %d characters" % MIN_TOKEN_CHARS
    placeholder = token_placeholder(token)
    if placeholder is not None:
        return ("admin token %s: it looks like a placeholder; make a random one, e.g. openssl rand -hex 32"
                % placeholder)
    weakness = token_weakness(token)
    if weakness is not None:
        return "admin token %s" % weakness
    return None


class AdminThrottled(WebError):
    """An admin call not checked because of wrong tokens (429 ``admin_throttled``, with ``Retry-After``)."""

    status = 429
    default_code = "admin_throttled"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """``Retry-After``: whole seconds until the client's next token is compared."""
        return {"Retry-After": str(self.retry_after_s)}


# The coarse network of a client whose wrong tokens share the throttle's reserve (gateway.web.admin_throttle):
# what one site or one hosting customer usually holds.
V4_NETWORK_BITS = 24
V6_NETWORK_BITS = 48


def _client_address(request: web.Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """``request``'s client address as gateway.web.forwarded decides it (behind a proxy of ``[http]
    trusted_proxies``, the address the proxy names; also before that middleware ran, as for ``Expect:
    100-continue``), read by :func:`gateway.web.proxies.client_address` as every per-client rule reads it:
    an IPv4-mapped IPv6 one as its IPv4 address, a socket peer's IPv6 zone id dropped (``fe80::1%eth0`` is
    ``fe80::1``: CPython names a peer without it, so keeping one a transport gave would make one machine two
    throttle keys); the text when it is no address."""
    remote = request.remote
    proxies = request.app.get(TRUSTED_PROXIES_KEY) if request.get(VIA_PROXY) is None else None
    if proxies is not None:
        remote = proxies.client(remote, request.headers.getall("X-Forwarded-For", ()))
    # A zone can only be the socket peer's: an X-Forwarded-For entry with one never becomes the client.
    address = client_address(remote, from_socket=True)
    return address if address is not None else remote or "unknown address"


def _link_local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> IpNetwork | None:
    """The link-local range (gateway.web.proxies.LINK_LOCAL) ``address`` is in, or None."""
    return next((n for n in LINK_LOCAL if n.version == address.version and address in n), None)


def throttle_client(request: web.Request) -> str:
    """The key :class:`AdminThrottle` counts ``request``'s wrong tokens under: its client's address
    (:func:`_client_address`), a global or unique-local IPv6 address by its /64 (one machine is usually
    given a whole /64 to pick addresses from, SLAAC privacy addresses changing daily: keyed by /128 a
    guesser would be a new client at every guess). A link-local IPv6 address is keyed by itself: every
    link-local host on every link is in ``fe80::/64``, so by /64 one host's wrong tokens would pause them
    all, and its address stays the same (made from its interface, not a temporary privacy address). A host that
    takes fresh link-local addresses to guess is held by the global cap and by its network's share
    (:func:`throttle_network`: all link-local addresses are one network)."""
    address = _client_address(request)
    if isinstance(address, ipaddress.IPv6Address) and _link_local(address) is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _admin_network(entry: str | IpNetwork) -> IpNetwork:
    """One ``admin_networks`` entry of :class:`AdminToken`, checked as ``[http] admin_networks`` is.

    Raises:
        ValueError: no network, or one gateway.web.proxies.admin_network_problem refuses.
    """
    network = network_of(entry) if isinstance(entry, str) else entry
    problem = admin_network_problem(network)
    if problem is not None:
        raise ValueError("admin network %r %s" % (str(entry), problem))
    return network


def throttle_network(request: web.Request) -> str:
    """The coarse network of ``request``'s client (IPv4 /24, IPv6 /48) that the throttle's reserve for quiet
    networks is kept by (gateway.web.admin_throttle): one source network cannot take it all. A link-local
    client's is its whole range (``fe80::/10``, ``169.254.0.0/16``): a link-local host picks its own
    address anywhere in it, so by /48 or /24 one host could seem to come from many quiet networks."""
    address = _client_address(request)
    if isinstance(address, str):
        return address
    local = _link_local(address)
    if local is not None:
        return str(local)
    if isinstance(address, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Network((address, V4_NETWORK_BITS), strict=False))
    return str(ipaddress.IPv6Network((address, V6_NETWORK_BITS), strict=False))


# The throttle counter of each metrics registry (one per gateway; several apps may share one).
_THROTTLED: "weakref.WeakKeyDictionary[CollectorRegistry, Counter]" = weakref.WeakKeyDictionary()


def throttled_counter(registry: CollectorRegistry) -> Counter:
    """``civicedge_admin_throttled_total{scope}`` on ``registry`` (made once, both scopes at 0): admin calls
    answered 429 ``admin_throttled``, by ``client`` (its own wrong tokens) or ``global`` (all clients')."""
    counter = _THROTTLED.get(registry)
    if counter is None:
        counter = Counter("civicedge_admin_throttled", "Admin calls answered 429 admin_throttled without their"
                          " token being compared, by scope (client: its own wrong tokens; global: all clients')",
                          ["scope"], registry=registry)
        for scope in SCOPES:
            counter.labels(scope=scope)
        _THROTTLED[registry] = counter
    return counter


def _file_state(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells a replaced or rewritten file (also a chmod: the change time)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hold(path: Path) -> int | None:
    """A descriptor on ``path`` (opened without blocking: a FIFO there does not), or None."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                       | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def _state_after(path: Path, held: int | None, before: object) -> object:
    """The state of ``path`` after a read (as :func:`_file_state`; ``"gone"`` when it cannot be stat'ed), or
    ``None`` when it is still ``before`` and the file held open during the read (``held``) is that file,
    unchanged: what was read is what the file held all along."""
    try:
        now: object = _file_state(os.stat(path))
        same = now == before and (held is None or _file_state(os.fstat(held)) == now)
    except OSError:
        return "gone"
    return None if same else now


class AdminToken:
    """Holds the admin token and checks ``Authorization: Bearer <token>`` headers.

    The token is kept as bytes and compared with :func:`hmac.compare_digest`; ``repr`` never
    shows it, so an accidental log of this object leaks nothing. A refused call is logged as a
    WARNING (remote address, path, reason; never the presented token), at most one line per
    :data:`REFUSED_LOG_EVERY_S` counting the others, so guessing is visible without flooding the log.

    Wrong tokens are throttled (:attr:`throttle`, gateway.web.admin_throttle): after
    :data:`~gateway.web.admin_throttle.FREE_WRONG_TOKENS` from one client, or past the global budget, a call
    is answered 429 ``admin_throttled`` with ``Retry-After`` before its token is compared, counted in
    ``civicedge_admin_throttled_total{scope}`` and logged as the other refusals are (a line of its own
    kind, at most one per :data:`REFUSED_LOG_EVERY_S`).

    With ``path`` (the ``[http] admin_token_file``), a token file replaced or rewritten while the
    gateway runs is taken without a restart: the file is stat'ed at most every :data:`TOKEN_RECHECK_S`
    (on an admin call or a ``/healthz``), and once a change has stayed the same for
    :data:`TOKEN_SETTLE_S` it is read and checked as at start
    (:func:`gateway.config.loader.read_admin_token`: owner-only, not a placeholder, ...). The settle time
    counts from the file's last change as its times say (the later of mtime and ctime), at most
    :data:`TOKEN_SETTLE_S` back from when the gateway first saw it, and never from a time ahead of the
    wall clock (a copy with times kept from a host whose clock is ahead then waits the full settle time
    from the first look). The file is stat'ed again after it is read (its path, and the descriptor held
    open across the read): a file written to or replaced during the read is not taken, nor called
    unusable, but read again once its new state has stayed the same for :data:`TOKEN_SETTLE_S` on the
    gateway's clock (file times set by an NFS, SMB or FUSE server's clock cannot be trusted). A usable new
    token replaces the old one at once (a WARNING says so), and no client is known good to the throttle any
    more (each shows the new token first). An unusable file (or one that is gone)
    fails closed: a file is replaced when the old token may have leaked, so every admin call gets 503
    ``token_file_unusable`` until a usable file is back, with an ERROR naming the problem once per
    change of the file and :attr:`problem` set (a ``/healthz`` reason).

    Args:
        token: the admin token, or None to refuse every admin call.
        clock: monotonic time of the file checks, the log limits and the throttle.
        path: the file ``token`` was read from (followed while the gateway runs).
        admin_networks: networks (``[http] admin_networks``) whose clients the throttle's global budget
            never refuses (their own wrong tokens still pause them).

    Raises:
        ValueError: the token is shorter than 16 characters, a placeholder (fewer than 4 distinct
            characters, or a unit of at most 4 repeated) or easy to guess (:func:`token_problem`); an
            ``admin_networks`` entry the config refuses (no network, every address, link-local, a zone id:
            gateway.web.proxies.admin_network_problem).
    """

    def __init__(self, token: str | None, clock: Callable[[], float] = time.monotonic, *,
                 path: Path | None = None, admin_networks: Iterable[str | IpNetwork] = ()) -> None:
        self._admin_networks = tuple(_admin_network(n) for n in admin_networks)
        if token is not None:
            problem = token_problem(token)
            if problem is not None:
                raise ValueError(problem)
        self._token = token.strip().encode() if token is not None else None
        self._refused_log = LogLimiter(REFUSED_LOG_EVERY_S, clock)
        self._throttled_log = LogLimiter(REFUSED_LOG_EVERY_S, clock)
        self._clock = clock
        self.throttle = AdminThrottle(clock)
        # Only a gateway started with a token follows its file (without one the admin API is off).
        self._path = path if token is not None else None
        self._state: tuple[int, int, int, int, int] | None = None  # of the file the token in use came from
        if self._path is not None:
            try:
                self._state = _file_state(os.stat(self._path))
            except OSError:
                pass  # compared at the first look: any state differs
        self._looked = clock()
        # a changed file state and when (monotonic) it last changed (_changed_at): it is read once it
        # has stayed the same for TOKEN_SETTLE_S
        self._pending: tuple[object, float] | None = None
        self._problem: str | None = None
        self._logged_state: object = None  # the file state an ERROR was logged for (once per change)

    @property
    def problem(self) -> str | None:
        """Why the token file cannot be used (every admin call is refused meanwhile), else None."""
        self.refresh()
        return self._problem

    def refresh(self) -> None:
        """Take a changed token file (at most one look per :data:`TOKEN_RECHECK_S`; see the class)."""
        if self._path is None or self._clock() - self._looked < TOKEN_RECHECK_S:
            return
        self._looked = self._clock()
        try:
            st = os.stat(self._path)
        except OSError as exc:
            self._unusable("missing", "the admin token file %s cannot be read (%s)" % (self._path, exc.strerror))
            return
        state = _file_state(st)
        if state == self._state:
            self._pending = None
            return
        if self._pending is None or self._pending[0] != state:
            self._pending = (state, self._changed_at(st))
        if self._clock() - self._pending[1] < TOKEN_SETTLE_S:
            self._looked -= TOKEN_RECHECK_S  # may still be being written: look again at the next call
            return
        held = _hold(self._path)  # the file being read, to tell whether it changed during the read
        try:
            try:
                token = read_admin_token(self._path).encode()
            except ConfigError as exc:
                error: ConfigError | None = exc
            else:
                error = None
            after = _state_after(self._path, held, state)
        finally:
            if held is not None:
                os.close(held)
        if after is not None:
            # Written to (or replaced) while it was read: what was read may be half a token. The file
            # times cannot tell (NFS, SMB or FUSE servers set them by their own clocks): it is read
            # again once its new state has stayed the same for TOKEN_SETTLE_S (counted from now),
            # and is neither taken nor called unusable now.
            self._pending = (after, self._clock())
            self._looked -= TOKEN_RECHECK_S
            return
        if error is not None:
            self._unusable(state, str(error))
            return
        changed = self._token is not None and not hmac.compare_digest(token, self._token)
        self._token, self._state, self._problem, self._logged_state = token, state, None, None
        self._pending = None
        if changed:
            # Known good meant "knows the old token", which may be why the file was replaced.
            self.throttle.forget_known_good()
            # An admin credential changed: an audit line the quiet gateway keeps (never the token).
            logger.warning("admin token file %s changed: its new token is in use, the previous one is refused",
                           self._path)
        else:
            logger.info("admin token file %s is usable again (same token)", self._path)

    def _changed_at(self, st: os.stat_result) -> float:
        """When (on :attr:`_clock`) the file seen now as ``st`` last changed, as its times say: the later of
        mtime and ctime (``cp -p`` or ``touch -d`` set the mtime to any time; the ctime is when this host
        last changed the inode: a write, rename or chmod),
        taken as at most :data:`TOKEN_SETTLE_S` ago, and as now when it is ahead of the wall clock. A file
        being written in place has times of about now (this host's clock) and so still waits; a file last
        changed a second or more ago is read at the first look."""
        age = time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
        return self._clock() - min(max(age, 0.0), TOKEN_SETTLE_S)

    def _unusable(self, state: object, why: str) -> None:
        # Fail closed: a token file is replaced when the old token may have leaked, so a replacement
        # that cannot be used must not leave the old token working.
        self._problem = "admin token file unusable, admin API refused until it is fixed: %s" % why
        if state != self._logged_state:
            self._logged_state = state
            logger.error("%s; every admin call is refused (503 token_file_unusable) until the file is fixed", why)

    def __repr__(self) -> str:
        return f"AdminToken(configured={self._token is not None})"

    @property
    def configured(self) -> bool:
        """True when an admin token is set (without one every admin call is refused)."""
        return self._token is not None

    def _refuse(self, request: web.Request, message: str, code: str) -> Unauthorized:
        skipped = self._refused_log.allow()
        if skipped is not None:
            logger.warning("refused an admin call from %s to %s %s: %s%s", client_label(request), request.method,
                           shown_path(request), code, more_since(skipped, "refused admin calls"))
        return Unauthorized(message, code=code)

    def _matches(self, presented: str) -> bool:
        assert self._token is not None
        # Header bytes that are not UTF-8 arrive as surrogates: encode them back, never raise (a 500).
        return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), self._token)

    def accepts(self, request: web.Request) -> bool:
        """True when :meth:`check` would let ``request`` through; logs and counts nothing (a refusal is
        logged and counted once, by :meth:`check`, which runs after it). Whether to send ``100 Continue``
        to an admin call (gateway.web.app): a throttled call gets none whatever its token (the ``100``
        would otherwise tell a right guess from a wrong one)."""
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        self.refresh()
        if self._token is None or self._problem is not None or scheme.lower() != "bearer" or not presented:
            return False
        if self.throttle.refusal(throttle_client(request), throttle_network(request),
                                 exempt=self._exempt(request)) is not None:
            return False
        return self._matches(presented)

    def check(self, request: web.Request) -> None:
        """Raise unless the request carries the admin bearer token: :class:`Unauthorized` (401) without it
        or with a wrong one, :class:`AdminThrottled` (429) while its client, or every client, is
        throttled (the token is not compared then), :class:`Unavailable` (503) while the token file is
        unusable."""
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        self.refresh()
        if self._token is None:
            raise Unauthorized("admin API disabled: no admin token configured", code="admin_disabled")
        if self._problem is not None:
            raise Unavailable(self._problem, code="token_file_unusable")
        registry = _metrics_registry(request)
        counter = None if registry is None else throttled_counter(registry)  # the series shows from the first call
        client, network, exempt = throttle_client(request), throttle_network(request), self._exempt(request)
        refusal = self.throttle.refusal(client, network, exempt=exempt)
        if refusal is not None:
            if counter is not None:
                counter.labels(scope=refusal.scope).inc()
            raise self._throttled(request, refusal)
        if scheme.lower() != "bearer" or not presented:
            raise self._refuse(request, "missing bearer token (Authorization: Bearer <token>)", "missing_token")
        if not self._matches(presented):
            self.throttle.wrong(client, network, exempt=exempt)
            raise self._refuse(request, "wrong admin token", "wrong_token")
        self.throttle.right(client)

    def _exempt(self, request: web.Request) -> bool:
        """The client is in ``[http] admin_networks``: the global budget never refuses it."""
        address = _client_address(request)
        return not isinstance(address, str) and any(address in n for n in self._admin_networks)

    def _throttled(self, request: web.Request, refusal: Refusal) -> AdminThrottled:
        if refusal.scope == "client":
            why = ("%d wrong admin tokens in a row from this client: its next token is compared in %d s"
                   % (refusal.wrong_tokens, refusal.retry_after_s))
        else:
            why = ("more than %g wrong admin tokens a second from all clients, from this client's network within"
                   " the last minute too or from so many networks that the share kept for others is spent: tokens"
                   " are compared again in %d s (a client that presented the right token within the last day, or"
                   " one in [http] admin_networks, is still checked)"
                   % (GLOBAL_WRONG_PER_S, refusal.retry_after_s))
        skipped = self._throttled_log.allow()
        if skipped is not None:
            logger.warning("refused an admin call from %s to %s %s: admin_throttled (%s)%s", client_label(request),
                           request.method, shown_path(request), why, more_since(skipped, "throttled admin calls"))
        return AdminThrottled(why + "; the token was not checked", refusal.retry_after_s)


def _metrics_registry(request: web.Request) -> CollectorRegistry | None:
    """The metrics registry of the app serving ``request`` (None when it has none)."""
    # Imported here: gateway.web.context holds the AdminToken of each app, and so imports this module.
    from gateway.web.context import CONTEXT_KEY

    ctx = request.app.get(CONTEXT_KEY)
    registry = None if ctx is None else ctx.metrics_registry
    return registry if isinstance(registry, CollectorRegistry) else None
