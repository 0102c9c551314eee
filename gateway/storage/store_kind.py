"""What the file at ``[storage] path`` is, found without changing it: the one check ``gateway run``
(:class:`gateway.storage.store.ReportStore`) and ``run --check`` make before they touch a store.

The store writes its tables into any SQLite database it opens, switches it to WAL, makes it
owner-only and puts its ``.lock`` beside it; a ``[storage] path`` that names another program's
database (the device registry's ``devices.sqlite``) or a file that is no database at all (a text
file) must be refused before any of that, with the same reason and message whichever command finds it.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from gateway.errors import StorageError
from gateway.storage.damage import primary_code
from gateway.storage.sqlite_uri import open_for_check, wal_has_content

# Every SQLite 3 database file starts with these 16 bytes and is at least one page of at least 512
# bytes (https://www.sqlite.org/fileformat.html, 1.3).
SQLITE_HEADER = b"SQLite format 3\x00"
MIN_DATABASE_BYTES = 512

ABSENT = "absent"  # no file: the store creates it
EMPTY = "empty"  # a 0-byte file or a database without tables: the store initialises it
STORE = "store"  # a civicedge report store (any schema version; too new is refused by the schema check)


def store_kind(path: Path, *, running: bool = False) -> str:
    """Say what ``path`` is for a report store: :data:`ABSENT`, :data:`EMPTY` or :data:`STORE`.

    Reads only, and only through SQLite: its size, then its table names through
    :func:`gateway.storage.sqlite_uri.open_for_check`, which creates nothing beside the file. A store is
    judged together with its ``-wal`` when that holds pages, as any SQLite reader reads it: after a
    gateway was killed, or stopped on a full disk, during a checkpoint the main file alone is half
    old, half new and reads as damaged, while the store with its ``-wal`` is whole (and a store killed
    right after it was created has its tables in the ``-wal`` only). ``running`` True (a gateway holds
    the store) reads it plainly read-only. ``run --check`` reads the schema version the same way.

    A report store has a ``meta`` table recording ``schema_version`` (every schema version has one),
    or, from a first start interrupted before that row was written, its ``reports`` and ``chain`` tables.

    Raises:
        StorageError: reason ``corrupt`` when SQLite finds the database damaged ("database disk image
            is malformed"), or when a file a gateway has run on (its ``.lock`` is beside it) is no
            longer an SQLite database; ``open_failed`` when ``path`` is a directory or another
            non-regular file, cannot be read, is not an SQLite database (shorter than one page, or not
            starting with its header) or SQLite cannot read it (an I/O error); ``not_a_store`` when it
            is a database with tables that is not a report store. Nothing is changed in any case.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ABSENT
    except OSError as exc:
        raise StorageError("cannot open report store %s: %s" % (path, exc.strerror or exc),
                           reason="open_failed") from exc
    if stat.S_ISDIR(st.st_mode):
        raise StorageError("report store %s is a directory; [storage] path names the database file" % path,
                           reason="open_failed")
    if not stat.S_ISREG(st.st_mode):
        raise StorageError("report store %s is not a regular file (a device, pipe or socket); [storage] path names "
                           "the database file" % path, reason="open_failed")
    if st.st_size == 0:
        if wal_has_content(path):
            # Never ours as it is (setting WAL mode writes the header into the main file), and never
            # opened: SQLite deletes the -wal of an empty database file, even through a read-only open.
            raise _empty_with_wal(path)
        return EMPTY
    # The file is not opened here but by SQLite only (open_for_check, before the store's own connection
    # exists: closing a descriptor of a database drops the POSIX locks the process holds on it). SQLite
    # checks the header itself (SQLITE_NOTADB), but reads a file shorter than its smallest page as an
    # empty database (and writes one into it): no database is that short.
    if 0 < st.st_size < MIN_DATABASE_BYTES:
        raise not_a_database(path, "%d byte(s), shorter than any SQLite database" % st.st_size)
    tables, marked = _look(path, running)
    if not tables:
        return EMPTY
    if marked:
        return STORE
    raise StorageError("%s is an SQLite database but not a civicedge report store (its tables: %s; no schema_version "
                       "in a meta table); nothing was changed: give [storage] path the gateway's own file"
                       % (path, ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")),
                       reason="not_a_store")


def not_a_database(path: Path, why: str) -> StorageError:
    """The error for a file at ``[storage] path`` that is no SQLite database: ``corrupt`` when a gateway
    has run on that path (its ``.lock`` is beside it: the store itself was damaged), else ``open_failed``
    (maybe another file named by mistake; the message covers both)."""
    ours = _lock_beside(path)
    return StorageError("report store %s is %s a database (%s); nothing was changed. %s"
                        % (path, "no longer" if ours else "not", why, _damaged_advice(path, ours=ours, wal=False)),
                        reason="corrupt" if ours else "open_failed")


def _empty_with_wal(path: Path) -> StorageError:
    """The error for an empty (0-byte) file at ``[storage] path`` with a ``-wal`` that holds pages: ``corrupt``
    when a gateway has run on that path (its store was emptied: a failed copy, a truncation), else
    ``open_failed``."""
    ours = _lock_beside(path)
    return StorageError("report store %s is empty (0 bytes) but %s-wal beside it holds pages; nothing was changed (an "
                        "open would delete that -wal). %s If the -wal is a leftover of another file, move it aside "
                        "and start again." % (path, path.name, _damaged_advice(path, ours=ours, wal=True)),
                        reason="corrupt" if ours else "open_failed")


def damaged(path: Path, exc: sqlite3.Error, *, wal: bool) -> StorageError:
    """The ``corrupt`` error for a database at ``[storage] path`` that SQLite finds damaged."""
    read = " (read together with its %s-wal)" % path.name if wal else ""
    return StorageError("report store %s is damaged: SQLite: %s%s; nothing was changed. %s"
                        % (path, exc, read, _damaged_advice(path, ours=_lock_beside(path), wal=wal)),
                        reason="corrupt")


def _damaged_advice(path: Path, *, ours: bool, wal: bool) -> str:
    """What to do with a damaged file at ``[storage] path``: restore a backup, or start empty knowing
    what that loses; or, when it may be another file named by mistake, name the right one."""
    beside = ("with its %s-wal (it holds commits) and any %s-shm" if wal else "with any %s-wal and %s-shm") % (
        path.name, path.name)
    todo = ("move it aside %s (keep them all: what they hold may still be recovered) and restore the last backup "
            "(docs/gateway.md, Restoring a backup); only without a backup start on an empty store with it moved aside, "
            "which loses every stored report (devices re-send only those they still hold), the replay window (frames "
            "with seqs already stored would be accepted again) and the ACK floors" % beside)
    if ours:
        return "A gateway has run on this path (%s.lock is beside it): this is its report store, damaged: %s." % (
            path.name, todo)
    return ("If this is the gateway's report store (the configured [storage] path it has run on), it is damaged: "
            "%s. If [storage] path names another file by mistake, correct it." % todo)


def _lock_beside(path: Path) -> bool:
    """True when a gateway has run on ``path``: it leaves its ``.lock`` (never removed) beside the file."""
    try:
        return stat.S_ISREG(os.lstat(path.with_name(path.name + ".lock")).st_mode)
    except OSError:
        return False


def _look(path: Path, running: bool) -> tuple[set[str], bool]:
    """The table names of ``path`` and whether it is a report store, read through one
    :func:`open_for_check` connection.

    A report store: ``meta`` records ``schema_version``, or ``reports`` and ``chain`` exist. An SQLite
    error is a StorageError: ``corrupt`` for a damaged database, ``not_a_database``'s for a file that
    is none, ``open_failed`` for anything else (an I/O error, no permission).
    """
    wal = not running and wal_has_content(path)
    try:
        conn = open_for_check(path, running=running)
        try:
            tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if {"reports", "chain"} <= tables:
                return tables, True
            if "meta" not in tables:
                return tables, False
            try:
                return tables, conn.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone() is not None
            except sqlite3.OperationalError as exc:
                if primary_code(exc) != sqlite3.SQLITE_ERROR:
                    raise
                return tables, False  # a meta table of another program, without a key column
        finally:
            conn.close()
    except sqlite3.Error as exc:
        primary = primary_code(exc)
        if primary == sqlite3.SQLITE_NOTADB:
            raise not_a_database(path, 'it does not start with the SQLite header "SQLite format 3"') from exc
        if primary == sqlite3.SQLITE_CORRUPT:
            raise damaged(path, exc, wal=wal) from exc
        raise StorageError("cannot read report store %s: %s (SQLite); nothing was changed: check that the gateway's "
                           "user can read it and its directory, and the system log for disk errors"
                           % (path, exc), reason="open_failed") from exc
