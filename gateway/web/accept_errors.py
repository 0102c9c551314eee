"""One WARNING a minute, not an ERROR with a traceback per attempt, when the HTTP listener cannot accept
for want of file descriptors.

At the open-file limit asyncio's ``accept()`` fails with ``EMFILE`` and its event loop logs ``socket.accept()
out of system resource`` at ERROR with a traceback, each time it retries (several times a second per
listening socket: a QA drill under ``prlimit --nofile=48`` logged 76,611 of them, 34 MB, in 60 s). journald
then drops messages by its rate limit, the gateway's own among them, and /metrics cannot answer either,
so nothing else says why. :class:`AcceptErrorFilter` sits on the ``asyncio`` logger while the HTTP site
listens: the first such record becomes one WARNING that names the open-file limit and the connection cap
(``[http] max_connections``), the next ones are counted and dropped for :data:`EVERY_S`, and the next line
(or the closing line at stop) says how many there were.

After such a failure asyncio retries listening :data:`RETRY_DELAY_S` later by a timer that closing the server
does not cancel: if the site stopped meanwhile, the retry fails on the closed socket (``ValueError: Invalid
file descriptor: -1``, an ERROR with a traceback). The filter drops that one record too, and the site keeps
it installed until the retry has run (:meth:`AcceptErrorFilter.retry_pending_s`).
"""

from __future__ import annotations

import asyncio.constants
import errno
import logging
import os
import resource
import time
from typing import Callable

from gateway.log_limit import LogLimiter

logger = logging.getLogger(__name__)

ACCEPT_ERROR = "socket.accept() out of system resource"  # asyncio's message (selector_events)
EVERY_S = 60.0
RETRY_DELAY_S = float(asyncio.constants.ACCEPT_RETRY_DELAY)  # asyncio's accept() retry timer
STALE_RETRY = "Exception in callback BaseSelectorEventLoop._start_serving("  # the retry after close


def _soft_fd_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return -1 if soft == resource.RLIM_INFINITY else int(soft)


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))  # needs a descriptor itself: None at the limit
    except OSError:
        return None


class AcceptErrorFilter(logging.Filter):
    """Condenses asyncio's ``socket.accept() out of system resource`` records (see the module docstring).

    Args:
        max_connections: the HTTP connection cap in force (``[http] max_connections``, lowered to fit the
            open-file limit at start).
        open_connections: how many HTTP connections are open now.
        clock: monotonic time source.
    """

    def __init__(self, max_connections: int, open_connections: Callable[[], int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._max = max_connections
        self._open = open_connections
        self._limit = LogLimiter(EVERY_S, clock)
        self._clock = clock
        self.failures = 0  # every accept() failure seen
        self.unlogged = 0  # failures since the last line about them
        self.last_failure: float | None = None  # clock() at the last one
        self.stale_retries = 0  # asyncio retries that ran after the site had closed (dropped)

    def retry_pending_s(self) -> float:
        """Seconds until asyncio's retry timer for the last accept() failure has run (0: none pending)."""
        if self.last_failure is None:
            return 0.0
        return max(0.0, self.last_failure + RETRY_DELAY_S + 0.1 - self._clock())

    def _stale_retry(self, record: logging.LogRecord) -> bool:
        # only the retry of a failure this filter saw, when it is due: another server's is not ours to hide
        if self.last_failure is None or self._clock() - self.last_failure > RETRY_DELAY_S + 1.0:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        return (isinstance(record.msg, str) and record.msg.startswith(STALE_RETRY)
                and isinstance(exc, ValueError) and "Invalid file descriptor" in str(exc))

    def filter(self, record: logging.LogRecord) -> bool:
        """Let other records pass; rewrite the first accept failure of an interval into the WARNING,
        drop (and count) the others."""
        if self._stale_retry(record):
            self.stale_retries += 1
            return False
        if not isinstance(record.msg, str) or not record.msg.startswith(ACCEPT_ERROR):
            return True
        self.last_failure = self._clock()
        self.failures += 1
        self.unlogged += 1
        skipped = self._limit.allow()
        if skipped is None:
            return False
        failures, self.unlogged = self.unlogged, 0
        exc = record.exc_info[1] if record.exc_info else None
        fds = _open_fds()
        code = getattr(exc, "errno", None)
        # asyncio says "out of system resource" for all four; only EMFILE is this process's own limit
        if code == errno.ENFILE:
            cause = "the system's open-file table is full (fs.file-max; another process holds the files)"
        elif code in (errno.ENOBUFS, errno.ENOMEM):
            cause = "the kernel is out of memory for sockets"
        else:
            cause = "the process is at its open-file limit"
        record.msg = ("HTTP connections cannot be accepted: accept() failed %d time(s)%s (%s): %s"
                      " (RLIMIT_NOFILE %s, %s descriptors open; %d HTTP connection(s) open,"
                      " cap %d from [http] max_connections); at this process's limit raise LimitNOFILE= or lower"
                      " [http] max_connections (docs/gateway.md, File descriptors); at most one such line every %d s")
        record.args = (failures, " since the last such line" if skipped else "", exc or "no error given", cause,
                       _soft_fd_limit(), "?" if fds is None else fds, self._open(), self._max, int(EVERY_S))
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info = record.exc_text = None  # the traceback is asyncio's, the same every time
        return True

    def flush(self) -> None:
        """Log the failures held back since the last line (the site stops), once."""
        if self.unlogged:
            logger.warning("HTTP connections: %d more accept() failure(s) at the open-file limit since the last"
                           " such line", self.unlogged)
            self.unlogged = 0
        self._limit.reset()


def install(max_connections: int, open_connections: Callable[[], int]) -> AcceptErrorFilter:
    """Put an :class:`AcceptErrorFilter` on the ``asyncio`` logger; :func:`remove` takes it off."""
    flt = AcceptErrorFilter(max_connections, open_connections)
    logging.getLogger("asyncio").addFilter(flt)
    return flt


def remove(flt: AcceptErrorFilter) -> None:
    """Take ``flt`` off the ``asyncio`` logger and log what it held back."""
    logging.getLogger("asyncio").removeFilter(flt)
    flt.flush()
