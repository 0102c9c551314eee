"""A cap on concurrent HTTP connections, so a flood of idle connections cannot use up the process's
file descriptors (the serial and BLE links, the SQLite store and /healthz need some too).

aiohttp has no connection limit of its own: every accepted socket gets a request handler and is held
until its keep-alive timeout. :class:`CappedSite` serves the app like ``aiohttp.web.TCPSite`` but
through :class:`ConnectionCap`, which, at the cap, first closes the connection idle the longest (no
request in progress; the least recently active first) and otherwise answers 503 (a lingering close, so
a client that already sent its request reads the 503 instead of a reset).

The cap relies on private attributes of aiohttp's ``RequestHandler`` and ``TCPSite`` (tested with the
aiohttp range pinned in pyproject.toml). :meth:`CappedSite.start` checks they exist and otherwise serves
uncapped like ``TCPSite`` with a WARNING.

pyserial waits on its port with ``select()``, which fails for descriptors >= 1024: the soft open-file
limit is raised only as far as the connections need, and ``[http] max_connections`` should stay below
~900 while a serial link is used.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Callable

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.log_limit import LogLimiter, more_since
from gateway.web import accept_errors

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 256
# File descriptors kept for everything but HTTP: serial/BLE links, the SQLite store and its worker
# threads' connections, log files, the listening socket, a refused connection being closed.
FD_RESERVE = 64
# Connections accepted in one go: asyncio accepts up to the listen backlog sockets per wake-up before
# any reaches the cap, and a connection closed to make room frees its descriptor a loop turn later:
# twice that many descriptors more must be free as well.
BACKLOG = 32
MIN_CONNECTIONS = 4
# Refused connections kept open up to LINGER_S after their 503 (reading and discarding what the client
# sends, so closing does not reset the connection before the client read the 503); beyond this many
# the 503 is written and the connection closed at once.
MAX_LINGERING = 16
LINGER_S = 1.0
REFUSED_LOG_EVERY_S = 60.0

_BUSY_BODY = (b'{"error":{"code":"too_many_connections","message":"the gateway serves its maximum number of'
              b' HTTP connections ([http] max_connections); retry later"}}')
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(_BUSY_BODY)) + _BUSY_BODY


def fd_limit_target(max_connections: int, soft: int, hard: int) -> int:
    """The soft ``RLIMIT_NOFILE`` to set for ``max_connections`` HTTP connections, from the current
    ``soft`` and ``hard`` limits (either may be ``RLIM_INFINITY``): what the connections and the rest
    of the gateway need, at most ``hard``, never below ``soft``. Not the hard limit itself (often
    524288 or more): pyserial's ``select()`` fails for descriptors >= 1024."""
    needed = max_connections + FD_RESERVE + 2 * BACKLOG + MAX_LINGERING
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    return needed if hard == resource.RLIM_INFINITY else min(needed, hard)


def raise_fd_limit(max_connections: int = DEFAULT_MAX_CONNECTIONS) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to :func:`fd_limit_target` (logged at INFO); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = fd_limit_target(max_connections, soft, hard)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. a hard limit above the kernel's nr_open
            logger.info("open-file limit stays %d (raising it to %d failed: %s)", soft, target, exc)
            return int(soft)
        logger.info("open-file limit raised from %d to %d for %d HTTP connections", soft, target, max_connections)
        soft = target
    return int(soft)


def connection_cap(configured: int, fd_limit: int) -> int:
    """The connection cap: ``configured``, lowered to leave :data:`FD_RESERVE` descriptors of
    ``fd_limit`` (``RLIM_INFINITY`` or a negative value: no limit) for the rest of the gateway and
    :data:`BACKLOG` twice for bursts of accepted connections not yet counted, and
    :data:`MAX_LINGERING` for refused connections being closed."""
    if fd_limit < 0 or fd_limit == resource.RLIM_INFINITY:
        return configured
    return max(MIN_CONNECTIONS, min(configured, fd_limit - FD_RESERVE - 2 * BACKLOG - MAX_LINGERING))


class _Refused(asyncio.Protocol):
    """A connection above the cap: a fixed 503, then a lingering close when ``linger`` (nothing is parsed).

    Closing a socket with unread data makes the kernel send a reset, which can discard the 503 before
    the client reads it (a client sends its request right away). So the 503 is followed by a FIN,
    what the client sends is read and dropped, and the socket is closed at the client's EOF or after
    :data:`LINGER_S`.
    """

    def __init__(self, cap: ConnectionCap, linger: bool) -> None:
        self._cap = cap
        self._linger = linger
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(_BUSY)
        if not self._linger or not transport.can_write_eof():
            transport.close()
            return
        self._cap.lingering += 1
        transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # read and dropped: unread data at close would reset the connection

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._cap.lingering -= 1


class _Tracked(asyncio.Protocol):
    """Passes everything to an aiohttp request handler and tells the cap when the client sends data."""

    def __init__(self, cap: ConnectionCap, handler: RequestHandler) -> None:
        self._cap = cap
        self.handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        handler = self.handler
        handler.data_received(data)
        self._cap._active(handler, partial=_idle(handler))  # bytes in, no complete request yet: partial

    def eof_received(self) -> None:
        self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.handler.connection_lost(exc)
        finally:
            self._cap._lost(self.handler)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


def _gone(handler: RequestHandler) -> bool:
    # aiohttp clears a handler's manager when its connection is lost (and only then).
    return handler._manager is None


