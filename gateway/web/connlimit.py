"""A cap on concurrent HTTP connections, so a flood of idle connections cannot use up the process's
file descriptors (the serial and BLE links, the SQLite store and /healthz need some too).

aiohttp has no connection limit of its own: every accepted socket gets a request handler and is held
until its keep-alive timeout. :class:`CappedSite` serves the app like ``aiohttp.web.TCPSite`` but
through :class:`ConnectionCap`, which, at the cap, first closes the connection idle the longest (no
request in progress) and otherwise answers 503 at once without reading a byte.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.log_limit import LogLimiter, more_since

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
REFUSED_LOG_EVERY_S = 60.0

_BUSY_BODY = (b'{"error":{"code":"too_many_connections","message":"the gateway serves its maximum number of'
              b' HTTP connections ([http] max_connections); retry later"}}')
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(_BUSY_BODY)) + _BUSY_BODY


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (logged at INFO); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. a hard limit above the kernel's nr_open
            logger.info("open-file limit stays %d (raising it to the hard limit %d failed: %s)", soft, hard, exc)
            return int(soft)
        logger.info("open-file limit raised from %d to the hard limit %d", soft, hard)
        soft = hard
    return int(soft)


def connection_cap(configured: int, fd_limit: int) -> int:
    """The connection cap: ``configured``, lowered to leave :data:`FD_RESERVE` descriptors of
    ``fd_limit`` (``RLIM_INFINITY`` or a negative value: no limit) for the rest of the gateway and
    :data:`BACKLOG` twice for bursts of accepted connections not yet counted."""
    if fd_limit < 0 or fd_limit == resource.RLIM_INFINITY:
        return configured
    return max(MIN_CONNECTIONS, min(configured, fd_limit - FD_RESERVE - 2 * BACKLOG))


class _Refused(asyncio.Protocol):
    """A connection above the cap: a fixed 503, then closed (nothing is read or parsed)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


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
        self._live: dict[RequestHandler, None] = {}  # in the order they were accepted
        self.refused = 0
        self.evicted = 0
        self._warn = LogLimiter(REFUSED_LOG_EVERY_S, clock)

    @property
    def open(self) -> int:
        """Connections open now (handlers whose connection is not lost)."""
        self._prune()
        return len(self._live)

    def _prune(self) -> None:
        self._live = {h: None for h in self._live if not _gone(h)}

    def _evict_idle(self) -> bool:
        """Close the connection idle the longest; False when every connection is busy."""
        for handler in self._live:
            if _idle(handler):
                del self._live[handler]
                handler.force_close()
                self.evicted += 1
                return True
        return False

    def __call__(self) -> asyncio.BaseProtocol:
        # Pruned only at the cap: below it nothing is scanned per connection.
        if len(self._live) >= self.limit:
            self._prune()
            if len(self._live) >= self.limit and not self._evict_idle():
                self.refused += 1
                skipped = self._warn.allow()
                if skipped is not None:
                    logger.warning("refused an HTTP connection: %d connections are open, the most allowed"
                                   " ([http] max_connections, lowered to fit the open-file limit), and none is"
                                   " idle%s", len(self._live), more_since(skipped, "refused"))
                return _Refused()
        handler = self._server()
        self._live[handler] = None
        return handler


class CappedSite(web.TCPSite):
    """``aiohttp.web.TCPSite`` whose connections go through a :class:`ConnectionCap` of ``max_connections``."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int) -> None:
        super().__init__(runner, host, port, backlog=BACKLOG)
        self.max_connections = max_connections
        self.cap: ConnectionCap | None = None

    async def start(self) -> None:
        """Listen, as ``TCPSite.start`` does, with the capped protocol factory."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self.cap = ConnectionCap(server, self.max_connections)
        self._server = await asyncio.get_running_loop().create_server(
            self.cap, self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
