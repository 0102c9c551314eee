"""Why a write to the store failed with a bare SQLite "disk I/O error": the likely causes it can see.

SQLite reports a write refused by the process's file-size limit (``ulimit -f``, ``LimitFSIZE=`` of a
systemd unit: the kernel answers ``EFBIG``, and Python ignores the ``SIGXFSZ`` that comes with it) as
``SQLITE_IOERR_WRITE``, "disk I/O error", and a full file system mostly as ``SQLITE_FULL`` but
sometimes (the ``-shm``, a checkpoint) as an I/O error too. Python's sqlite3 does not expose the
``errno`` behind either, so the conditions themselves are looked at.
"""

from __future__ import annotations

import os
import resource
import sqlite3
from pathlib import Path

from gateway.storage.disk_space import free_bytes

# Free space below which a file system counts as full for the hint (a few pages of a batch).
NEARLY_FULL_BYTES = 1024 * 1024


def io_error(exc: sqlite3.Error) -> bool:
    """True for an SQLite I/O error or "database or disk is full" (extended codes share the low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL)


def write_failure_hint(db: Path) -> str:
    """``" (likely cause: ...)"`` naming a finite file-size limit the store's files reach, or a (nearly)
    full file system under ``db``; ``""`` when neither shows."""
    causes = []
    soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        sizes = []
        for p in (db, db.with_name(db.name + "-wal")):
            try:
                sizes.append((p, os.stat(p).st_size))
            except OSError:
                continue
        biggest = max(sizes, key=lambda s: s[1], default=None)
        at = "" if biggest is None else "; %s is %d bytes" % biggest
        causes.append("the gateway's file-size limit (ulimit -f, RLIMIT_FSIZE) is %d bytes%s: raise it "
                      "(systemd: LimitFSIZE=infinity; shell: ulimit -f unlimited) and restart the gateway" % (soft, at))
    free = free_bytes(db)
    if free is not None and free < NEARLY_FULL_BYTES:
        causes.append("the file system holding %s is full (%d bytes free): free space" % (db.parent, free))
    return " (likely cause: %s)" % "; ".join(causes) if causes else ""