def _idle(handler: RequestHandler) -> bool:
    # As aiohttp's own keep-alive check: waiting for a request, none queued or being answered.
    waiter = handler._waiter
    return (waiter is not None and not waiter.done() and not handler._messages
            and handler._current_request is None)


class ConnectionCap:
    """Protocol factory over aiohttp's server that keeps at most ``limit`` connections open.

    Args:
        server: the runner's ``aiohttp.web.Server`` (the factory of request handlers).
        limit: most connections served at once.
        clock: monotonic clock (rate of the "refused" WARNING).
    """

    def __init__(self, server: web.Server, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._server = server
        self.limit = limit
        # Open handlers, least recently active first (accepted or last received data), each with
        # whether its last data left a partly received request.
        self._live: dict[RequestHandler, bool] = {}
        self.lingering = 0  # refused connections in their lingering close
        self.refused = 0
        self.evicted = 0
        self._warn = LogLimiter(REFUSED_LOG_EVERY_S, clock)

    @property
    def open(self) -> int:
        """Connections open now (handlers whose connection is not lost)."""
        self._prune()
        return len(self._live)

    def _prune(self) -> None:
        self._live = {h: partial for h, partial in self._live.items() if not _gone(h)}

    def _lost(self, handler: RequestHandler) -> None:
        # Dropped as its connection closes: a closed connection's handler (its request, buffers) is not
        # kept until the next time the cap is reached.
        self._live.pop(handler, None)

    def _active(self, handler: RequestHandler, partial: bool) -> None:
        if self._live.pop(handler, None) is not None:
            self._live[handler] = partial  # now the most recently active

    def _evict_idle(self) -> bool:
        """Close the connection idle the longest (least recently active); False when every one is busy.

        A connection holding a partly received request is closed only when no other is idle (else a
        flood of slowly sent requests could hold every slot)."""
        for spare_partial in (True, False):
            for handler, partial in self._live.items():
                if _idle(handler) and not (partial and spare_partial):
                    del self._live[handler]
                    handler.force_close()
                    self.evicted += 1
                    return True
        return False

    def __call__(self) -> asyncio.BaseProtocol:
        # Handlers leave at connection_lost (_lost); pruned at the cap too, for any aiohttp lost otherwise.
        if len(self._live) >= self.limit:
            self._prune()
            if len(self._live) >= self.limit and not self._evict_idle():
                self.refused += 1
                skipped = self._warn.allow()
                if skipped is not None:
                    logger.warning("refused an HTTP connection: %d connections are open, the most allowed"
                                   " ([http] max_connections, lowered to fit the open-file limit), and none is"
                                   " idle%s", len(self._live), more_since(skipped, "refused"))
                return _Refused(self, linger=self.lingering < MAX_LINGERING)
        handler = self._server()
        self._live[handler] = False
        return _Tracked(self, handler)


class CappedSite(web.TCPSite):
    """``aiohttp.web.TCPSite`` whose connections go through a :class:`ConnectionCap` of ``max_connections``."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int) -> None:
        super().__init__(runner, host, port, backlog=BACKLOG)
        self.max_connections = max_connections
        self.cap: ConnectionCap | None = None
        self._accept_log: accept_errors.AcceptErrorFilter | None = None

    async def start(self) -> None:
        """Listen, as ``TCPSite.start`` does, with the capped protocol factory; without the aiohttp
        internals the cap needs, listen as ``TCPSite`` does (uncapped) with a WARNING."""
        server = self._runner.server
        missing = _missing_internals(self, server)
        if missing:
            logger.warning("HTTP connection cap disabled: this aiohttp (%s) lacks %s; serving uncapped (use the"
                           " aiohttp versions pinned in pyproject.toml)", aiohttp.__version__, ", ".join(missing))
            await super().start()
            return
        await web.BaseSite.start(self)
        assert server is not None
        self.cap = cap = ConnectionCap(server, self.max_connections)
        self._server = await asyncio.get_running_loop().create_server(
            cap, self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
        # At the open-file limit asyncio logs an ERROR with a traceback per accept() retry: condensed.
        self._accept_log = accept_errors.install(self.max_connections, lambda: cap.open)

    async def stop(self) -> None:
        """Stop listening, as ``TCPSite.stop`` does, and log the accept() failures held back (after asyncio's
        retry of the last one has run: at most :data:`accept_errors.RETRY_DELAY_S` more)."""
        try:
            await super().stop()
            if self._accept_log is not None:
                # asyncio's accept() retry still pending fails on the closed socket: let it run filtered
                await asyncio.sleep(self._accept_log.retry_pending_s())
        finally:
            if self._accept_log is not None:
                accept_errors.remove(self._accept_log)
                self._accept_log = None


_SITE_INTERNALS = ("_host", "_port", "_backlog", "_reuse_address", "_reuse_port", "_runner")
_HANDLER_INTERNALS = ("_manager", "_waiter", "_messages", "_current_request")


def _missing_internals(site: web.TCPSite, server: web.Server | None) -> list[str]:
    """The private aiohttp attributes the cap uses that this aiohttp lacks (none: the cap works)."""
    missing = ["TCPSite." + name for name in _SITE_INTERNALS if not hasattr(site, name)]
    if server is None:
        return missing + ["runner.server"]
    handler = server()  # not connected: nothing to clean up
    missing += ["RequestHandler." + name for name in _HANDLER_INTERNALS if not hasattr(handler, name)]
    return missing + ["RequestHandler." + name for name in ("force_close", "data_received", "eof_received",
                                                            "connection_made", "connection_lost",
                                                            "pause_writing", "resume_writing")
                      if not callable(getattr(handler, name, None))]
