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
from typing import IO

log = logging.getLogger(__name__)

# sd-daemon(3) prefixes: syslog priorities of the Python levels (CRITICAL is <2>).
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG_PRIORITY = 7


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``, ``"STATUS=..."``) to the service manager; True when sent.

    Does nothing (False) when ``$NOTIFY_SOCKET`` is not set: the gateway was not started by systemd
    with ``Type=notify``. A socket that cannot be reached is logged once at WARNING and is not an
    error: the gateway runs on either way.
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
            sock.sendall("\n".join(states).encode("utf-8"))
    except OSError as exc:
        _warn_once("cannot notify the service manager at NOTIFY_SOCKET %s: %s" % (address[:100], exc.strerror))
        return False
    return True


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


class JournalFormatter(logging.Formatter):
    """Starts every line of a record (a traceback's too) with ``<priority>``; the journal stores the
    record's lines at that priority and strips the prefix (no timestamp needed: the journal adds it)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record formatted as usual, each line prefixed with its syslog priority."""
        prefix = "<%d>" % priority(record.levelno)
        return "\n".join(prefix + line for line in super().format(record).split("\n"))
