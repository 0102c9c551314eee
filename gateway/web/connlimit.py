"""A cap on concurrent HTTP connections, so a flood of idle connections cannot use up the process's
file descriptors (the serial and BLE links, the SQLite store and /healthz need some too).

aiohttp has no connection limit of its own: every accepted socket gets a request handler and is held
until its keep-alive timeout. :class:`CappedSite` serves the app like ``aiohttp.web.TCPSite`` but
through :class:`ConnectionCap`, which, at the cap, first closes the connection idle the longest (no
request in progress; the least recently active first), then the one stalled in writing the longest (see
below) and otherwise answers 503 (a lingering close, so a client that already sent its request reads the
503 instead of a reset).

Nor does aiohttp time out a write: a client that never reads its answer holds its connection, and the
handler blocked in ``drain()``, for as long as it stays connected. Each connection's transport keeps no
bytes beyond what the kernel takes (write buffer high-water mark 0: any byte left over pauses the
writer), and the time since the client's kernel last acknowledged bytes while writing is paused is its
stall: at the cap one stalled :data:`STALL_EVICT_S` may be closed for a new one (the longest stalled
first), and one stalled :data:`STALL_TIMEOUT_S` (an hour) is aborted anyway. Progress, not the answer's
total time, is measured: a slow client that keeps reading a large CSV export is not cut off while the
cap is not reached, and yields its slot only after clients that stopped reading.

The cap relies on private attributes of aiohttp's ``RequestHandler`` and ``TCPSite`` (tested with the
aiohttp range pinned in pyproject.toml). :meth:`CappedSite.start` checks they exist and otherwise serves
uncapped like ``TCPSite`` with a WARNING.

pyserial waits on its port with ``select()``, which fails for descriptors >= 1024: the soft open-file
limit is raised only as far as the connections need, and ``[http] max_connections`` should stay below
~900 while a serial link is used.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import resource
import struct
import termios
import time
from typing import Callable

import aiohttp
from aiohttp import web, web_fileresponse
from aiohttp.web_protocol import RequestHandler

from gateway.log_limit import LogLimiter, more_since
from gateway.web import accept_errors

logger = logging.getLogger(__name__)
# Linux's SIOCOUTQ (the same number as TIOCOUTQ): a TCP socket's bytes not yet acknowledged by the peer.
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)

# Files (/static, the dashboard page) go through the connection's write buffer, not the kernel's sendfile,
# which bypasses it: a client that stopped reading a file was never seen stalled, so clients asking for
# /static/dashboard.js and not reading held every slot (aiohttp's AIOHTTP_NOSENDFILE, set for this process;
# the files are a few KB).
setattr(web_fileresponse, "NOSENDFILE", True)

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
# A connection whose client acknowledges no byte of its answer for this long is aborted. Progress is what the
# client's kernel acknowledged (the transport's buffer plus the socket's unacknowledged bytes, SIOCOUTQ,
# going down), not what our kernel took. Still, a client reading slowly through large socket buffers reopens
# its window in steps that grow to half its receive buffer (Linux autotunes it to megabytes), so at a few KB/s
# even acknowledgements can be many minutes apart (a review measured none for 15 s at 20 KB/s): a short
# timeout cut slow consumers (`curl | a script inserting rows`). So the slots are kept free under pressure
# (STALL_EVICT_S, the longest stalled first), and this only ends a client that took nothing for an hour.
STALL_TIMEOUT_S = 3600.0
# At the cap, a connection stalled this long is closed for a new one (the longest stalled first, after the
# idle ones). Not 0: every fast download pauses for milliseconds many times; a client that takes nothing for
# 2 s while the cap is reached yields its slot to one that may read.
STALL_EVICT_S = 2.0
# A paused connection's progress is sampled this often (s): a progress is dated to the sample that saw it, so
# one long ago (the client's kernel acknowledging what was in flight when the writer paused) does not look
# recent to the first look at the cap (STALL_EVICT_S), minutes later.
STALL_SAMPLE_S = 0.5
# Bytes kept in a transport's own buffer before its writer is paused: none beyond the kernel's send buffer,
# so every stalled client pauses its writer (the stall clock runs) and a closed connection frees its
# descriptor (asyncio keeps a closing transport with unsent bytes open until they are sent).
WRITE_BUFFER_HIGH = 0

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
    """Passes everything to an aiohttp request handler, tells the cap when the client sends data and
    times the client's stall while writing is paused (see the module docstring)."""

    def __init__(self, cap: ConnectionCap, handler: RequestHandler) -> None:
        self._cap = cap
        self.handler = handler
        self.partial = False  # the client's last data left a partly received request
        self.transport: asyncio.Transport | None = None
        self.stalled_since: float | None = None  # loop time of the last progress while writing is paused
        self._buffered = 0  # the transport's write buffer size when last looked at
        self._check: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        handler = self.handler
        handler.data_received(data)
        self._cap._active(handler, partial=_idle(handler))  # bytes in, no complete request yet: partial

    def eof_received(self) -> None:
        self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stalled_since = None
        self.transport = None
        if self._check is not None:
            self._check.cancel()
            self._check = None
        try:
            self.handler.connection_lost(exc)
        finally:
            self._cap._lost(self.handler)

    def pause_writing(self) -> None:
        self.handler.pause_writing()
        if self.transport is not None:
            self.stalled_since = asyncio.get_running_loop().time()
            self._buffered = self._unacknowledged()
            if self._check is None:
                self._check = asyncio.get_running_loop().call_later(min(self._cap.stall_timeout_s, STALL_SAMPLE_S),
                                                                    self._check_stall)

    def resume_writing(self) -> None:
        self.stalled_since = None  # the buffer drained (the pending check finds nothing to do)
        self.handler.resume_writing()

    def _unacknowledged(self) -> int:
        """Bytes of the answer the client has not acknowledged yet: the transport's buffer and the socket's
        send queue (SIOCOUTQ: sent or not, unacknowledged; 0 where the platform cannot say)."""
        assert self.transport is not None
        size = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None and _OUTQ is not None:
            try:
                size += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
            except (OSError, ValueError):
                pass
        return size

    def stalled_for(self, now: float) -> float:
        """Seconds the client has acknowledged no byte while writing is paused (0.0 when it is not paused)."""
        if self.stalled_since is None or self.transport is None:
            return 0.0
        size = self._unacknowledged()
        if size < self._buffered:  # the client's kernel acknowledged bytes: it read some
            self.stalled_since = now
        self._buffered = size  # a write while paused raises the mark to compare with
        return now - self.stalled_since

    def _check_stall(self) -> None:
        self._check = None
        loop = asyncio.get_running_loop()
        stalled = self.stalled_for(loop.time())
        if self.stalled_since is None or self.transport is None:
            return
        timeout = self._cap.stall_timeout_s
        if stalled >= timeout:
            self._cap._stalled(self, stalled)
            return
        self._check = loop.call_later(min(STALL_SAMPLE_S, timeout - stalled), self._check_stall)

    def close(self, abort: bool = False) -> None:
        """Close now: the handler stops, and unsent bytes (any when ``abort``) are dropped with a reset
        rather than kept with the descriptor until a client that does not read takes them."""
        self.handler.force_close()
        transport = self.transport
        if transport is not None and (abort or transport.get_write_buffer_size() > 0):
            transport.abort()


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
        clock: monotonic clock (rate of the "refused" WARNING and the "stalled" INFO line).
        stall_timeout_s: a connection whose client acknowledges no byte of its answer this long is aborted
            (None: :data:`STALL_TIMEOUT_S`).
    """

    def __init__(self, server: web.Server, limit: int, clock: Callable[[], float] = time.monotonic,
                 stall_timeout_s: float | None = None) -> None:
        self._server = server
        self.limit = limit
        self.stall_timeout_s = STALL_TIMEOUT_S if stall_timeout_s is None else stall_timeout_s
        # Open handlers, least recently active first (accepted or last received data), each with its
        # protocol (whether its last data left a partly received request, its write stall).
        self._live: dict[RequestHandler, _Tracked] = {}
        self.lingering = 0  # refused connections in their lingering close
        self.refused = 0
        self.evicted = 0
        self.stalled = 0  # connections aborted after STALL_TIMEOUT_S without progress
        self._warn = LogLimiter(REFUSED_LOG_EVERY_S, clock)
        self._warn_stalled = LogLimiter(REFUSED_LOG_EVERY_S, clock)

    @property
    def open(self) -> int:
        """Connections open now (handlers whose connection is not lost)."""
        self._prune()
        return len(self._live)

    def _prune(self) -> None:
        self._live = {h: conn for h, conn in self._live.items() if not _gone(h)}

    def _lost(self, handler: RequestHandler) -> None:
        # Dropped as its connection closes: a closed connection's handler (its request, buffers) is not
        # kept until the next time the cap is reached.
        self._live.pop(handler, None)

    def _active(self, handler: RequestHandler, partial: bool) -> None:
        conn = self._live.pop(handler, None)
        if conn is not None:
            conn.partial = partial
            self._live[handler] = conn  # now the most recently active

    def _stalled(self, conn: _Tracked, stalled_s: float) -> None:
        # A client that took no byte for stall_timeout_s: aborted (its descriptor freed at once).
        self._live.pop(conn.handler, None)
        conn.close(abort=True)
        self.stalled += 1
        skipped = self._warn_stalled.allow()
        if skipped is not None:
            logger.info("closed an HTTP connection whose client took no byte of its answer for %.0f s%s",
                        stalled_s, more_since(skipped, "closed"))

    def _evict(self) -> bool:
        """Close the connection idle the longest (least recently active), else the one stalled in writing
        the longest if it is stalled at least :data:`STALL_EVICT_S`; False when none is.

        A connection holding a partly received request is closed only when no other is idle (else a
        flood of slowly sent requests could hold every slot). A stalled writer only after every idle one:
        a client that reads again, however slowly, restarts its stall clock, so many connections that never
        read (one attacker) are closed before a slow download."""
        for spare_partial in (True, False):
            for handler, conn in self._live.items():
                if _idle(handler) and not (conn.partial and spare_partial):
                    del self._live[handler]
                    conn.close()
                    self.evicted += 1
                    return True
        now = asyncio.get_running_loop().time()
        longest: _Tracked | None = None
        longest_s = STALL_EVICT_S
        for conn in self._live.values():
            stalled_s = conn.stalled_for(now)
            if stalled_s >= longest_s:
                longest, longest_s = conn, stalled_s
        if longest is None:
            return False
        del self._live[longest.handler]
        longest.close(abort=True)
        self.evicted += 1
        return True

    def __call__(self) -> asyncio.BaseProtocol:
        # Handlers leave at connection_lost (_lost); pruned at the cap too, for any aiohttp lost otherwise.
        if len(self._live) >= self.limit:
            self._prune()
            if len(self._live) >= self.limit and not self._evict():
                self.refused += 1
                skipped = self._warn.allow()
                if skipped is not None:
                    logger.warning("refused an HTTP connection: %d connections are open, the most allowed"
                                   " ([http] max_connections, lowered to fit the open-file limit), and none is"
                                   " idle or stalled%s", len(self._live), more_since(skipped, "refused"))
                return _Refused(self, linger=self.lingering < MAX_LINGERING)
        handler = self._server()
        conn = self._live[handler] = _Tracked(self, handler)
        return conn


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
