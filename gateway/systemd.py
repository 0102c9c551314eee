"""systemd integration without a dependency: readiness notification and journal log priorities.

* :func:`notify` implements the sd_notify(3) protocol: one datagram of ``KEY=value`` lines to the
  unix socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket). With
  ``Type=notify`` systemd then counts the gateway as started only once it is ready to accept frames,
  and shows its ``STATUS=`` in ``systemctl status``. Without ``$NOTIFY_SOCKET`` nothing is sent.
* :func:`stderr_is_journal` tells when stderr is connected to the journal (``$JOURNAL_STREAM`` names
  stderr's device and inode); :class:`JournalFormatter` then starts each log line with its syslog
  priority (``<3>`` for ERROR, ...) so ``journalctl -p err`` selects by level (sd-daemon(3)).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import IO

log = logging.getLogger(__name__)

# sd-daemon(3) prefixes: syslog priorities of the Python levels (CRITICAL is <2>).
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG_PRIORITY = 7


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``, ``"STATUS=..."``) to the service manager; True when sent.

    Does nothing (False) when ``$NOTIFY_SOCKET`` is not set: the gateway was not started by systemd
    with ``Type=notify``. A socket that cannot be reached is logged once at WARNING and is not an
    error: the gateway runs on either way. The send never blocks (it runs on the event loop): when the
    socket's queue is full the notification is dropped (False; logged once too).
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]  # abstract namespace
    elif address.startswith("/"):
        target = address
    else:
        _warn_once("NOTIFY_SOCKET %r is not a unix socket path or @name (not supported); systemd is not told "
                   "the gateway's state" % address[:100])
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            # Never blocks: this runs on the event loop (every few seconds for the watchdog); a service
            # manager whose queue is full gets nothing this time rather than a loop that stalls.
            sock.send("\n".join(states).encode("utf-8"), socket.MSG_DONTWAIT)
    except BlockingIOError:
        _warn_once("the service manager's notify queue at NOTIFY_SOCKET %s is full: a notification was dropped"
                   % address[:100])
        return False
    except OSError as exc:
        _warn_once("cannot notify the service manager at NOTIFY_SOCKET %s: %s" % (address[:100], exc.strerror))
        return False
    return True


# While a long step of the start runs (the copy and migration of an older store), systemd is asked this
# often to wait this much longer for READY=1: a multi-GB copy on slow storage outlasts the default 90 s
# TimeoutStartSec, and a start killed there is restarted into the same copy forever.
EXTEND_EVERY_S = 10.0
EXTEND_BY_S = 60.0
# A write rate slow storage (an SD card, a busy USB disk) still reaches: sizes the extension before one
# long call (SQLite's DROP TABLE of a v1 store's readings is one step, with no progress in between).
SLOW_WRITE_BPS = 2_000_000


class StartExtender:
    """Call it often during a long start step: at most every :data:`EXTEND_EVERY_S` it sends
    ``EXTEND_TIMEOUT_USEC=`` (:data:`EXTEND_BY_S`; systemd 236 and later) and ``STATUS=`` with what runs.

    Cheap between sends (a clock read), and nothing is sent without ``$NOTIFY_SOCKET``.
    """

    def __init__(self, status: str) -> None:
        self.status = status
        self._last: float | None = None

    def __call__(self, *_: object) -> int:
        """Send when due; returns 0 (so it can be SQLite's progress handler: 0 lets the statement go on)."""
        if self._last is None or time.monotonic() - self._last >= EXTEND_EVERY_S:
            self.send()
        return 0

    def send(self, status: str | None = None, *, writes: int = 0) -> None:
        """Send now, with a new ``status`` if given: before one long call that cannot report progress and
        writes ``writes`` bytes, the extension covers them at :data:`SLOW_WRITE_BPS` (at least :data:`EXTEND_BY_S`)."""
        if status is not None:
            self.status = status
        self._last = time.monotonic()
        seconds = max(EXTEND_BY_S, writes / SLOW_WRITE_BPS)
        notify("EXTEND_TIMEOUT_USEC=%d" % int(seconds * 1_000_000), "STATUS=%s" % self.status)


_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(message)


def stderr_is_journal(stream: IO[str] | None = None, environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` (stderr) is the journal: ``$JOURNAL_STREAM`` is ``<device>:<inode>`` of it.

    A child process that inherits the variable but has its stderr redirected elsewhere (a file, a
    pipe) does not match, so its lines carry no priority prefixes.
    """
    import sys

    value = (environ if environ is not None else os.environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat((stream if stream is not None else sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def priority(levelno: int) -> int:
    """The syslog priority of a Python log level (DEBUG and below: 7)."""
    for level, prio in PRIORITIES:
        if levelno >= level:
            return prio
    return DEBUG_PRIORITY


def journal_prefix(levelno: int) -> str:
    """The sd-daemon(3) prefix of a Python log level (``<3>`` for ERROR): what the journal reads off a line."""
    return "<%d>" % priority(levelno)


class JournalFormatter(logging.Formatter):
    """Starts every line of a record (a traceback's too) with ``<priority>``; the journal stores the
    record's lines at that priority and strips the prefix (no timestamp needed: the journal adds it)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record formatted as usual, each line prefixed with its syslog priority."""
        prefix = journal_prefix(record.levelno)
        return "\n".join(prefix + line for line in super().format(record).split("\n"))
