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
from gateway.storage.sqlite_uri import check_uri

# Every SQLite 3 database file starts with these 16 bytes and is at least one page of at least 512
# bytes (https://www.sqlite.org/fileformat.html, 1.3).
SQLITE_HEADER = b"SQLite format 3\x00"
MIN_DATABASE_BYTES = 512

ABSENT = "absent"  # no file: the store creates it
EMPTY = "empty"  # a 0-byte file or a database without tables: the store initialises it
STORE = "store"  # a civicedge report store (any schema version; too new is refused by the schema check)


def store_kind(path: Path, *, running: bool = False) -> str:
    """Say what ``path`` is for a report store: :data:`ABSENT`, :data:`EMPTY` or :data:`STORE`.

    Reads only, and only through SQLite: its size, then its table names through an ``immutable``
    read-only open (no ``-wal``, ``-shm`` or journal is created; SQLite checks the header). A database
    without tables in its main file but with a ``-wal`` that has content (a gateway killed right after
    creating the store) is read again as any reader reads it, since its tables may be in the ``-wal``
    only. ``running`` True (a gateway holds the store) reads it that way at once: its main file
    changes under an immutable read. The URIs are :func:`gateway.storage.sqlite_uri.check_uri`'s, as
    ``run --check`` reads the schema version.

    A report store has a ``meta`` table recording ``schema_version`` (every schema version has one),
    or, from a first start interrupted before that row was written, its ``reports`` and ``chain`` tables.

    Raises:
        StorageError: reason ``open_failed`` when ``path`` is a directory or another non-regular file,
            cannot be read, is not an SQLite database (shorter than one page, or not starting with its
            header) or SQLite cannot read it; ``not_a_store`` when it is a database with tables that is
            not a report store.
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
        return EMPTY
    # The file is not opened here but by SQLite only: closing a descriptor of a database in this process
    # would drop the POSIX locks any SQLite connection of the process holds on it. SQLite checks the
    # header itself (SQLITE_NOTADB), but reads a file shorter than its smallest page as an empty
    # database (and writes one into it): no database is that short.
    if st.st_size < MIN_DATABASE_BYTES:
        raise not_a_database(path, "%d byte(s), shorter than any SQLite database" % st.st_size)
    uri = check_uri(path, running=running, main_file_only=True)
    tables = _tables(path, uri)
    if not tables:
        with_wal = check_uri(path, running=running)
        if with_wal != uri:  # the tables may be in a -wal with content only
            uri = with_wal
            tables = _tables(path, uri)
    if not tables:
        return EMPTY
    if _has_marker(path, tables, uri):
        return STORE
    raise StorageError("%s is an SQLite database but not a civicedge report store (its tables: %s; no schema_version "
                       "in a meta table); nothing was changed: give [storage] path the gateway's own file"
                       % (path, ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")),
                       reason="not_a_store")


def not_a_database(path: Path, why: str) -> StorageError:
    """The ``open_failed`` error for a file at ``[storage] path`` that is no SQLite database."""
    return StorageError("report store %s is not a database (%s); nothing was changed: give [storage] path the "
                        "gateway's report store, or a name where none exists yet (it is created there)" % (path, why),
                        reason="open_failed")


def _read(path: Path, uri: str, sql: str) -> list[tuple[object, ...]]:
    """Rows of ``sql`` on ``path`` opened through ``uri``; an SQLite error is an ``open_failed`` StorageError."""
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            return list(conn.execute(sql).fetchall())
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
            raise not_a_database(path, 'it does not start with the SQLite header "SQLite format 3"') from exc
        raise StorageError("cannot open report store %s: %s (SQLite): it is not a report store, or is damaged; "
                           "move it aside and restore the last backup (docs/gateway.md, Backups), or give "
                           "[storage] path another file" % (path, exc), reason="open_failed") from exc


def _tables(path: Path, uri: str) -> set[str]:
    return {str(r[0]) for r in _read(path, uri, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def _has_marker(path: Path, tables: set[str], uri: str) -> bool:
    """True for a report store: ``meta`` records ``schema_version``, or ``reports`` and ``chain`` exist."""
    if {"reports", "chain"} <= tables:
        return True
    if "meta" not in tables:
        return False
    try:
        rows = _read(path, uri, "SELECT 1 FROM meta WHERE key = 'schema_version'")
    except StorageError:  # a meta table of another program, without a key column
        return False
    return bool(rows)
